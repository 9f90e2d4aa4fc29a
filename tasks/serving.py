"""`ganflow serve-model`: a registered generator over HTTP, through MLflow's own model server.

It is `mlflow models serve -m MODEL --env-manager local` with ganflow's tracking URI (credentials
stay in MLFLOW_TRACKING_USERNAME/PASSWORD) and loopback as the default host. Serving runs the
model's pyfunc code from the registry (tasks/pyfunc_generator.py as it was logged), so it is
something an operator chooses for a registry they trust; `ganflow sample` never runs that code.
"""

from __future__ import annotations

import logging
import os
import sys

from gan_model.config import RegistryConfig
from gan_model.errors import UsageError

log = logging.getLogger("ganflow.serving")


def serve_command(model_uri: str, host: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", host, "-p", str(port), "-w", str(workers)]


def curl_example(host: str, port: int) -> str:
    return (f"curl -s http://{host}:{port}/invocations -H 'Content-Type: application/json' "
            """-d '{"dataframe_records": [{"seed": 0}, {"seed": 1}], "params": {"format": "png"}}'""")


def serve_model(model_uri: str, host: str = "127.0.0.1", port: int = 5001, workers: int = 1,
                registry: RegistryConfig | None = None) -> None:
    """Replace this process with MLflow's model server for `model_uri` (checked first), until it
    is stopped (Ctrl-C, SIGTERM)."""
    from tasks.registry import mlflow_client, model_version

    if not 0 < port < 65536:
        raise UsageError(f"--port {port}: use a TCP port between 1 and 65535")
    client, _, uri = mlflow_client(registry or RegistryConfig())
    mv = model_version(client, model_uri, uri)
    # MLflow starts `uvicorn` by name: this environment's bin/ first, even when it is not activated.
    bindir = os.path.dirname(sys.executable)
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, PATH=os.pathsep.join([bindir, os.environ.get("PATH", "")]))
    log.info("serving %s (v%s) on http://%s:%d; try:\n  %s", model_uri, mv.version, host, port,
             curl_example(host, port))
    sys.stdout.flush()
    sys.stderr.flush()
    # exec: signals reach the server directly, and nothing of ganflow stays behind it.
    os.execve(sys.executable, serve_command(model_uri, host, port, workers), env)
