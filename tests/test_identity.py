"""Identity is a type: what defines a data set version, a training run and an evaluation protocol
is a whole pydantic sub-model, so every one of its fields (including the next one added) changes
the identity, and nothing outside it does."""

import pytest

from gan_model.config import (DataConfig, EvalConfig, EvalProtocol, GanflowConfig, ModelConfig, Preprocessing,
                              TrainConfig, TrainRecipe)

# One valid value different from the default for every field of every section. A field added to
# a section without an entry here fails `test_every_field_has_an_alternative`.
ALTERNATIVES = {
    "data": {"resolution": 64, "channels": 3, "small_images": "skip", "max_pixels": 1000, "max_object_bytes": 1000,
             "max_images": 7, "crops": {"size": 64, "per_image": 3},
             "source": "s3://other-bucket/x/", "endpoint_url": "http://127.0.0.1:9", "region": "eu-west-1",
             "embedded_server": "never", "seed_dataset": "digits", "processed_uri": "/tmp/elsewhere",
             "cache_dir": "/tmp/cache-elsewhere", "shard_size": 7, "download_workers": 3, "decode_processes": 0,
             "timeout_s": 7},
    "model": {"architecture": "resnet_sngan", "z_dim": 3, "g_width": 3, "d_width": 3, "d_norm": "spectral"},
    "train": {"num_workers": 3, "batch_size": 3, "steps": 3, "lr_g": 0.1, "lr_d": 0.1, "lr_scaling": "sqrt",
              "base_batch": 3, "beta1": 0.1, "beta2": 0.5, "ema_decay": 0.5, "seed": 3, "use_gpu": True,
              "loss": "hinge", "n_dis": 5, "r1_gamma": 1.0, "r1_every": 4, "augment": "off", "augment_policy": "cutout",
              "ema_halflife_kimg": 10.0, "ema_rampup": 0.0, "precision": "fp32", "compile": True,
              "resources_per_worker": {"CPU": 3}, "checkpoint_every": 3, "keep_checkpoints": 3, "log_every": 3,
              "max_failures": 3, "storage_path": "/tmp/ray-elsewhere", "threads_per_worker": 3,
              "timeout_s": 7, "if_busy": "skip", "dashboard": True},
    "eval": {"fid_weights": "random", "n_generated": 300, "n_reference": 300, "kid_subset_size": 50,
             "kid_subsets": 3, "seed": 3, "batch_size": 3, "grid_size": 3, "output_dir": "/tmp/eval-elsewhere",
             "num_workers": 3, "timeout_s": 7, "fid_weights_sha256": "a" * 64},
}
SECTIONS = {"data": (DataConfig, Preprocessing), "train": (TrainConfig, TrainRecipe),
            "eval": (EvalConfig, EvalProtocol), "model": (ModelConfig, ModelConfig)}


def changed(section: str, field: str) -> GanflowConfig:
    cfg = GanflowConfig()
    if ALTERNATIVES[section][field] == getattr(getattr(cfg, section), field):
        pytest.skip("a field with a single allowed value cannot change")
    getattr(cfg, section).__setattr__(field, ALTERNATIVES[section][field])
    return cfg


def cases(section: str):
    whole, identity = SECTIONS[section]
    return [pytest.param(section, f, f in identity.model_fields, id=f"{section}.{f}") for f in whole.model_fields]


def test_every_field_has_an_alternative():
    for section, (whole, _) in SECTIONS.items():
        assert set(whole.model_fields) == set(ALTERNATIVES[section]), section


@pytest.mark.parametrize("section,field,in_identity", cases("data"))
def test_data_set_version_follows_preprocessing_exactly(section, field, in_identity):
    from tasks.ingest import dataset_version
    manifest = [("a.png", "etag-a", 10), ("b.png", "etag-b", 20)]
    base = dataset_version(manifest, GanflowConfig().data)
    assert (dataset_version(manifest, changed(section, field).data) != base) == in_identity


@pytest.mark.parametrize("section,field,in_identity", cases("model") + cases("train") + cases("data"))
def test_training_identity_is_the_model_and_the_recipe(section, field, in_identity):
    # The data set is identified by its version, which the run name carries beside this hash.
    in_identity = in_identity and section != "data"
    assert (changed(section, field).training_identity() != GanflowConfig().training_identity()) == in_identity


@pytest.mark.parametrize("section,field,in_identity", cases("eval"))
def test_protocol_key_follows_the_protocol_exactly(section, field, in_identity):
    from tasks.evaluate import protocol_key

    def key(cfg):  # the weights enter through their hash, the reference set through its count
        return protocol_key(cfg.eval, "0" * 64, cfg.eval.n_reference, "v1")
    if field == "fid_weights":
        in_identity = False  # auto and random differ only once resolved: their sha256 is the identity
    assert (key(changed(section, field)) != key(GanflowConfig())) == in_identity


def test_protocol_key_includes_the_weights_hash_and_the_data_set():
    from tasks.evaluate import protocol_key
    ev = GanflowConfig().eval
    base = protocol_key(ev, "0" * 64, 256, "v1")
    assert protocol_key(ev, "1" * 64, 256, "v1") != base
    assert protocol_key(ev, "0" * 64, 256, "v2") != base
    assert protocol_key(ev, "0" * 64, 100, "v1") != base


def test_texture_crops_are_part_of_the_version_and_off_leaves_old_versions_alone():
    from tasks.ingest import dataset_version
    manifest = [("a.png", "etag-a", 10), ("b.png", "etag-b", 20)]
    # Pinned before data.crops existed: a data set ingested then keeps its name (and its registrations).
    assert dataset_version(manifest, GanflowConfig().data) == "d8d0c6807c189d0c"
    versions = set()
    for crops in ({"size": 64, "per_image": 3}, {"size": 64, "per_image": 4}, {"size": 128, "per_image": 3},
                  {"size": 64, "per_image": 3, "seed": 1}):
        cfg = GanflowConfig()
        cfg.data.crops = crops
        versions.add(dataset_version(manifest, cfg.data))
    assert len(versions) == 4
