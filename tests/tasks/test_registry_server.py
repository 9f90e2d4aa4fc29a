"""The registry against a real MLflow tracking server (one per module): SQLite backend, artifacts
in the local S3 server's bucket, served through the tracking server. Register, promote, roll
back, list, sample and serve all go through it; so does one whole pipeline run, with a password
in MLFLOW_TRACKING_URI and AWS keys in the environment, after which every store is searched
for them."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gan_model.config import build_config
from tests.helpers import ROOT, SMOKE_CONFIG, digits, fake_generator, register_fake, upload_images

pytestmark = pytest.mark.slow

PASSWORD = "pw-Zq8vLx3mT"  # what must never show up
AWS_KEY_ID, AWS_SECRET = "AKIAGANFLOWLEAKTEST7", "aws-secret-Hn4kWq9rPz"


@pytest.fixture()
def tracking(mlflow_server, monkeypatch, tmp_path):
    """The module's server as MLFLOW_TRACKING_URI, a fresh model name, and a client."""
    from mlflow import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.chdir(tmp_path)
    name = f"gen-{tmp_path.name[-24:]}".replace("_", "-")
    cfg = build_config({}, ["data.resolution=16", "model.z_dim=8", "registry.experiment=server-tests",
                            f"registry.model_name={name}", f"eval.output_dir={tmp_path / 'eval'}"])
    return cfg, name, MlflowClient(mlflow_server.url, mlflow_server.url)


def champion(client, name):
    return str(client.get_model_version_by_alias(name, "champion").version)


def test_promotion_policy_rollback_and_listing(tracking, tmp_path, capsys):
    from flows.cli import main

    cfg, name, client = tracking
    assert register_fake(cfg, tmp_path, 10.0, seed=1).alias == "champion"  # v1: no champion yet
    better = register_fake(cfg, tmp_path, 5.0, seed=2)
    assert (better.model_version, better.alias) == ("2", "champion") and "beats champion v1" in better.reason
    worse = register_fake(cfg, tmp_path, 7.0, seed=3)
    assert worse.alias == "challenger" and "does not beat champion v2" in worse.reason
    other = register_fake(cfg, tmp_path, 0.1, seed=4, key="P2")  # far lower, but another protocol
    assert other.alias == "challenger" and "not comparable" in other.reason
    assert f"ganflow evaluate --model models:/{name}/2 --protocol-of models:/{name}/4" in other.reason
    strict = cfg.model_copy(deep=True)
    strict.registry.min_improvement = 0.5
    small_gain = register_fake(strict, tmp_path, 4.0, seed=5)  # 20% better, 50% required
    assert small_gain.alias == "challenger" and "min_improvement" in small_gain.reason
    assert champion(client, name) == "2"
    decision = client.get_model_version(name, "5").tags["ganflow.decision"]
    assert decision == small_gain.reason

    # Rollback: @champion goes back to v1, the decision is recorded, and registering v2 again
    # (a retry or a later scheduled run of the same training) leaves it there.
    assert main(["promote", name, "--rollback", "--json"]) == 0
    rolled = json.loads(capsys.readouterr().out)
    assert rolled == {"model_name": name, "model_version": "1", "alias": "champion", "rolled_back": "2"}
    assert champion(client, name) == "1"
    assert "rolled back by hand" in client.get_model_version(name, "2").tags["ganflow.decision"]
    again = register_fake(cfg, tmp_path, 5.0, seed=2)
    assert again.model_version == "2" and champion(client, name) == "1"
    assert main(["promote", name, "--rollback"]) == 2  # v1 was the first champion: a usage error
    assert "first @champion on record" in capsys.readouterr().err

    assert main(["promote", name, "3", "--alias", "champion"]) == 0
    assert champion(client, name) == "3" and capsys.readouterr().out.strip() == f"{name} v3 -> @champion"
    assert main(["models", name, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["versions"]
    assert [v["version"] for v in listed] == ["5", "4", "3", "2", "1"]
    assert listed[2]["aliases"] == ["champion"] and listed[1]["protocol_key"] == "P2"
    assert listed[4]["fid"] == 10.0 and listed[0]["dataset_version"] == "dsv1" and listed[0]["created"]
    assert main(["models", name]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["VERSION", "ALIASES", "FID"] and "@champion" in table[3]


def test_a_failure_between_version_and_alias_is_finished_by_the_retry(tracking, tmp_path, monkeypatch):
    import mlflow

    import tasks.registry
    from gan_model.errors import TransientError

    cfg, name, client = tracking
    register_fake(cfg, tmp_path, 10.0, seed=1)
    real_set_alias, real_register = tasks.registry.set_alias, mlflow.register_model

    def outage(*args, **kwargs):
        raise TransientError("injected: the registry went away")

    # 1. Between logging the model and creating the version.
    monkeypatch.setattr(mlflow, "register_model", outage)
    with pytest.raises(TransientError):
        register_fake(cfg, tmp_path, 5.0, seed=2)
    assert len(client.search_model_versions(f"name='{name}'")) == 1
    # 2. Between creating the version (and deciding) and moving the alias.
    monkeypatch.setattr(mlflow, "register_model", real_register)
    monkeypatch.setattr(tasks.registry, "set_alias", outage)
    with pytest.raises(TransientError):
        register_fake(cfg, tmp_path, 5.0, seed=2)
    pending = client.get_model_version(name, "2")
    assert champion(client, name) == "1" and "ganflow.decision" not in pending.tags  # consistent: undecided

    # The retry: the same logged model and version, the decision applied once.
    monkeypatch.setattr(tasks.registry, "set_alias", real_set_alias)
    retried = register_fake(cfg, tmp_path, 5.0, seed=2)
    assert (retried.model_version, retried.alias) == ("2", "champion")
    assert len(client.search_model_versions(f"name='{name}'")) == 2 and champion(client, name) == "2"
    run_models = client.search_logged_models([client.get_run(retried.mlflow_run_id).info.experiment_id],
                                             filter_string=f"source_run_id = '{retried.mlflow_run_id}'")
    assert len(run_models) == 1


def test_sampling_is_deterministic_and_runs_no_registry_code(tracking, tmp_path):
    import mlflow
    from mlflow.pyfunc import PythonModel

    from tasks.sample import sample_images

    cfg, name, _ = tracking
    register_fake(cfg, tmp_path, 10.0, seed=1)
    uri = f"models:/{name}@champion"
    a = sample_images(uri, 9, tmp_path / "a.png", seed=3)
    sample_images(uri, 9, tmp_path / "b.png", seed=3)
    assert a["model_version"] == "1" and (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    sample_images(uri, 4, tmp_path / "t1", seed=3, truncation=0.5)
    sample_images(uri, 4, tmp_path / "t2", seed=3, truncation=0.5)
    sample_images(uri, 4, tmp_path / "plain", seed=3)
    t1, t2, plain = (np.asarray(Image.open(tmp_path / d / "seed000004.png")) for d in ("t1", "t2", "plain"))
    assert (t1 == t2).all() and not (t1 == plain).all()
    from gan_model.sampling import latents_for_seeds
    np.save(tmp_path / "z.npy", latents_for_seeds(range(3, 7), 8).numpy())
    sample_images(uri, None, tmp_path / "fromz", z_file=tmp_path / "z.npy")
    assert (np.asarray(Image.open(tmp_path / "fromz" / "z000001.png")) == plain).all()  # z of seed 4 = seed 4
    gif = sample_images(uri, 4, tmp_path / "walk.gif", seed=3)
    assert Image.open(tmp_path / "walk.gif").n_frames == gif["frames"] == 64
    sample_images(uri, 4, tmp_path / "walk.mp4", seed=3)
    assert (tmp_path / "walk.mp4").read_bytes()[4:8] == b"ftyp"
    texture = sample_images(uri, None, tmp_path / "texture.png", seed=4, texture_scale=3)  # one seed, 3x the side
    assert texture["size"] == 48 and np.asarray(Image.open(tmp_path / "texture.png")).shape == (48, 48)
    small = sample_images(uri, None, tmp_path / "one.png", seed=4, texture_scale=1)
    assert (np.asarray(Image.open(tmp_path / "one.png")) == plain).all() and small["n"] == 1  # scale 1 = seed 4

    # A planted model whose Python code writes a file when loaded: sampling uses its weights only.
    marker = tmp_path / "registry-code-ran"

    class Planted(PythonModel):
        def load_context(self, context):
            Path(os.environ["GANFLOW_PLANTED_MARKER"]).write_text("registry code ran")

        def predict(self, context, model_input, params=None):
            return model_input

    os.environ["GANFLOW_PLANTED_MARKER"] = str(marker)
    try:
        mlflow.set_experiment("server-tests")
        with mlflow.start_run():
            info = mlflow.pyfunc.log_model(name="generator", python_model=Planted(), artifacts={
                "generator": str(fake_generator(tmp_path / "planted" / "generator.pt", 7))})
        planted = mlflow.register_model(info.model_uri, f"{name}-planted")
        marker.unlink(missing_ok=True)  # logging may load the model (requirement inference)
        result = sample_images(f"models:/{name}-planted/{planted.version}", 4, tmp_path / "planted.png")
        assert result["images"] == 4 and not marker.exists()
        mlflow.pyfunc.load_model(f"models:/{name}-planted/{planted.version}")  # the control: it does run
        assert marker.exists()
    finally:
        os.environ.pop("GANFLOW_PLANTED_MARKER")


def test_the_served_champion_answers_http_with_the_sampled_images(tracking, tmp_path):
    from infra.process import free_port
    from tasks.sample import sample_images

    cfg, name, _ = tracking
    register_fake(cfg, tmp_path, 10.0, seed=1)
    port = free_port()
    started = time.monotonic()
    server = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "serve-model", "--model", f"models:/{name}@champion", "--port", str(port)],
        env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL, stderr=open(tmp_path / "serve.log", "w"),
        start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            assert time.monotonic() - started < 180, "the model server did not answer within 180 s"
            try:
                urllib.request.urlopen(url + "/ping", timeout=2).close()
                break
            except (urllib.error.URLError, OSError):
                time.sleep(0.5)
        ready_s = time.monotonic() - started

        def invoke(body: dict):
            request = urllib.request.Request(url + "/invocations", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            t = time.monotonic()
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["predictions"], time.monotonic() - t

        arrays, latency = invoke({"dataframe_records": [{"seed": 3}, {"seed": 4}]})
        pngs, _ = invoke({"dataframe_records": [{"seed": 3}, {"seed": 4}], "params": {"format": "png"}})
        z = np.random.default_rng(0).standard_normal((2, 8)).round(6).tolist()
        from_z, _ = invoke({"dataframe_records": [{"z": v} for v in z], "params": {"truncation": 0.5}})
        print(f"\nserve-model: ready {ready_s:.1f} s after start; 2 images in {latency * 1000:.0f} ms")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)

    arrays = np.asarray(arrays, dtype=np.uint8)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(base64.b64decode(p)))) for p in pngs])
    assert arrays.shape == (2, 16, 16, 1) and decoded.shape == (2, 16, 16)
    sample_images(f"models:/{name}@champion", 2, tmp_path / "sampled", seed=3)
    sampled = np.stack([np.asarray(Image.open(tmp_path / "sampled" / f"seed{s:06d}.png")) for s in (3, 4)])
    assert (decoded == sampled).all() and (arrays[..., 0] == sampled).all()  # the same image for a seed
    assert np.asarray(from_z).shape == (2, 16, 16, 1)


def test_a_pipeline_run_through_the_server_leaks_no_secret(mlflow_server, s3, s3_server, bucket, tmp_path, run_cli):
    from mlflow import MlflowClient

    upload_images(s3, bucket, "digits/", digits(64, size=16))
    # A champion evaluated under another protocol, which the run re-evaluates under its own.
    register_fake(build_config({}, ["data.resolution=16", "model.z_dim=8", "registry.model_name=leak-test",
                                    f"registry.tracking_uri={mlflow_server.url}"]), tmp_path / "fake", 50.0)
    host = mlflow_server.url.removeprefix("http://")
    proc = run_cli(
        "run", "--config", str(SMOKE_CONFIG), "--json", "--set", f"data.source=s3://{bucket}/digits/",
        "--set", f"data.endpoint_url={s3_server.url}", "--set", "data.embedded_server=never",
        "--set", "data.max_images=64", "--set", "registry.model_name=leak-test",
        "--set", "registry.reevaluate_champion=true",
        "--set", "eval.num_workers=2",  # the smoke run's 32 images would stay on the driver
        env={"MLFLOW_TRACKING_URI": f"http://ganflow:{PASSWORD}@{host}", "AWS_ACCESS_KEY_ID": AWS_KEY_ID,
             "AWS_SECRET_ACCESS_KEY": AWS_SECRET, "PREFECT_HOME": str(tmp_path / "prefect"),
             "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert (result["model_name"], result["model_version"]) == ("leak-test", "2")
    assert result["tracking_uri"] == mlflow_server.url
    assert "re-evaluated under this protocol" in result["decision"], result["decision"]
    assert "generated statistics from 2 Ray workers" in proc.stderr  # the pipeline's distributed evaluation
    # What Ray relays from its processes is ganflow's progress, each line once (Ray Train's workers
    # print twice), without Ray Train's per-report lines or its warnings about the absent state API.
    assert proc.stderr.count("[ganflow] step 20/20 ") == 1, proc.stderr[-3000:]
    for noise in ("Reporting training result", "PreemptionWatcher", "Failed to query Ray Train Controller"):
        assert noise not in proc.stderr, proc.stderr[-3000:]

    # The run: opened before training, metrics as rank 0 reported them, a grid per checkpoint,
    # system metrics, the data set as an input, the ingest report, FID linked to the logged model.
    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    run = client.get_run(result["mlflow_run_id"])
    history = client.get_metric_history(run.info.run_id, "train/loss_d")
    assert [m.step for m in history] == [5, 10, 15, 20]
    stamps = [m.timestamp for m in history]
    assert stamps == sorted(stamps) and stamps[-1] - stamps[0] > 0 and stamps[0] >= run.info.start_time
    grids = [f.path for f in client.list_artifacts(run.info.run_id, "images")]
    assert any("samples+step+10+" in p for p in grids) and any("samples+step+20+" in p for p in grids), grids
    assert any(k.startswith("system/") for k in run.data.metrics)
    assert run.inputs.dataset_inputs[0].dataset.digest == result["dataset_version"]
    report = json.loads(Path(client.download_artifacts(run.info.run_id, "ingest/report.json", str(tmp_path))).read_text())
    assert report["n_images"] == 64 and report["skipped_files"] == []
    version = client.get_model_version("leak-test", "2")
    model = client.get_logged_model(version.tags["ganflow.model_id"])
    assert {m.key for m in model.metrics} >= {"fid", "kid"} and model.tags["ganflow.protocol_key"]
    assert version.tags["ganflow.dataset_version"] == result["dataset_version"]
    key = version.tags["ganflow.protocol_key"]
    assert f"ganflow.fid.{key}" in client.get_model_version("leak-test", "1").tags  # the re-evaluation, kept
    stored = [o["Key"] for o in s3.list_objects_v2(Bucket=mlflow_server.bucket)["Contents"]]
    assert any(k.endswith("generator.pt") for k in stored)  # the artifacts went to S3 via the server

    # No secret anywhere: output, MLflow's database and artifact objects, its log, Prefect's
    # database (flow parameters, task results, artifacts, logs), and every file the run wrote.
    haystacks = {"stdout": proc.stdout.encode(), "stderr": proc.stderr.encode()}
    for obj in s3.list_objects_v2(Bucket=mlflow_server.bucket)["Contents"]:
        haystacks[f"s3:{obj['Key']}"] = s3.get_object(Bucket=mlflow_server.bucket, Key=obj["Key"])["Body"].read()
    for folder in (mlflow_server.folder, tmp_path):
        for path in folder.rglob("*"):
            if path.is_file():
                haystacks[str(path)] = path.read_bytes()
    assert any(name.endswith("prefect.db") for name in haystacks) and any(name.endswith("mlflow.db") for name in haystacks)
    for secret in (PASSWORD, AWS_KEY_ID, AWS_SECRET):
        leaks = [name for name, data in haystacks.items() if secret.encode() in data]
        assert leaks == [], f"{secret} found in {leaks}"
