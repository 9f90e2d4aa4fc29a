"""A new user's first run: fresh folder, fresh Prefect database, nothing configured, and both
CPUs of a small machine busy. Prefect's ephemeral API server migrates its database on this first
start; with Prefect's default 20 s start-up budget that failed at random
("Timed out while attempting to connect to ephemeral Prefect API server")."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(960)
def test_first_smoke_run_on_a_busy_machine(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_", "MLFLOW_", "RAY_ADDRESS"))}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))  # PREFECT_HOME: the fresh .ganflow/prefect
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", "--config",
                                 str(ROOT / "configs" / "smoke.yaml"), "--json"],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stdout, stderr = proc.communicate(timeout=840)
        except subprocess.TimeoutExpired:
            proc.terminate()  # unwinds like Ctrl-C: Prefect's temporary server and Ray stop too
            stdout, stderr = proc.communicate(timeout=60)
            pytest.fail(f"the first run did not finish in 14 minutes: {stderr[-3000:]}")
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert proc.returncode == 0, stderr[-3000:]
    assert json.loads(stdout)["n_images"] == 256  # exactly one JSON object on stdout
    assert (tmp_path / ".ganflow" / "prefect").is_dir()
