"""Bad input ends with one line naming the problem and the fix, a non-zero exit, and nothing registered."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.s3_server import free_port

ROOT = Path(__file__).resolve().parents[2]


def ganflow(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def run_smoke(tmp_path, *sets):
    args = ["run", "--config", str(ROOT / "configs" / "smoke.yaml"), "--set", "data.embedded_server=never",
            "--set", f"registry.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
    for s in sets:
        args += ["--set", s]
    return ganflow(*args, cwd=tmp_path)


def assert_one_line_error(proc, code, *needles):
    assert proc.returncode == code, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ganflow: error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in last
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", ["empty prefix", "missing bucket", "unreachable endpoint"])
def test_bad_sources(case, s3, s3_server, bucket, tmp_path):
    endpoint = s3_server.url if case != "unreachable endpoint" else f"http://127.0.0.1:{free_port()}"
    source = {"empty prefix": f"s3://{bucket}/nothing-here/", "missing bucket": "s3://ganflow-no-such-bucket/x/",
              "unreachable endpoint": f"s3://{bucket}/x/"}[case]
    proc = run_smoke(tmp_path, f"data.source={source}", f"data.endpoint_url={endpoint}")
    needle = {"empty prefix": "no objects under", "missing bucket": "does not exist",
              "unreachable endpoint": "cannot reach the S3 endpoint"}[case]
    assert_one_line_error(proc, 1, needle, "fix" if case != "unreachable endpoint" else "check")
    assert not (tmp_path / "mlflow.db").exists()  # failed before anything could be registered


@pytest.mark.parametrize("override,needle", [
    ("train.stepz=5", "unknown config key 'train.stepz'"),
    ("train.batch_size=zero", "invalid config value for 'train.batch_size'"),
    ("eval.kid_subset_size=5000", "kid_subset_size"),
])
def test_invalid_config(override, needle, tmp_path):
    proc = run_smoke(tmp_path, override)
    assert_one_line_error(proc, 2, needle)
    assert not (tmp_path / "mlflow.db").exists()


def test_wrong_credentials_are_named(tmp_path):
    from infra.s3_server import LocalS3Server
    with LocalS3Server(authenticate=True) as strict:  # rejects the placeholder keys
        proc = run_smoke(tmp_path, "data.source=s3://any-bucket/x/", f"data.endpoint_url={strict.url}")
    assert_one_line_error(proc, 1, "rejected the credentials (InvalidAccessKeyId)", "AWS_ACCESS_KEY_ID")
    assert "ganflow-local" not in proc.stderr  # the key itself is never printed


def test_an_error_inside_the_flow_is_still_one_line_without_traceback(s3, s3_server, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="junk/a.png", Body=b"not a png")
    s3.put_object(Bucket=bucket, Key="junk/b.jpg", Body=b"")
    env_home = tmp_path / "prefect-home"
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(ROOT / "configs" / "smoke.yaml"),
         "--set", "data.embedded_server=never", "--set", f"data.source=s3://{bucket}/junk/",
         "--set", f"data.endpoint_url={s3_server.url}",
         "--set", f"registry.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")},
             "PREFECT_HOME": str(env_home), "PYTHONPATH": str(ROOT)})
    assert_one_line_error(proc, 1, "none of the 2 objects", "is a usable image")
    assert "Finished in state Failed" in proc.stderr  # it did fail inside the Prefect flow
