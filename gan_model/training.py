"""The GAN training loop: one plain function, distributed only through hooks.

`train()` runs the same code in one process or as one rank of many. The
caller decides how models are wrapped for data parallelism (`wrap`, e.g.
Ray's `prepare_model`) and where metrics and checkpoints go (`report`). The
loop itself only knows `torch.distributed` for averaging logged metrics.

Every random stream is a pure function of (seed, rank, step): resuming from
a checkpoint at step k continues exactly as the uninterrupted run would.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gan_model.checkpoint import save_checkpoint
from gan_model.config import ModelConfig, TrainRecipe
from gan_model.ema import ema_decay_at, update_ema
from gan_model.losses import d_loss_fake, d_loss_real, g_loss
from gan_model.networks import build_networks
from gan_model.shards import ShardedImages


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

    def batch(self, step: int) -> np.ndarray:
        epoch, i = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:  # a fresh shuffle of this rank's share every epoch
            rng = np.random.default_rng([self.seed, self.rank, epoch])
            self._order, self._epoch = self.local[rng.permutation(len(self.local))], epoch
        idx = np.sort(self._order[i * self.batch_size:(i + 1) * self.batch_size])
        return self.images.take(idx) if isinstance(self.images, ShardedImages) else self.images[idx]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of every image."""
        return tuple(self.images.shape) if isinstance(self.images, ShardedImages) else self.images.shape[1:]


def step_latents(seed: int, rank: int, step: int, n: int, z_dim: int) -> torch.Tensor:
    """The latents rank `rank` draws at `step`: a pure function, so resuming replays them exactly."""
    # SeedSequence mixes the three numbers: no two (rank, step) pairs share a stream.
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]))
    return torch.randn(n, z_dim, generator=gen)


def _unwrap(m: nn.Module) -> nn.Module:
    return getattr(m, "module", m)


def _no_sync(m: nn.Module):
    return m.no_sync() if hasattr(m, "no_sync") else contextlib.nullcontext()


def _mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(values, t.tolist()))


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
) -> dict:
    """Train for recipe.steps steps in total (counting those already in `resume`).

    The loop gets what it computes with (the model settings and the training recipe) and
    nothing about where data, checkpoints or registries live.
    """
    hooks = hooks or Hooks()
    tc = recipe.part(TrainRecipe)  # exactly the recipe, even when handed a whole TrainConfig
    device = torch.device(device)
    rank, world = data.rank, data.world_size
    channels, resolution, _ = data.image_shape

    # 1. Networks, the EMA copy and optimisers. Learning rates follow the
    #    global batch as the config says; Adam with beta1=0.5 is the DCGAN recipe.
    torch.manual_seed(tc.seed)  # identical initial weights on every rank
    g, d = build_networks(model, channels, resolution)
    g_ema = build_networks(model, channels, resolution)[0].eval().requires_grad_(False)
    g_ema.load_state_dict(g.state_dict())
    scale = tc.lr_scale()
    opt_g = torch.optim.Adam(g.parameters(), lr=tc.lr_g * scale, betas=(tc.beta1, tc.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=tc.lr_d * scale, betas=(tc.beta1, tc.beta2))
    start, history, starts = 0, [], []
    if resume is not None:
        g.load_state_dict(resume["G"]); d.load_state_dict(resume["D"]); g_ema.load_state_dict(resume["G_ema"])
        opt_g.load_state_dict(resume["opt_g"]); opt_d.load_state_dict(resume["opt_d"])
        start, history = int(resume["step"]), list(resume.get("history", []))
        starts = list(resume.get("starts", []))
    starts.append(start)  # provenance: the step each (re)start began from
    g, d, g_ema = g.to(device), d.to(device), g_ema.to(device)
    for opt in (opt_g, opt_d):  # optimiser state follows the parameters' device
        for st in opt.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":
                    st[k] = v.to(device)

    # 2. Data parallelism: G and D get separate DDP wrappers. D sees real and
    #    fake batches in separate passes, so its BatchNorm buffers stay local
    #    (broadcasting them between the two passes would mix statistics).
    g = hooks.wrap(g, broadcast_buffers=True)
    d = hooks.wrap(d, broadcast_buffers=False)
    d_plain = _unwrap(d)

    def checkpoint_state(step: int) -> dict:
        return {"format": "ganflow-ckpt/1", "step": step, "seed": tc.seed, "world_size": world,
                "G": _unwrap(g).state_dict(), "D": d_plain.state_dict(), "G_ema": g_ema.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(),
                "generator_kwargs": _unwrap(g).kwargs,
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

    z_dim = model.z_dim
    sums = {"loss_d": 0.0, "loss_g": 0.0, "d_real": 0.0, "d_fake": 0.0}
    n_since, t_since = 0, time.perf_counter()
    metrics: dict = {"step": start}
    if start >= tc.steps:  # already complete (a re-run): report the final metrics, no new checkpoint
        final = history[-1] if history else {"step": start}
        hooks.report(final, None)
        return final

    for step in range(start, tc.steps):
        hooks.before_step(step)
        real = torch.from_numpy(data.batch(step)).to(device).float().div_(127.5).sub_(1.0)
        z = step_latents(tc.seed, rank, step, real.shape[0], z_dim).to(device)

        # 3. Discriminator step: real and fake in separate passes (DCGAN's
        #    BatchNorm recipe); gradients are all-reduced once, after the second.
        fake = g(z)
        opt_d.zero_grad(set_to_none=True)
        with _no_sync(d):
            real_logits = d(real)
            loss_real = d_loss_real(real_logits)
            loss_real.backward()
        fake_logits = d(fake.detach())
        loss_fake = d_loss_fake(fake_logits)
        loss_fake.backward()
        opt_d.step()

        # 4. Generator step through the plain D (no DDP hooks, no D gradients).
        opt_g.zero_grad(set_to_none=True)
        d_plain.requires_grad_(False)
        loss_g = g_loss(d_plain(fake))
        loss_g.backward()
        d_plain.requires_grad_(True)
        opt_g.step()

        # 5. EMA of G: every rank keeps an identical copy, rank 0 saves it.
        update_ema(g_ema, _unwrap(g), ema_decay_at(step, tc.ema_decay))

        sums["loss_d"] += (loss_real + loss_fake).item()
        sums["loss_g"] += loss_g.item()
        sums["d_real"] += torch.sigmoid(real_logits).mean().item()
        sums["d_fake"] += torch.sigmoid(fake_logits).mean().item()
        n_since += 1

        # 6. Metrics every log_every steps, a checkpoint every checkpoint_every
        #    and at the end; every rank reports at the same steps.
        done = step + 1
        if done % log_every == 0 or done % checkpoint_every == 0 or done == tc.steps:
            elapsed = time.perf_counter() - t_since
            avg = _mean_over_ranks({k: v / n_since for k, v in sums.items()}, device)
            metrics = {"step": done, **avg,
                       "images_per_s": n_since * real.shape[0] * world / max(elapsed, 1e-9)}
            history.append(metrics)
            emit(done, metrics, with_checkpoint=done % checkpoint_every == 0 or done == tc.steps)
            sums = dict.fromkeys(sums, 0.0)
            n_since, t_since = 0, time.perf_counter()
    return metrics
