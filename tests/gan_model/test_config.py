import pytest

from gan_model.config import ConfigError, GanflowConfig, build_config, flat_params, load_config


def test_overrides_are_typed_and_nested():
    cfg = build_config({"train": {"steps": 10}}, ["train.steps=20", "train.use_gpu=true",
                                                  "train.resources_per_worker={CPU: 2}"])
    assert cfg.train.steps == 20 and cfg.train.use_gpu is True and cfg.train.resources_per_worker == {"CPU": 2}


@pytest.mark.parametrize("override,message", [
    (["train.stepz=3"], "unknown config key 'train.stepz'"),
    (["nosuch.key=3"], "unknown config key 'nosuch'"),
    (["train.steps=-1"], "invalid config value for 'train.steps'"),
    (["data.resolution=48"], "power of two"),
    (["data.source=/local/folder"], "s3://bucket/prefix"),
    (["train.steps"], "expected section.key=value"),
    (["steps=3"], "must name a section and a field"),
])
def test_bad_config_is_one_clear_line(override, message):
    with pytest.raises(ConfigError, match=message) as err:
        build_config({}, override)
    assert "\n" not in str(err.value)


def test_yaml_errors_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")


def test_training_identity_ignores_runtime_knobs_only():
    base = GanflowConfig()
    assert build_config({}, ["train.checkpoint_every=7", "train.max_failures=9"]).training_identity() == \
        base.training_identity()
    assert build_config({}, ["train.steps=7"]).training_identity() != base.training_identity()


def test_lr_scaling_follows_the_global_batch():
    assert build_config({}, ["train.lr_scaling=linear", "train.batch_size=64", "train.num_workers=4",
                             "train.base_batch=64"]).train.lr_scale() == 4
    assert build_config({}, ["train.lr_scaling=sqrt", "train.num_workers=4"]).train.lr_scale() == 2


def test_repo_configs_are_valid():
    from pathlib import Path
    paths = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
    assert [p.name for p in paths] == ["quickstart.yaml", "smoke.yaml", "textures.yaml"]
    for path in paths:
        assert load_config(path).data.source.startswith("s3://ganflow-demo/")
    textures = load_config(paths[2]).data
    assert textures.channels == 3 and textures.crops is not None and textures.seed_dataset == "textures"


def test_flat_params_cover_every_section():
    params = flat_params(GanflowConfig())
    assert {k.split(".")[0] for k in params} == {"data", "model", "train", "eval", "registry"}


@pytest.mark.parametrize("key", ["data.endpoint_url", "data.processed_uri", "data.cache_dir", "train.storage_path",
                                 "eval.fid_weights", "eval.output_dir", "registry.tracking_uri"])
@pytest.mark.parametrize("userinfo", ["user:secret@", "token@"])
def test_no_config_value_may_carry_credentials(key, userinfo):
    # Every value becomes an MLflow param and shows in the Prefect UI.
    with pytest.raises(ConfigError, match=f"invalid config value for '{key}': must not embed credentials") as err:
        build_config({}, [f"{key}=https://{userinfo}host.example/x"])
    assert "secret" not in str(err.value) and "token" not in str(err.value)
    assert build_config({}, ["data.processed_uri=s3://bucket/a@b/c"]).data.processed_uri == "s3://bucket/a@b/c"


def test_strip_userinfo_keeps_everything_but_the_credentials():
    from gan_model.config import strip_userinfo
    assert strip_userinfo("https://u:p@host:8443/a@b?x=1") == "https://host:8443/a@b?x=1"
    assert strip_userinfo("sqlite:////tmp/m.db") == "sqlite:////tmp/m.db"


def test_texture_crops_are_a_validated_data_setting():
    cfg = build_config({}, ["data.crops.size=64", "data.crops.per_image=8"])
    assert (cfg.data.crops.size, cfg.data.crops.per_image, cfg.data.crops.seed) == (64, 8, 0)
    assert build_config({}).data.crops is None  # off unless asked for
    with pytest.raises(ConfigError, match=r"data.crops.size \(16\) must be at least data.resolution \(32\)"):
        build_config({}, ["data.crops.size=16"])
    with pytest.raises(ConfigError, match=r"exceed 256 MiB per image: lower data.crops.per_image"):
        build_config({}, ["data.channels=3", "data.resolution=256", "data.crops.size=256", "data.crops.per_image=2000"])
    with pytest.raises(ConfigError, match="unknown config key 'data.crops.sise'"):
        build_config({}, ["data.crops.sise=64"])
