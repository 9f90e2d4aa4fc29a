"""The README's commands, run as a user would: `ganflow run` with nothing configured uses the
embedded S3 server, seeds it with a real data set and prints one JSON object."""

import json
import re
from pathlib import Path


from tests.helpers import ROOT, SMOKE_CONFIG

README = (ROOT / "README.md").read_text()


def test_readme_documents_the_two_commands_and_every_config_key():
    assert "make run" in README and "make test" in README
    from gan_model.config import GanflowConfig, flat_params
    missing = [k for k in flat_params(GanflowConfig()) if f"`{k}`" not in README]
    assert missing == []


def test_smoke_command_from_the_readme(tmp_path, run_cli):
    command = re.search(r"^(ganflow run --config configs/smoke\.yaml --json)$", README, re.M)
    assert command, "the README shows the smoke command"
    args = command.group(1).split()[1:]
    args[args.index("configs/smoke.yaml")] = str(SMOKE_CONFIG)
    # A new user: no ~/.aws (the embedded default applies), no Prefect, MLflow or Ray settings.
    proc = run_cli(*args, new_user=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)  # exactly one JSON object: anything else would fail to parse
    for key in ("dataset_version", "n_images", "fid", "model_name", "model_version", "alias",
                "mlflow_run_id", "flow_run_id", "sample_grid"):
        assert key in result
    assert result["n_images"] == 256 and result["alias"] == "champion"
    assert Path(result["sample_grid"]).is_file()
    assert (tmp_path / ".ganflow" / "mlflow.db").is_file() and (tmp_path / ".ganflow" / "prefect").is_dir()
