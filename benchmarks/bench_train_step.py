"""Training-step throughput: ganflow's loop vs the PyTorch examples' DCGAN loop.

Both train the same networks at the same batch size in one process, on the
same uint8 images. ganflow's loop adds what the pipeline needs (per-step
seeded latents, EMA of G, metric accumulation, the real/fake no_sync split);
this measures what that costs. Runs alternate (A B A B ...) and the ratio of
medians is reported, since absolute numbers on a shared machine are noisy.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch import nn

from gan_model.config import build_config
from gan_model.networks import build_networks
from gan_model.training import Hooks, RankData, train


def _config(resolution: int, width: int, batch: int, steps: int):
    return build_config({}, [f"data.resolution={resolution}", f"model.g_width={width}", f"model.d_width={width}",
                             "model.z_dim=100", f"train.batch_size={batch}", f"train.steps={steps}",
                             f"train.log_every={steps}", f"train.checkpoint_every={10 * steps}"])


def ganflow_images_per_s(cfg, images: np.ndarray, warmup: int) -> float:
    marks = {}

    def before(step: int) -> None:
        if step == warmup:
            marks["t0"] = time.perf_counter()

    def report(metrics, ckpt) -> None:
        marks.setdefault("t1", time.perf_counter())

    train(cfg.model, cfg.train.recipe(), RankData(images, seed=0, batch_size=cfg.train.batch_size),
          log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every,
          hooks=Hooks(report=report, before_step=before))
    return (cfg.train.steps - warmup) * cfg.train.batch_size / (marks["t1"] - marks["t0"])


def baseline_images_per_s(cfg, images: np.ndarray, warmup: int) -> float:
    """pytorch/examples dcgan/main.py's loop, with the same networks (logits + BCEWithLogits)."""
    torch.manual_seed(0)
    net_g, net_d = build_networks(cfg.model, cfg.data.channels, cfg.data.resolution)
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    b = cfg.train.batch_size
    data = torch.from_numpy(images).float().div(127.5).sub(1)
    t0 = 0.0
    for i in range(cfg.train.steps):
        if i == warmup:
            t0 = time.perf_counter()
        real = data[(i * b) % (len(data) - b):][:b]
        net_d.zero_grad()
        label = torch.full((b,), 1.0)
        err_real = criterion(net_d(real), label)
        err_real.backward()
        fake = net_g(torch.randn(b, cfg.model.z_dim))
        label.fill_(0.0)
        err_fake = criterion(net_d(fake.detach()), label)
        err_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        label.fill_(1.0)
        err_g = criterion(net_d(fake), label)
        err_g.backward()
        opt_g.step()
    return (cfg.train.steps - warmup) * b / (time.perf_counter() - t0)


def run(cases=((32, 32, 64, 40), (64, 64, 64, 12)), repeats: int = 3) -> list[dict]:
    rows = []
    for resolution, width, batch, steps in cases:
        cfg = _config(resolution, width, batch, steps)
        images = np.random.default_rng(0).integers(0, 256, (batch * 8, 1, resolution, resolution), dtype=np.uint8)
        ours, base = [], []
        for _ in range(repeats):
            ours.append(ganflow_images_per_s(cfg, images, warmup=2))
            base.append(baseline_images_per_s(cfg, images, warmup=2))
        rows.append({"case": f"DCGAN {resolution}x{resolution}, width {width}, batch {batch}, {steps} steps",
                     "ganflow": statistics.median(ours), "baseline": statistics.median(base),
                     "ratio": statistics.median(ours) / statistics.median(base)})
    return rows


def to_markdown(rows: list[dict]) -> list[str]:
    lines = ["| case | ganflow img/s | baseline img/s | ratio |", "|---|---|---|---|"]
    return lines + [f"| {r['case']} | {r['ganflow']:.0f} | {r['baseline']:.0f} | {r['ratio']:.2f}x |" for r in rows]
