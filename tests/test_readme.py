"""The README's commands, run as a user would: `ganflow run` with nothing configured uses the
embedded S3 server, seeds it with a real data set and prints one JSON object."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, SMOKE_CONFIG, clean_env, start_cli

README = (ROOT / "README.md").read_text()


def test_readme_documents_the_two_commands_and_every_config_key():
    assert "make run" in README and "make test" in README
    from gan_model.config import GanflowConfig, flat_params
    missing = [k for k in flat_params(GanflowConfig()) if f"`{k}`" not in README]
    assert missing == []


@pytest.mark.slow
@pytest.mark.alone  # its CPU burners would slow whatever ran beside it
@pytest.mark.timeout(960)
def test_smoke_command_from_the_readme_on_a_busy_machine(tmp_path):
    """A new user's first run: nothing configured (no ~/.aws, so the embedded default applies; no
    Prefect, MLflow or Ray settings), a fresh Prefect database, and both CPUs busy while the local
    Prefect server starts and migrates it. With the 20 s start-up budget of Prefect's own temporary
    server that failed at random ("Timed out while attempting to connect to ephemeral Prefect API
    server"); ganflow's local server waits up to 180 s."""
    command = re.search(r"^(ganflow run --config configs/smoke\.yaml --json)$", README, re.M)
    assert command, "the README shows the smoke command"
    args = command.group(1).split()[1:]
    args[args.index("configs/smoke.yaml")] = str(SMOKE_CONFIG)
    # Two CPU burners from the start until the run says its Prefect API is up (at most 180 s):
    # exactly the window in which the server starts and migrates its database.
    burn = "import time\nt = time.time()\nwhile time.time() - t < 180: pass"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    proc, stderr, api_up, reader = start_cli(args, tmp_path, clean_env(tmp_path), "Prefect API: ", stdout=subprocess.PIPE)
    try:
        api_up.wait(180)
        for burner in burners:
            burner.kill()
        stdout = proc.stdout.read()  # to the end of the run (pytest's timeout bounds it)
        proc.wait()
        reader.join(10)
    finally:
        for p in (*burners, proc):
            p.kill()
            p.wait()
    err = "".join(stderr)
    assert api_up.is_set(), err[-3000:]  # the API came up while both CPUs were busy
    assert proc.returncode == 0, err[-3000:]
    assert "Warning" not in err, err[-3000:]  # e.g. Prefect's "Failed to create the Prefect home"
    result = json.loads(stdout)  # exactly one JSON object: anything else would fail to parse
    for key in ("dataset_version", "n_images", "fid", "model_name", "model_version", "alias",
                "mlflow_run_id", "flow_run_id", "sample_grid"):
        assert key in result
    assert result["n_images"] == 256 and result["alias"] == "champion"
    assert Path(result["sample_grid"]).is_file()
    assert (tmp_path / ".ganflow" / "mlflow.db").is_file() and (tmp_path / ".ganflow" / "prefect").is_dir()
