"""`ganflow services`: the local S3 server, MLflow and Prefect come up on loopback and go away
on Ctrl-C. Slow (the Prefect server takes a while to start)."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from infra.s3_server import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2).close()
        return True
    except Exception:
        return False


def test_services_start_and_stop(tmp_path):
    ports = {name: free_port() for name in ("s3", "mlflow", "prefect")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(ROOT), PREFECT_HOME=str(tmp_path / "prefect"),
               PATH=f"{Path(sys.executable).parent}:{env.get('PATH', '')}")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "services", "--s3-port", str(ports["s3"]),
                             "--mlflow-port", str(ports["mlflow"]), "--prefect-port", str(ports["prefect"])],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    urls = {"s3": f"http://127.0.0.1:{ports['s3']}/moto-api/",
            "mlflow": f"http://127.0.0.1:{ports['mlflow']}/health",
            "prefect": f"http://127.0.0.1:{ports['prefect']}/api/health"}
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all(answers(u) for u in urls.values()):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(1)
        assert {n: answers(u) for n, u in urls.items()} == {"s3": True, "mlflow": True, "prefect": True}
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(answers(u) for u in urls.values()):
        time.sleep(1)
    assert not any(answers(u) for u in urls.values())  # nothing left listening
