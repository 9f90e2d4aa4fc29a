"""The real flow, end to end: local S3 server, Ray Train with 2 CPU workers, MLflow on
SQLite, Prefect's test harness. Slow (a few minutes) and kept to what matters."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.helpers import digits, tiny_config, upload_images

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray
    if ray.is_initialized():
        ray.shutdown()


def test_pipeline_registers_evaluates_promotes_and_is_idempotent(prefect_harness, s3, s3_server, bucket,
                                                                 tmp_path, monkeypatch, capsys):
    from mlflow import MlflowClient

    from flows.pipeline import ganflow_pipeline

    upload_images(s3, bucket, "digits/", digits(256, size=16))
    # The SNGAN ResNets: the registered generator must rebuild as its architecture everywhere
    # (evaluation, the pyfunc model, `ganflow sample`).
    cfg = tiny_config(tmp_path, f"s3://{bucket}/digits/", s3_server.url, "model.architecture=resnet_sngan")
    name, uri = cfg.registry.model_name, cfg.registry.tracking_uri
    client = MlflowClient(uri, uri)

    # 1. First run: a data set version, a trained generator, version 1 as champion.
    first = ganflow_pipeline(config=cfg)
    assert first["n_images"] == 256 and first["steps"] == cfg.train.steps
    assert first["model_version"] == "1" and first["alias"] == "champion"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    run = client.get_run(first["mlflow_run_id"])
    assert run.data.metrics["fid"] == pytest.approx(first["fid"]) and first["fid"] > 0
    assert run.data.params["train.steps"] == str(cfg.train.steps)
    history = client.get_metric_history(first["mlflow_run_id"], "train/loss_d")
    assert [m.step for m in history] == list(range(5, cfg.train.steps + 1, 5))
    grid = client.download_artifacts(first["mlflow_run_id"], "samples/samples.png", str(tmp_path))
    assert Image.open(grid).size[0] > 4 * 16
    # Beside the grid: the EMA generator's latent walk, as an animated GIF and an MP4 of the same frames.
    gif = Image.open(client.download_artifacts(first["mlflow_run_id"], "samples/latent_walk.gif", str(tmp_path)))
    assert gif.n_frames == 64 and gif.size[0] >= 256
    mp4 = client.download_artifacts(first["mlflow_run_id"], "samples/latent_walk.mp4", str(tmp_path))
    import imageio_ffmpeg
    assert imageio_ffmpeg.count_frames_and_secs(mp4)[0] == 64
    assert [p.rsplit(".", 1)[1] for p in first["latent_walks"]] == ["gif", "mp4"]
    protocol = json.loads(open(client.download_artifacts(first["mlflow_run_id"], "fid_protocol.json",
                                                         str(tmp_path))).read())
    assert protocol["weights"] == "random" and len(protocol["weights_sha256"]) == 64
    assert first["flow_run_id"] and run.data.tags["prefect.flow_run_id"] == first["flow_run_id"]
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    with get_client(sync_client=True) as prefect_client:  # the training progress shown in the UI
        progress = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["training-progress"])))
    assert progress and max(float(a.data) for a in progress) == 100.0
    with get_client(sync_client=True) as prefect_client:  # the UI's samples artifact points at the walk too
        samples = prefect_client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ganflow-samples"])))
    assert samples and "latent_walk.gif" in samples[-1].description

    # 2. The same flow again (a retry or a re-run): no second version, same decision.
    again = ganflow_pipeline(config=cfg)
    assert again["model_version"] == "1" and again["mlflow_run_id"] == first["mlflow_run_id"]
    assert len(client.search_model_versions(f"name='{name}'")) == 1
    relogged = client.get_metric_history(first["mlflow_run_id"], "train/loss_d")
    assert [(m.step, m.timestamp) for m in relogged] == [(m.step, m.timestamp) for m in history]  # continued

    # 3. A different training config: a new version, promoted only if its FID is better.
    longer = cfg.model_copy(deep=True)
    longer.train.steps = 30
    third = ganflow_pipeline(config=longer)
    assert third["model_version"] == "2"
    expected = "champion" if third["fid"] < first["fid"] else "challenger"
    assert third["alias"] == expected
    assert str(client.get_model_version_by_alias(name, expected).version) == "2"
    champion = "2" if expected == "champion" else "1"
    assert str(client.get_model_version_by_alias(name, "champion").version) == champion

    # 4. Users sample images from the champion through the registry (pyfunc round trip).
    from flows.cli import main
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = tmp_path / "champion"
    assert main(["sample", "--model", f"models:/{name}@champion", "-n", "3", "--out", str(out)]) == 0
    files = sorted(out.glob("*.png"))
    assert len(files) == 3 and np.asarray(Image.open(files[0])).shape == (16, 16)

    # 5. Re-evaluating a registered version reproduces its recorded FID (same protocol), reusing
    #    the cached reference statistics.
    ref_cache = sorted((tmp_path / "datasets").glob("*/fid-cache/ref-*.npz"))
    assert len(ref_cache) == 1
    cached_at = ref_cache[0].stat().st_mtime_ns
    capsys.readouterr()
    # Locations come from the caller, never from the registered run (only its protocol does).
    assert main(["evaluate", "--model", f"models:/{name}/1", "--set", f"data.processed_uri={tmp_path / 'datasets'}",
                 "--set", f"eval.output_dir={tmp_path / 'eval'}", "--json"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["recorded_fid"] == pytest.approx(first["fid"], rel=1e-6)
    assert evaluated["fid"] == pytest.approx(first["fid"], rel=1e-4)
    assert ref_cache[0].stat().st_mtime_ns == cached_at  # not recomputed
    # ... and under another version's protocol (here the same one), side by side with its FID.
    assert main(["evaluate", "--model", f"models:/{name}/1", "--protocol-of", f"models:/{name}/2",
                 "--set", f"data.processed_uri={tmp_path / 'datasets'}", "--set", f"eval.output_dir={tmp_path / 'eval'}",
                 "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)["compared_with"]
    assert compared == {"model_version": "2", "fid": pytest.approx(third["fid"])}

    # 6. Manual rollback, which a later run of the same flow does not undo.
    assert main(["promote", name, "1", "--alias", "champion"]) == 0
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    ganflow_pipeline(config=longer)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
