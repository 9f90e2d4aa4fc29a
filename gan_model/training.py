"""The GAN training loop: one plain function, distributed only through hooks.

`train()` runs the same code in one process or as one rank of many. The
caller decides how models are wrapped for data parallelism (`wrap`, e.g.
Ray's `prepare_model`) and where metrics and checkpoints go (`report`). The
loop itself only knows `torch.distributed` for averaging logged metrics.

Every random stream is a pure function of (seed, rank, step): resuming from
a checkpoint at step k continues exactly as the uninterrupted run would.

On a GPU the step never waits for the device: losses and metrics are summed
as device tensors and read once per log step, latents and augmentation
parameters travel through pinned memory, and a data set that fits stays on
the device as uint8. Forward passes run under bf16 autocast (`precision`)
in channels-last layout, Adam is the fused kernel, and `compile=True` hands
the forward passes to torch.compile.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gan_model.architectures import architecture, build_networks, generator_kwargs
from gan_model.augment import augment_generator, augmentation_on, diff_augment
from gan_model.checkpoint import save_checkpoint
from gan_model.config import ModelConfig, TrainRecipe
from gan_model.ema import ema_beta_from_halflife, ema_decay_at, recalibrate_batchnorm, update_ema
from gan_model.losses import LOSSES, r1_penalty
from gan_model.shards import ShardedImages

# A data set up to this size (and a quarter of the free GPU memory) is kept on the GPU as uint8.
DEVICE_DATA_BYTES = 4 << 30
# Batches of seeded latents that re-estimate G_ema's BatchNorm statistics for each checkpoint.
EMA_BN_BATCHES = 16


def _identity(module: nn.Module, *, broadcast_buffers: bool = True) -> nn.Module:
    return module


@dataclass
class Hooks:
    # report(metrics, checkpoint_dir_or_None): called by every rank at the
    # same steps; only rank 0 passes a checkpoint folder.
    report: Callable[[dict, str | None], None] = lambda metrics, ckpt: None
    # wrap(module, broadcast_buffers=...) -> module: DDP wrapping (identity alone).
    wrap: Callable[..., nn.Module] = _identity
    # Called with the step before it runs: where callers inject faults or profile.
    before_step: Callable[[int], None] = lambda step: None


@dataclass
class RankData:
    """This rank's share of the data set: a disjoint slice of one seeded permutation."""

    images: ShardedImages | np.ndarray
    seed: int
    rank: int = 0
    world_size: int = 1
    batch_size: int = 64
    _epoch: int = field(default=-1, init=False)
    _order: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        n = len(self.images)
        perm = np.random.default_rng([self.seed, 0xDA7A]).permutation(n)
        self.local = perm[self.rank::self.world_size]
        if len(self.local) < self.batch_size:
            raise ValueError(
                f"the data set has {n} images, fewer than {self.batch_size} per worker x {self.world_size} "
                f"workers: lower train.batch_size or add images")
        self.batches_per_epoch = len(self.local) // self.batch_size

    def batch_indices(self, step: int) -> np.ndarray:
        """Indices (into the whole data set, sorted) of this rank's batch at `step`."""
        epoch, i = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:  # a fresh shuffle of this rank's share every epoch
            rng = np.random.default_rng([self.seed, self.rank, epoch])
            self._order, self._epoch = self.local[rng.permutation(len(self.local))], epoch
        return np.sort(self._order[i * self.batch_size:(i + 1) * self.batch_size])

    def take(self, indices: np.ndarray) -> np.ndarray:
        return self.images.take(indices) if isinstance(self.images, ShardedImages) else self.images[indices]

    def batch(self, step: int) -> np.ndarray:
        return self.take(self.batch_indices(step))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape) if isinstance(self.images, ShardedImages) else self.images.shape[1:]


def step_latents(seed: int, rank: int, step: int, n: int, z_dim: int) -> torch.Tensor:
    """The latents rank `rank` draws at `step`: a pure function, so resuming replays them exactly."""
    # SeedSequence mixes the three numbers: no two (rank, step) pairs share a stream.
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))
    return torch.randn(n, z_dim, generator=gen)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait: through pinned memory on CUDA."""
    return t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)


def resident_batches(data: RankData, device: torch.device) -> Callable[[int], torch.Tensor]:
    """This rank's share copied to `device` once as uint8; a batch is then one gather there."""
    keys = np.sort(data.local)
    images = torch.from_numpy(data.take(keys)).to(device)

    def batch(step: int) -> torch.Tensor:
        return images[to_device(torch.from_numpy(np.searchsorted(keys, data.batch_indices(step))), device)]
    return batch


def batch_source(data: RankData, device: torch.device, budget_bytes: int) -> Callable[[int], torch.Tensor]:
    """step -> uint8 (B, C, H, W) on `device`: from device memory when the share fits the budget
    (on CUDA), else read on the host and copied."""
    if device.type == "cuda":
        nbytes = len(data.local) * math.prod(data.image_shape)
        if nbytes <= min(budget_bytes, torch.cuda.mem_get_info(device)[0] // 4):
            return resident_batches(data, device)
    return lambda step: to_device(torch.from_numpy(data.batch(step)), device)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 keeps fp32's range, so GAN losses need no loss scaling (unlike fp16)."""
    if precision == "bf16" or (precision == "auto" and device.type == "cuda"):
        return torch.bfloat16
    return None


def adam(params, lr: float, betas: tuple[float, float], device: torch.device) -> torch.optim.Adam:
    """Adam as one fused kernel on CUDA, one multi-tensor kernel per op elsewhere (same maths)."""
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.Adam(params, lr=lr, betas=betas, **fast)


def _unwrap(m: nn.Module) -> nn.Module:
    return getattr(m, "module", m)


def _no_sync(m: nn.Module):
    return m.no_sync() if hasattr(m, "no_sync") else contextlib.nullcontext()


def _mean_over_ranks(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


# What each step adds to the metric sums (read once per log step): D's loss without R1, G's
# loss, D's mean sigmoid output on reals and fakes, R1's penalty and the steps that computed it.
METRICS = ("loss_d", "loss_g", "d_real", "d_fake", "r1", "r1_steps")
D_METRICS = torch.tensor([METRICS.index(k) for k in ("loss_d", "d_real", "d_fake", "r1", "r1_steps")])


def train(
    model: ModelConfig,
    recipe: TrainRecipe,
    data: RankData,
    *,
    log_every: int = 50,
    checkpoint_every: int = 250,
    device: str | torch.device = "cpu",
    resume: dict | None = None,
    hooks: Hooks | None = None,
    compile: bool = False,
    device_data_bytes: int = DEVICE_DATA_BYTES,
) -> dict:
    """Train for recipe.steps steps in total (counting those already in `resume`).

    The loop gets what it computes with (the model settings and the training recipe) and
    nothing about where data, checkpoints or registries live; `compile` and
    `device_data_bytes` change how fast it runs, never what it computes.
    """
    hooks = hooks or Hooks()
    tc = recipe.part(TrainRecipe)  # exactly the recipe, even when handed a whole TrainConfig
    device = torch.device(device)
    rank, world = data.rank, data.world_size
    channels, resolution, _ = data.image_shape
    global_batch = data.batch_size * world
    loss = LOSSES[architecture(model.architecture).loss if tc.loss == "auto" else tc.loss]
    augment = augmentation_on(tc.augment, len(data.images))
    amp_dtype = autocast_dtype(tc.precision, device)
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    # 1. Networks, the EMA copy and optimisers. Learning rates follow the
    #    global batch as the config says; Adam with beta1=0.5 is the DCGAN recipe.
    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    g, d = build_networks(model, channels, resolution)
    g_ema = copy.deepcopy(g).eval().requires_grad_(False)
    if resume is not None:
        g.load_state_dict(resume["G"]); d.load_state_dict(resume["D"]); g_ema.load_state_dict(resume["G_ema"])
    g, d, g_ema = (m.to(device, memory_format=layout) for m in (g, d, g_ema))
    scale = tc.lr_scale()
    opt_g = adam(g.parameters(), tc.lr_g * scale, (tc.beta1, tc.beta2), device)
    opt_d = adam(d.parameters(), tc.lr_d * scale, (tc.beta1, tc.beta2), device)
    start, history, starts = 0, [], []
    if resume is not None:  # optimiser state follows the parameters' device as it loads
        opt_g.load_state_dict(resume["opt_g"]); opt_d.load_state_dict(resume["opt_d"])
        start, history = int(resume["step"]), list(resume.get("history", []))
        starts = list(resume.get("starts", []))
    starts.append(start)  # provenance: the step each (re)start began from

    # 2. Data parallelism: G and D get separate DDP wrappers. D sees real and
    #    fake batches in separate passes, so its BatchNorm buffers stay local
    #    (broadcasting them between the two passes would mix statistics).
    #    Compiled forwards share the modules' parameters; R1's double backward
    #    goes through the eager D.
    g = hooks.wrap(g, broadcast_buffers=True)
    d = hooks.wrap(d, broadcast_buffers=False)
    g_plain, d_plain = _unwrap(g), _unwrap(d)
    fast = torch.compile if compile else (lambda m: m)
    g_fwd, d_fwd, d_plain_fwd = fast(g), fast(d), fast(d_plain)

    def ema_bn_latents():
        gen = torch.Generator().manual_seed(int(np.random.SeedSequence([tc.seed, 0xB17]).generate_state(1)[0]))
        for _ in range(EMA_BN_BATCHES):
            yield torch.randn(data.batch_size, model.z_dim, generator=gen).to(device)

    def checkpoint_state(step: int) -> dict:
        # The saved G_ema gets statistics of its own weights; the next step's update_ema copies
        # G's again, so training (and resuming) is unaffected.
        recalibrate_batchnorm(g_ema, ema_bn_latents())
        return {"format": "ganflow-ckpt/1", "step": step, "seed": tc.seed, "world_size": world,
                "G": g_plain.state_dict(), "D": d_plain.state_dict(), "G_ema": g_ema.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "generator_kwargs": generator_kwargs(model, g_plain),  # rebuilds G_ema for sampling
                "config": {"model": model.model_dump(mode="json"), "recipe": tc.model_dump(mode="json")},
                # The metric history travels with the checkpoint, so a resumed
                # run continues it without duplicated or lost steps.
                "history": history, "starts": starts}

    def emit(step: int, metrics: dict, with_checkpoint: bool) -> None:
        if with_checkpoint and rank == 0:
            with tempfile.TemporaryDirectory(prefix="ganflow-ckpt-") as tmp:
                save_checkpoint(tmp, checkpoint_state(step))
                hooks.report(metrics, tmp)  # the hook copies the folder before it is removed
        else:
            hooks.report(metrics, None)

    def augmented(x: torch.Tensor, step: int, which: int) -> torch.Tensor:
        """DiffAugment, one seeded stream per pass (0: reals, 1: fakes for D, 2: fakes for G)."""
        return diff_augment(x, tc.augment_policy, augment_generator(tc.seed, rank, step, which)) if augment else x

    def ema_beta(step: int) -> float:
        if tc.ema_halflife_kimg is not None:
            return ema_beta_from_halflife(step, global_batch, tc.ema_halflife_kimg, tc.ema_rampup)
        return ema_decay_at(step, tc.ema_decay)

    z_dim, n_dis = model.z_dim, tc.n_dis
    real_batch = batch_source(data, device, device_data_bytes)
    sums = torch.zeros(len(METRICS), dtype=torch.float64, device=device)
    d_metrics = D_METRICS.to(device)
    zero, one = torch.zeros((), device=device), torch.ones((), device=device)
    n_since, t_since = 0, time.perf_counter()
    metrics: dict = {"step": start}
    if start >= tc.steps:  # already complete (a re-run): report the final metrics, no new checkpoint
        final = history[-1] if history else {"step": start}
        hooks.report(final, None)
        return final

    def d_update(tick: int, keep_fake_graph: bool) -> torch.Tensor:
        """One update of D on the real batch and latents of `tick`; returns the fakes it saw."""
        real = real_batch(tick).float().div_(127.5).sub_(1.0).contiguous(memory_format=layout)
        z = to_device(step_latents(tc.seed, rank, tick, real.shape[0], z_dim), device)
        with autocast(), (contextlib.nullcontext() if keep_fake_graph else torch.no_grad()):
            fake = g_fwd(z)
        opt_d.zero_grad(set_to_none=True)
        r1 = zero
        with _no_sync(d):
            if tc.r1_gamma > 0 and tick % tc.r1_every == 0:
                real_in = real.detach().requires_grad_(True)
                real_logits = d(augmented(real_in, tick, 0)).float()
                r1 = r1_penalty(real_logits, real_in)
                loss_real = loss.d_real(real_logits)
                (loss_real + r1 * (tc.r1_gamma / 2 * tc.r1_every)).backward()
            else:
                with autocast():
                    real_logits = d_fwd(augmented(real, tick, 0)).float()
                loss_real = loss.d_real(real_logits)
                loss_real.backward()
        with autocast():
            fake_logits = d_fwd(augmented(fake.detach(), tick, 1)).float()
        loss_fake = loss.d_fake(fake_logits)
        loss_fake.backward()
        opt_d.step()
        # Device-side sums: reading a value here would make the host wait for the GPU every step.
        with torch.no_grad():
            sums[d_metrics] += torch.stack([  # D's losses and outputs: the mean over its updates
                (loss_real + loss_fake) / n_dis, torch.sigmoid(real_logits).mean() / n_dis,
                torch.sigmoid(fake_logits).mean() / n_dis, r1.detach(), zero if r1 is zero else one]).double()
        return fake

    for step in range(start, tc.steps):
        hooks.before_step(step)

        # 3. Discriminator: n_dis updates (SNGAN's recipe takes 5), each on the real batch and
        #    latents of its own tick, step * n_dis + j, so every update sees fresh images. Real and
        #    fake go in separate passes (DCGAN's BatchNorm recipe); gradients are all-reduced
        #    once, after the second. Every StyleGAN2-style lazy R1 update (one tick in r1_every)
        #    adds r1_every times the penalty, computed in fp32 through the eager D.
        for j in range(n_dis):
            tick = step * n_dis + j
            fake = d_update(tick, keep_fake_graph=j == n_dis - 1)

        # 4. Generator step on the last update's fakes, through the plain D (no DDP hooks, no D
        #    gradients).
        opt_g.zero_grad(set_to_none=True)
        d_plain.requires_grad_(False)
        with autocast():
            gen_logits = d_plain_fwd(augmented(fake, tick, 2)).float()
        loss_g = loss.g(gen_logits)
        loss_g.backward()
        d_plain.requires_grad_(True)
        opt_g.step()

        # 5. EMA of G: every rank keeps an identical copy, rank 0 saves it.
        update_ema(g_ema, g_plain, ema_beta(step))

        with torch.no_grad():
            sums[METRICS.index("loss_g")] += loss_g.detach().double()
        n_since += 1

        # 6. Metrics every log_every steps, a checkpoint every checkpoint_every
        #    and at the end; every rank reports at the same steps.
        done = step + 1
        if done % log_every == 0 or done % checkpoint_every == 0 or done == tc.steps:
            values = dict(zip(METRICS, _mean_over_ranks(sums).tolist()))  # the one wait per log step
            elapsed = time.perf_counter() - t_since
            r1_steps = values.pop("r1_steps")
            metrics = {"step": done, **{k: values[k] / n_since for k in METRICS[:4]}}
            if tc.r1_gamma > 0:
                metrics["r1"] = values["r1"] / max(r1_steps, 1.0)
            metrics["images_per_s"] = n_since * n_dis * fake.shape[0] * world / max(elapsed, 1e-9)  # D's reals
            history.append(metrics)
            emit(done, metrics, with_checkpoint=done % checkpoint_every == 0 or done == tc.steps)
            sums.zero_()
            n_since, t_since = 0, time.perf_counter()
    return metrics
