"""The README's commands, run as a user would: `ganflow run` with nothing configured uses the
embedded S3 server, seeds it with a real data set and prints one JSON object."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, SMOKE_CONFIG

README = (ROOT / "README.md").read_text()


def test_readme_documents_the_two_commands_and_every_config_key():
    assert "make run" in README and "make test" in README
    from gan_model.config import GanflowConfig, flat_params
    missing = [k for k in flat_params(GanflowConfig()) if f"`{k}`" not in README]
    assert missing == []


@pytest.mark.timeout(960)
def test_smoke_command_from_the_readme_on_a_busy_machine(tmp_path, run_cli):
    """A new user's first run: nothing configured (no ~/.aws, so the embedded default applies; no
    Prefect, MLflow or Ray settings), a fresh Prefect database, and both CPUs busy while the local
    Prefect server starts and migrates it. With the 20 s start-up budget of Prefect's own temporary
    server that failed at random ("Timed out while attempting to connect to ephemeral Prefect API
    server"); ganflow's local server waits up to 180 s."""
    command = re.search(r"^(ganflow run --config configs/smoke\.yaml --json)$", README, re.M)
    assert command, "the README shows the smoke command"
    args = command.group(1).split()[1:]
    args[args.index("configs/smoke.yaml")] = str(SMOKE_CONFIG)
    # Two CPU burners for the first 90 s: the window in which the API server starts.
    burn = "import time\nt = time.time()\nwhile time.time() - t < 90: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    try:
        proc = run_cli(*args, new_user=True, timeout=840)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Warning" not in proc.stderr, proc.stderr[-3000:]  # e.g. Prefect's "Failed to create the Prefect home"
    result = json.loads(proc.stdout)  # exactly one JSON object: anything else would fail to parse
    for key in ("dataset_version", "n_images", "fid", "model_name", "model_version", "alias",
                "mlflow_run_id", "flow_run_id", "sample_grid"):
        assert key in result
    assert result["n_images"] == 256 and result["alias"] == "champion"
    assert Path(result["sample_grid"]).is_file()
    assert (tmp_path / ".ganflow" / "mlflow.db").is_file() and (tmp_path / ".ganflow" / "prefect").is_dir()
