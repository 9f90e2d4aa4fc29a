"""`ganflow services`: the local S3 server, the MLflow UI and the Prefect UI, for development."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from flows.environment import STATE


def run_services(s3_port: int = 9000, mlflow_port: int = 5000, prefect_port: int = 4200) -> None:
    from infra.s3_server import LocalS3Server

    STATE.mkdir(exist_ok=True)
    db = (STATE / "mlflow.db").resolve()
    artifacts = (STATE / "mlartifacts").resolve()
    bindir = Path(sys.executable).parent
    procs: list[subprocess.Popen] = []
    s3 = LocalS3Server(port=s3_port, log_path=str(STATE / "s3-server.log")).start()
    try:
        procs.append(subprocess.Popen(
            [shutil.which("mlflow", path=str(bindir)) or "mlflow", "server", "--host", "127.0.0.1",
             "--port", str(mlflow_port), "--backend-store-uri", f"sqlite:///{db}",
             "--default-artifact-root", artifacts.as_uri()], start_new_session=True))
        env = dict(os.environ, PREFECT_SERVER_API_PORT=str(prefect_port))
        procs.append(subprocess.Popen(
            [shutil.which("prefect", path=str(bindir)) or "prefect", "server", "start", "--host", "127.0.0.1",
             "--port", str(prefect_port)], env=env, start_new_session=True))
        print(f"""
ganflow services are starting (Ctrl-C stops them all):
  S3-compatible  {s3.url}   (embedded placeholder credentials; seed with `ganflow ingest`)
  MLflow UI      http://127.0.0.1:{mlflow_port}
  Prefect UI     http://127.0.0.1:{prefect_port}

Point ganflow at them from another shell:
  export MLFLOW_TRACKING_URI=http://127.0.0.1:{mlflow_port}
  export PREFECT_API_URL=http://127.0.0.1:{prefect_port}/api
""", file=sys.stderr, flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(1)
        raise SystemExit("a service exited; see its output above")
    except KeyboardInterrupt:
        pass
    finally:
        # Each server runs in its own process group (their workers included).
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        s3.stop()
