import copy
from dataclasses import dataclass, field

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


def _final_state(cfg, images, resume=None, **kwargs):
    out = {}

    def keep(metrics, ckpt):
        if ckpt:
            from gan_model.checkpoint import load_checkpoint
            out.clear()
            out.update(load_checkpoint(ckpt))
    train_with(cfg, RankData(images, seed=cfg.train.seed, batch_size=8), resume=resume, hooks=Hooks(report=keep),
               **kwargs)
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


def test_resuming_resnet_sngan_with_augmentation_r1_and_ema_halflife_is_exact():
    images = random_images()
    over = {"model.architecture": "resnet_sngan", "train.augment": "on", "train.r1_gamma": 1.0,
            "train.r1_every": 2, "train.ema_halflife_kimg": 0.01}
    full = _final_state(cfg_for(steps=4, **over), images)
    half = _final_state(cfg_for(steps=2, **over), images)
    resumed = _final_state(cfg_for(steps=4, **over), images, resume=half)
    assert full["generator_kwargs"]["architecture"] == "resnet_sngan"
    for part in ("G", "D", "G_ema"):
        for k in full[part]:
            torch.testing.assert_close(resumed[part][k], full[part][k], rtol=1e-5, atol=1e-6)
    assert [m["r1"] > 0 for m in resumed["history"]] == [True, False, True, False]  # R1 on steps 0 and 2


def test_determinism_of_resnet_sngan_with_augmentation():
    images = random_images()
    over = {"model.architecture": "resnet_sngan", "train.augment": "on", "train.r1_gamma": 1.0}
    a = _final_state(cfg_for(steps=2, **over), images)
    b = _final_state(cfg_for(steps=2, **over), images)
    for k in a["G"]:
        assert torch.equal(a["G"][k], b["G"][k])


@dataclass
class RecordingData(RankData):
    """A rank's data that records which batches the loop draws."""

    drawn: list[int] = field(default_factory=list, init=False)

    def batch(self, step):
        self.drawn.append(step)
        return super().batch(step)


def test_n_dis_updates_d_that_many_times_per_g_step_each_on_fresh_reals():
    from gan_model.checkpoint import load_checkpoint
    cfg = cfg_for(steps=3, **{"train.n_dis": 2, "train.r1_gamma": 1.0, "train.r1_every": 4})
    data, final = RecordingData(random_images(), seed=0, batch_size=8), {}
    train_with(cfg, data, hooks=Hooks(report=lambda m, ckpt: ckpt and final.update(load_checkpoint(ckpt))))
    assert data.drawn == [0, 1, 2, 3, 4, 5]  # a fresh real batch for each of D's six updates
    assert final["step"] == 3
    assert {float(s["step"]) for s in final["opt_d"]["state"].values()} == {6.0}  # Adam counts D's updates...
    assert {float(s["step"]) for s in final["opt_g"]["state"].values()} == {3.0}  # ...and G's
    # R1 every 4 D updates: updates 0 and 4, in steps 1 and 3 (the metric averages what was computed).
    assert [m["r1"] > 0 for m in final["history"]] == [True, False, True]


def test_resuming_with_several_d_updates_per_step_is_exact():
    images = random_images()
    over = {"train.n_dis": 3, "train.augment": "on"}
    full = _final_state(cfg_for(steps=4, **over), images)
    resumed = _final_state(cfg_for(steps=4, **over), images, resume=_final_state(cfg_for(steps=2, **over), images))
    for part in ("G", "D", "G_ema"):
        for k in full[part]:
            torch.testing.assert_close(resumed[part][k], full[part][k], rtol=1e-5, atol=1e-6)
    assert [m["step"] for m in resumed["history"]] == [1, 2, 3, 4]


@pytest.mark.parametrize("arch", ["dcgan", "resnet_sngan"])
@pytest.mark.parametrize("loss", ["non_saturating", "hinge"])
@pytest.mark.parametrize("r1", [0.0, 10.0])
def test_one_step_for_every_architecture_loss_and_r1(arch, loss, r1):
    cfg = cfg_for(steps=1, **{"model.architecture": arch, "train.loss": loss, "train.r1_gamma": r1,
                              "train.r1_every": 1})
    reports = []
    train_with(cfg, RankData(random_images(16), seed=0, batch_size=8), hooks=Hooks(report=lambda m, c: reports.append(m)))
    (m,) = reports
    assert all(np.isfinite(v) for v in m.values())
    assert ("r1" in m) == (r1 > 0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["dcgan", "resnet_sngan"])
def test_compiled_forward_passes_compute_what_the_eager_ones_do(arch):
    # train.compile hands the forward passes of G and D to torch.compile (inductor, which builds C++
    # kernels on the CPU); R1's double backward stays eager. Same seed, same steps: the same losses,
    # D outputs and R1 penalties at every step, and the same D, up to the fused kernels' rounding.
    # 10-40 s of compiling on 2 cores.
    from torch._dynamo.utils import counters
    images = random_images()
    over = {"model.architecture": arch, "train.augment": "on", "train.r1_gamma": 1.0, "train.r1_every": 2}
    eager = _final_state(cfg_for(steps=4, **over), images)
    counters.clear()
    compiled = _final_state(cfg_for(steps=4, **over), images, compile=True)
    assert counters["stats"]["unique_graphs"] >= 2 and not counters["graph_break"]  # G and D, each whole
    assert [m["r1"] > 0 for m in compiled["history"]] == [True, False, True, False]
    for e, c in zip(eager["history"], compiled["history"], strict=True):
        assert c["step"] == e["step"]
        for k in ("loss_d", "loss_g", "d_real", "d_fake", "r1"):
            assert c[k] == pytest.approx(e[k], rel=1e-4, abs=1e-6), (e["step"], k)
    for k in eager["D"]:
        torch.testing.assert_close(compiled["D"][k], eager["D"][k], rtol=1e-4, atol=1e-5)
    # G is not compared weight by weight: a bias right before a BatchNorm has a zero gradient in
    # exact arithmetic, and Adam turns the rounding left in it into steps of +-lr either way.


def test_bf16_autocast_runs_a_step_on_the_cpu_too():
    reports = []
    train_with(cfg_for(steps=2, **{"train.precision": "bf16", "model.architecture": "resnet_sngan",
                                   "train.r1_gamma": 1.0, "train.r1_every": 2}),
               RankData(random_images(16), seed=0, batch_size=8), hooks=Hooks(report=lambda m, c: reports.append(m)))
    assert all(np.isfinite(v) for m in reports for v in m.values())


def test_losses_and_r1_penalty_have_their_textbook_values():
    from gan_model.losses import LOSSES, r1_penalty
    logits = torch.tensor([-2.0, 0.5, 3.0])
    hinge = LOSSES["hinge"]
    assert hinge.d_real(logits).item() == pytest.approx((3.0 + 0.5 + 0.0) / 3)
    assert hinge.d_fake(logits).item() == pytest.approx((0.0 + 1.5 + 4.0) / 3)
    assert hinge.g(logits).item() == pytest.approx(-1.5 / 3)
    ns = LOSSES["non_saturating"]
    assert ns.d_real(logits).item() == pytest.approx(-torch.log(torch.sigmoid(logits)).mean().item(), rel=1e-6)
    w = torch.randn(1, 2, 3, 3)  # a linear D: its input gradient is w everywhere, the penalty ||w||^2
    x = torch.randn(5, 2, 3, 3, requires_grad=True)
    assert r1_penalty((x * w).sum(dim=(1, 2, 3)), x).item() == pytest.approx(w.square().sum().item(), rel=1e-5)


def test_ema_by_half_life_halves_after_the_half_life_and_ramps_up():
    from gan_model.ema import ema_beta_from_halflife
    beta = ema_beta_from_halflife(10**6, 64, 10.0, 0.0)
    assert beta ** (10_000 / 64) == pytest.approx(0.5)
    assert ema_beta_from_halflife(0, 64, 10.0, 0.05) == 0.0  # the first step copies G
    assert ema_beta_from_halflife(100, 64, 10.0, 0.05) == pytest.approx(0.5 ** (64 / (100 * 64 * 0.05)))
    from gan_model.errors import ConfigError
    with pytest.raises(ConfigError, match="not both"):
        tiny_training("train.ema_decay=0.99", "train.ema_halflife_kimg=10")


def test_every_image_d_sees_is_augmented_with_the_same_policy(monkeypatch):
    """Reals and fakes in D's step and fakes in G's step: augmenting only some would let G win by
    producing augmented-looking images (Zhao et al. 2020, section 3)."""
    import gan_model.training as training
    calls, original = [], training.diff_augment

    def recording(x, policy, gen):
        calls.append((policy, x.requires_grad))
        return original(x, policy, gen)
    monkeypatch.setattr(training, "diff_augment", recording)
    train_with(cfg_for(steps=2, **{"train.augment": "on", "train.augment_policy": "translation,cutout"}),
               RankData(random_images(16), seed=0, batch_size=8))
    assert [p for p, _ in calls] == ["translation,cutout"] * 6  # 3 passes x 2 steps
    assert [g for _, g in calls[:3]] == [False, False, True]  # G's pass differentiates through it
    calls.clear()
    train_with(cfg_for(steps=2, **{"train.augment": "auto"}), RankData(random_images(16), seed=0, batch_size=8))
    assert len(calls) == 6  # 16 images: auto is on
    calls.clear()
    train_with(cfg_for(steps=2, **{"train.augment": "off"}), RankData(random_images(16), seed=0, batch_size=8))
    assert calls == []


def test_the_step_never_reads_a_value_back_from_the_device_between_log_steps(monkeypatch):
    """Only the log step synchronises with the device (one tolist); .item() in the loop would
    stall a GPU every step."""
    import sys
    reads = []
    for name in ("item", "tolist", "cpu", "numpy"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _name=name, _original=original, **k):
            if "gan_model" in sys._getframe(1).f_code.co_filename:
                reads.append(_name)
            return _original(self, *a, **k)
        monkeypatch.setattr(torch.Tensor, name, counted)
    cfg = tiny_training("train.steps=6", "train.log_every=3", "train.checkpoint_every=100", "train.r1_gamma=1",
                        "train.r1_every=2", "train.augment=on")
    train_with(cfg, RankData(random_images(16), seed=0, batch_size=8))
    assert reads == ["tolist", "tolist"]


def test_a_device_resident_data_set_gives_the_same_batches():
    from gan_model.training import resident_batches
    data = RankData(random_images(40), seed=2, rank=1, world_size=2, batch_size=8)
    batches = resident_batches(data, torch.device("cpu"))
    for step in range(5):  # across an epoch boundary
        assert np.array_equal(batches(step).numpy(), data.batch(step))


def test_a_tiny_model_overfits_sixteen_images():
    """300 steps on 16 digits: D tells them from G's samples, and G's samples move from noise to
    the digits (mean distance to the nearest training image, against uniform noise's and the
    untrained G's). Augmentation off: it exists to stop exactly this."""
    from gan_model.architectures import build_generator
    from tests.helpers import digits
    x = digits(16, 16)[:, None]
    cfg = tiny_training("train.steps=300", "train.batch_size=16", "model.g_width=8", "model.d_width=8",
                        "model.z_dim=16", "train.log_every=50", "train.checkpoint_every=300", "train.augment=off")
    out = _final_state_and_history(cfg, x)
    last = out["history"][-1]
    assert last["d_real"] - last["d_fake"] > 0.6

    def nn_distance(samples):
        ref = torch.from_numpy(x).float().div(127.5).sub(1).flatten(1)
        return torch.cdist(samples.flatten(1), ref).min(dim=1).values.mean().item()
    trained, untrained = build_generator(out["generator_kwargs"]), build_generator(out["generator_kwargs"])
    trained.load_state_dict(out["G_ema"])
    z = torch.randn(64, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        d_trained, d_untrained = nn_distance(trained.eval()(z)), nn_distance(untrained.eval()(z))
    d_noise = nn_distance(torch.rand(64, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    assert d_trained < 0.6 * d_noise and d_trained < 0.75 * d_untrained, (d_trained, d_untrained, d_noise)


def _final_state_and_history(cfg, images):
    out = {}

    def keep(metrics, ckpt):
        if ckpt:
            from gan_model.checkpoint import load_checkpoint
            out.update(load_checkpoint(ckpt))
    train_with(cfg, RankData(images, seed=cfg.train.seed, batch_size=cfg.train.batch_size), hooks=Hooks(report=keep))
    return out


def test_rank_data_partitions_without_overlap():
    images = random_images(100)
    shares = [RankData(images, seed=3, rank=r, world_size=3, batch_size=8).local for r in range(3)]
    union = np.concatenate(shares)
    assert len(union) == 100 and len(np.unique(union)) == 100


def test_too_few_images_for_a_batch_is_a_clear_error():
    with pytest.raises(ValueError, match="fewer than 64 per worker"):
        RankData(random_images(10), seed=0, batch_size=64)


def test_an_exported_resnet_generator_rebuilds_as_resnet_sngan(tmp_path):
    """What evaluation, `ganflow sample` and the served pyfunc model load."""
    from gan_model.architectures.resnet_sngan import Generator as ResnetGenerator
    from gan_model.checkpoint import ema_generator, export_generator, load_generator, save_checkpoint
    state = _final_state(cfg_for(steps=2, **{"model.architecture": "resnet_sngan"}), random_images())
    save_checkpoint(tmp_path / "ckpt", state)
    g = load_generator(export_generator(tmp_path / "ckpt", tmp_path / "generator.pt"))
    assert type(g) is ResnetGenerator
    z = torch.randn(3, 8)
    torch.testing.assert_close(g(z), ema_generator(tmp_path / "ckpt")(z))


def test_the_saved_ema_generator_has_batchnorm_statistics_of_its_own_weights():
    from gan_model.ema import recalibrate_batchnorm
    state = _final_state(cfg_for(steps=2), random_images())
    assert not torch.equal(state["G_ema"]["main.1.running_mean"], state["G"]["main.1.running_mean"])
    g = Generator(z_dim=8, width=4, resolution=16)
    g.load_state_dict(state["G_ema"])
    z = [torch.randn(64, 8, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    recalibrate_batchnorm(g, z)
    acts = g.main[1].running_mean  # after the first ConvTranspose: its mean over all latents seen
    with torch.no_grad():
        expected = torch.cat([g.main[0](zz.view(64, 8, 1, 1)) for zz in z]).mean(dim=(0, 2, 3))
    torch.testing.assert_close(acts, expected, rtol=1e-4, atol=1e-5)
    assert not g.training
