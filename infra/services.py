"""`ganflow services`: the local S3 server, the MLflow UI and the Prefect UI, for development."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from infra.mlflow_server import MlflowServer
from infra.prefect_server import PrefectServer
from infra.process import LocalService
from infra.s3_server import LocalS3Server

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def run_services(state: Path = Path(".ganflow"), s3_port: int = 9000, mlflow_port: int = 5000,
                 prefect_port: int = 4200, prefect_home: Path | None = None) -> None:
    """Run the three servers until Ctrl-C, SIGTERM or SIGHUP, or until one of them exits.

    MLflow keeps its runs in `state`/mlflow.db; Prefect uses `prefect_home` (default:
    $PREFECT_HOME, else `state`/prefect, where `ganflow run` keeps its runs). Each server's
    output goes to a log file in `state`.
    """
    state = Path(state)
    state.mkdir(parents=True, exist_ok=True)
    prefect_home = prefect_home or Path(os.environ.get("PREFECT_HOME") or state / "prefect")
    services: list[LocalService] = [
        LocalS3Server(port=s3_port, log_path=str(state / "s3-server.log")),
        MlflowServer(f"sqlite:///{(state / 'mlflow.db').resolve()}", (state / "mlartifacts").resolve().as_uri(),
                     port=mlflow_port, log_path=state / "mlflow-server.log"),
        PrefectServer(port=prefect_port, prefect_home=Path(prefect_home).resolve(),
                      log_path=state / "prefect-server.log"),
    ]
    s3, mlflow, prefect = services
    with _signals_exit():
        try:
            print("ganflow services are starting (Ctrl-C stops them all) ...", file=sys.stderr, flush=True)
            for service in services:  # start all three at once, then wait for each
                service.launch()
            for service in services:
                service.wait_ready()
            print(f"""
ganflow services are up (Ctrl-C stops them all):
  S3-compatible  {s3.url}   (embedded placeholder credentials; seed with `ganflow ingest`)
  MLflow UI      {mlflow.url}
  Prefect UI     {prefect.url}
Logs: {s3.log_path}, {mlflow.log_path}, {prefect.log_path}

Point ganflow at them from another shell:
  export MLFLOW_TRACKING_URI={mlflow.tracking_uri}
  export PREFECT_API_URL={prefect.api_url}
""", file=sys.stderr, flush=True)
            while all(s.running for s in services):
                time.sleep(0.5)
            dead = next(s for s in services if not s.running)
            raise SystemExit(f"the {dead.name} exited with code {dead.returncode}; see {dead.log_path}")
        except KeyboardInterrupt:
            pass
        finally:
            _stop_all(services)


def _stop_all(services: list[LocalService], timeout: float = 15.0) -> None:
    """SIGTERM to every server at once, SIGKILL to what is left after `timeout` seconds.
    Ctrl-C, SIGTERM and SIGHUP are ignored meanwhile so that the clean-up runs to its end."""
    blocked = {}
    if threading.current_thread() is threading.main_thread():
        blocked = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, *_STOP_SIGNALS)}
    try:
        for service in services:
            service.terminate()
        deadline = time.monotonic() + timeout
        for service in services:
            service.stop(timeout=max(0.1, deadline - time.monotonic()))
    finally:
        _restore(blocked)


@contextlib.contextmanager
def _signals_exit() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) unwind like Ctrl-C: exit 128 + the signal."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        yield
        return

    def exit_on(signum, _frame):
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, exit_on) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        _restore(previous)


def _restore(handlers: dict) -> None:
    for sig, handler in handlers.items():
        signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
