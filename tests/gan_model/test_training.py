import copy

import numpy as np
import pytest
import torch

from gan_model.ema import ema_decay_at, update_ema
from gan_model.networks import Discriminator, Generator, build_networks
from gan_model.training import Hooks, RankData
from tests.helpers import tiny_training, train_with


def cfg_for(steps=4, **over):
    return tiny_training(f"train.steps={steps}", "train.checkpoint_every=2", "train.log_every=1", **over)


def random_images(n=64, c=1, r=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, c, r, r), dtype=np.uint8)


@pytest.mark.parametrize("resolution", [16, 32, 64, 128])
@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_for_each_resolution(resolution, channels):
    g = Generator(z_dim=8, width=4, channels=channels, resolution=resolution)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    for norm in ("batch", "spectral", "none"):
        assert Discriminator(4, channels, resolution, norm)(x).shape == (2,)


def test_dcgan_64_matches_the_pytorch_example_widths():
    g = Generator(z_dim=100, width=64, channels=3, resolution=64)
    convs = [m for m in g.main if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [c.out_channels for c in convs] == [512, 256, 128, 64, 3]


def test_invalid_resolution_is_rejected():
    with pytest.raises(ValueError, match="power of two"):
        Generator(resolution=48)


def test_training_steps_change_weights_and_report_checkpoints():
    cfg = cfg_for(steps=4)
    reports = []
    train_with(cfg, RankData(random_images(), seed=0, batch_size=8),
               hooks=Hooks(report=lambda m, ckpt: reports.append((m["step"], ckpt is not None))))
    assert reports == [(1, False), (2, True), (3, False), (4, True)]
    torch.manual_seed(cfg.train.seed)
    g0, _ = build_networks(cfg.model, cfg.data.channels, cfg.data.resolution)
    captured = {}

    def keep(metrics, ckpt):
        if ckpt:
            from gan_model.checkpoint import load_checkpoint
            captured.update(load_checkpoint(ckpt))
    train_with(cfg, RankData(random_images(), seed=0, batch_size=8), hooks=Hooks(report=keep))
    changed = [not torch.equal(captured["G"][k], v) for k, v in g0.state_dict().items() if v.is_floating_point()]
    assert any(changed)
    assert captured["step"] == 4 and len(captured["history"]) == 4
    # The checkpoint records what was computed, never where anything lives.
    assert set(captured["config"]) == {"model", "recipe"}
    assert "storage_path" not in captured["config"]["recipe"] and captured["config"]["recipe"]["steps"] == 4


def test_ema_update_moves_towards_the_model_and_copies_buffers():
    g = Generator(z_dim=8, width=4, resolution=16)
    ema = copy.deepcopy(g)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(1.0)
        for b in g.buffers():
            b.add_(3)
    before = [p.clone() for p in ema.parameters()]
    update_ema(ema, g, decay=0.9)
    for b0, pe, p in zip(before, ema.parameters(), g.parameters()):
        torch.testing.assert_close(pe, 0.9 * b0 + 0.1 * p)
    for be, b in zip(ema.buffers(), g.buffers()):
        assert torch.equal(be, b)
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)
    assert ema_decay_at(10**6, 0.999) == 0.999


def _final_state(cfg, images, resume=None):
    out = {}

    def keep(metrics, ckpt):
        if ckpt:
            from gan_model.checkpoint import load_checkpoint
            out.clear()
            out.update(load_checkpoint(ckpt))
    train_with(cfg, RankData(images, seed=cfg.train.seed, batch_size=8), resume=resume, hooks=Hooks(report=keep))
    return out


def test_determinism_under_a_seed_and_across_seeds():
    images = random_images()
    a = _final_state(cfg_for(steps=3), images)
    b = _final_state(cfg_for(steps=3), images)
    c = _final_state(cfg_for(steps=3, **{"train.seed": 1}), images)
    for k in a["G"]:
        assert torch.equal(a["G"][k], b["G"][k])
    assert any(not torch.equal(a["G"][k], c["G"][k]) for k in a["G"] if a["G"][k].is_floating_point())


def test_resuming_from_a_checkpoint_equals_the_uninterrupted_run():
    images = random_images()
    full = _final_state(cfg_for(steps=4), images)
    half = _final_state(cfg_for(steps=2), images)
    resumed = _final_state(cfg_for(steps=4), images, resume=half)
    assert resumed["step"] == 4
    for part in ("G", "D", "G_ema"):
        for k in full[part]:
            torch.testing.assert_close(resumed[part][k], full[part][k], rtol=1e-5, atol=1e-6)
    assert [m["step"] for m in resumed["history"]] == [1, 2, 3, 4]


def test_rank_data_partitions_without_overlap():
    images = random_images(100)
    shares = [RankData(images, seed=3, rank=r, world_size=3, batch_size=8).local for r in range(3)]
    union = np.concatenate(shares)
    assert len(union) == 100 and len(np.unique(union)) == 100


def test_too_few_images_for_a_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than 64 per worker"):
        RankData(random_images(10), seed=0, batch_size=64)
