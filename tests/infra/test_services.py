"""`ganflow services`: the local S3 server, MLflow and Prefect come up on loopback and go away
on Ctrl-C, SIGTERM or SIGHUP. Slow (the Prefect server takes a while to start)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from infra.s3_server import free_port
from tests.infra.procfs import LOOPBACK_V4, alive, answers, descendants, listening_addresses, wait_until

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 0), (signal.SIGTERM, 143), (signal.SIGHUP, 129)],
                         ids=["ctrl-c", "sigterm", "sighup"])
def test_services_start_and_stop(tmp_path, sig, code):
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
    children: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not all(answers(u) for u in urls.values()):
            assert proc.poll() is None, proc.stderr.read()[-2000:]
            time.sleep(1)
        assert {n: answers(u) for n, u in urls.items()} == {"s3": True, "mlflow": True, "prefect": True}
        assert all(listening_addresses(p) == {LOOPBACK_V4} for p in ports.values())
        children = descendants(proc.pid)
    finally:
        proc.send_signal(sig)
        stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == code, stderr[-2000:]
    assert not any(answers(u) for u in urls.values())  # nothing left listening
    assert wait_until(lambda: not any(alive(p) for p in children), 60), "a server process outlived ganflow"
