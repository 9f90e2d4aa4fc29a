"""Bad input ends with one line naming the problem and the fix, a non-zero exit, and nothing registered."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.s3_server import free_port
from tests.helpers import SMOKE_CONFIG, clean_env


@pytest.fixture()
def run_smoke(run_cli, tmp_path):
    def run(*sets, env=None):
        args = ["run", "--config", str(SMOKE_CONFIG), "--set", "data.embedded_server=never",
                "--set", f"registry.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}"]
        for s in sets:
            args += ["--set", s]
        return run_cli(*args, env=env)
    return run


def assert_one_line_error(proc, code, *needles):
    assert proc.returncode == code, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("ganflow: error: "), proc.stderr[-2000:]
    for needle in needles:
        assert needle in last
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("case", ["empty prefix", "missing bucket", "unreachable endpoint"])
def test_bad_sources(case, s3, s3_server, bucket, tmp_path, run_smoke):
    endpoint = s3_server.url if case != "unreachable endpoint" else f"http://127.0.0.1:{free_port()}"
    source = {"empty prefix": f"s3://{bucket}/nothing-here/", "missing bucket": "s3://ganflow-no-such-bucket/x/",
              "unreachable endpoint": f"s3://{bucket}/x/"}[case]
    proc = run_smoke(f"data.source={source}", f"data.endpoint_url={endpoint}")
    needle = {"empty prefix": "no objects under", "missing bucket": "does not exist",
              "unreachable endpoint": "cannot reach the S3 endpoint"}[case]
    assert_one_line_error(proc, 1, needle, "fix" if case != "unreachable endpoint" else "check")
    assert not (tmp_path / "mlflow.db").exists()  # failed before anything could be registered


@pytest.mark.parametrize("override,needle", [
    ("train.stepz=5", "unknown config key 'train.stepz'"),
    ("train.batch_size=zero", "invalid config value for 'train.batch_size'"),
    ("eval.kid_subset_size=5000", "kid_subset_size"),
])
def test_invalid_config(override, needle, tmp_path, run_smoke):
    proc = run_smoke(override)
    assert_one_line_error(proc, 2, needle)
    assert not (tmp_path / "mlflow.db").exists()


def test_wrong_credentials_are_named(tmp_path, run_smoke):
    from infra.s3_server import LocalS3Server
    with LocalS3Server(authenticate=True) as strict:  # rejects the placeholder keys
        proc = run_smoke("data.source=s3://any-bucket/x/", f"data.endpoint_url={strict.url}")
    assert_one_line_error(proc, 1, "rejected the credentials (InvalidAccessKeyId)", "AWS_ACCESS_KEY_ID")
    assert "ganflow-local" not in proc.stderr  # the key itself is never printed


def test_an_error_inside_the_flow_is_still_one_line_without_traceback(s3, s3_server, bucket, tmp_path,
                                                                      run_smoke):
    s3.put_object(Bucket=bucket, Key="junk/a.png", Body=b"not a png")
    s3.put_object(Bucket=bucket, Key="junk/b.jpg", Body=b"")
    proc = run_smoke(f"data.source=s3://{bucket}/junk/", f"data.endpoint_url={s3_server.url}",
                     env={**{k: None for k in os.environ if k.startswith("PREFECT_")},
                          "PREFECT_HOME": str(tmp_path / "prefect-home")})
    assert_one_line_error(proc, 1, "none of the 2 objects", "is a usable image")
    assert "Finished in state Failed" in proc.stderr  # it did fail inside the Prefect flow


def test_fid_command_between_two_folders(tmp_path, run_cli):
    from PIL import Image

    from tests.helpers import digits
    imgs = digits(24, size=32)
    for name, part in (("a", imgs[:12]), ("b", imgs[12:])):
        (tmp_path / name).mkdir()
        for i, img in enumerate(part):
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
    (tmp_path / "b" / "notes.txt").write_text("not an image: ignored")
    proc = run_cli("fid", str(tmp_path / "a"), str(tmp_path / "b"), "--weights", "random", "--batch-size", "12",
                   "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = __import__("json").loads(proc.stdout)
    assert result["n_generated"] == result["n_reference"] == 12 and result["weights"] == "random"
    assert result["fid"] > 0 and len(result["weights_sha256"]) == 64
    missing = run_cli("fid", str(tmp_path / "a"), str(tmp_path / "nope"), "--weights", "random")
    assert_one_line_error(missing, 2, "does not exist")

    # Reference statistics saved once and reused, under the same (fixed) weights file; 4 images a
    # side keep it to a few seconds of Inception on a CPU.
    from gan_model.errors import UsageError
    from gan_model.inception import InceptionFeatures, make_random_weights, sha256_file
    from tasks.evaluate import fid_between_folders
    for name, part in (("a4", imgs[:4]), ("b4", imgs[12:16])):
        (tmp_path / name).mkdir()
        for i, img in enumerate(part):
            Image.fromarray(img).save(tmp_path / name / f"{i}.png")
    net = InceptionFeatures(make_random_weights(tmp_path / "random.pth"), batch_size=4)
    net.calibrate_batchnorm([imgs[16:20, None]])
    weights = str(net.save_weights(tmp_path / "fixed.pth"))
    sha = sha256_file(weights)
    direct = fid_between_folders(tmp_path / "a4", tmp_path / "b4", weights, 4, weights_sha256=sha,
                                 save_stats=tmp_path / "ref.npz")
    reused = fid_between_folders(tmp_path / "a4", None, weights, 4, weights_sha256=sha, stats=tmp_path / "ref.npz")
    assert reused["fid"] == pytest.approx(direct["fid"], rel=1e-9) and reused["n_reference"] == 4
    with pytest.raises(UsageError, match="need fixed Inception weights"):
        fid_between_folders(tmp_path / "a4", None, "random", 4, stats=tmp_path / "ref.npz")


@pytest.mark.slow
def test_ctrl_c_stops_the_ray_workers(tmp_path):
    """Ctrl-C in a terminal mid-training (SIGINT to the whole foreground process group, Prefect's
    temporary API server included) ends `ganflow run` promptly with status 130, retries nothing,
    and leaves no Ray worker behind."""
    import signal
    import time

    from tests.helpers import digits  # noqa: F401  (the embedded server seeds scikit-learn digits)
    from tests.infra.procfs import descendants

    def ray_workers() -> set[str]:
        pids = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True).stdout.split()
        alive = set()
        for pid in pids:
            try:  # a zombie has exited already
                if Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z":
                    alive.add(pid)
            except (OSError, IndexError):
                pass
        return alive

    before = ray_workers()  # other Ray sessions on this machine are not ours to judge
    env = clean_env(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(SMOKE_CONFIG),
         "--set", "train.steps=100000", "--set", "train.log_every=10"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its own process group, as a terminal's foreground job has
    try:
        deadline, seen = time.monotonic() + 600, ""  # a slow first start: Prefect alone may take 180 s
        while time.monotonic() < deadline and "[ganflow] step" not in seen:
            seen += proc.stdout.readline()
        assert "[ganflow] step" in seen, seen[-2000:]
        # This run's workers: another test's run may be training beside it.
        workers = {pid for pid in ray_workers() - before if int(pid) in descendants(proc.pid)}
        assert workers  # training is running in Ray worker processes
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does
        rest = proc.communicate(timeout=120)[0]
        assert proc.returncode == 130, rest[-2000:]
        assert "ganflow: interrupted" in rest and "Retry" not in rest, rest[-2000:]
    finally:
        if proc.poll() is None:  # a failed test must not leave the run behind
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    deadline = time.monotonic() + 60  # Ray's own shutdown is asynchronous
    while time.monotonic() < deadline and workers & ray_workers():
        time.sleep(0.5)
    assert workers & ray_workers() == set()
