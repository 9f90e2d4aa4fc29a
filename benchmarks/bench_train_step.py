"""Training-step throughput: ganflow's loop vs a plain loop written to the PyTorch examples' DCGAN recipe.

Both train the same networks (dcgan or resnet_sngan) at the same batch size in one process, on
the same uint8 images, with the same maths: BCE (non-saturating) loss, Adam(2e-4, 0.5, 0.999),
no augmentation (`train.augment=off`, `train.loss=non_saturating` on our side). ganflow's loop
adds what the pipeline needs (per-step seeded latents, EMA of G, metric accumulation, the
real/fake no_sync split) and, on CUDA, what makes it fast (bf16 autocast, channels-last,
fused Adam, the data set on the device, no host synchronisation inside the step, optionally
torch.compile). The plain loop is `dcgan/main.py`'s: fp32, batches copied from the host, and
`.item()` on its losses every step (the example prints them every step).

Runs alternate (A B A B ...) and the ratio of medians is reported, since absolute numbers on a
shared machine are noisy. On a CPU shared with other work, `--clock process` times each loop by
its own CPU time (with one thread, what other processes' load does not inflate).

    python -m benchmarks.bench_train_step --device cuda --resolution 64 --batch 256 --width 64
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np
import torch
from torch import nn

from gan_model.config import build_config
from gan_model.networks import build_networks
from gan_model.training import Hooks, RankData, train

# (architecture, resolution, width, batch, steps) for the CPU runs of `make bench`.
CPU_CASES = (("dcgan", 32, 32, 64, 40), ("dcgan", 64, 64, 64, 12), ("resnet_sngan", 32, 32, 64, 12))


def _config(arch: str, resolution: int, width: int, batch: int, steps: int, channels: int = 1):
    return build_config({}, [f"model.architecture={arch}", f"data.resolution={resolution}",
                             f"data.channels={channels}", f"model.g_width={width}", f"model.d_width={width}",
                             "model.z_dim=100", f"train.batch_size={batch}", f"train.steps={steps}",
                             f"train.log_every={steps}", f"train.checkpoint_every={10 * steps}",
                             "train.augment=off", "train.loss=non_saturating"])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


CLOCKS = {"wall": time.perf_counter, "process": time.process_time}


def ganflow_images_per_s(cfg, images: np.ndarray, warmup: int, device: torch.device, compile: bool,
                         clock=time.perf_counter) -> float:
    marks = {}

    def before(step: int) -> None:
        if step == warmup:
            _sync(device)
            marks["t0"] = clock()

    def report(metrics, ckpt) -> None:  # the final log step has already waited for the device
        marks.setdefault("t1", clock())

    train(cfg.model, cfg.train.recipe(), RankData(images, seed=0, batch_size=cfg.train.batch_size),
          log_every=cfg.train.log_every, checkpoint_every=cfg.train.checkpoint_every, device=device,
          compile=compile, hooks=Hooks(report=report, before_step=before))
    return (cfg.train.steps - warmup) * cfg.train.batch_size / (marks["t1"] - marks["t0"])


def baseline_images_per_s(cfg, images: np.ndarray, warmup: int, device: torch.device,
                          clock=time.perf_counter) -> float:
    """pytorch/examples dcgan/main.py's loop, with the same networks (logits + BCEWithLogits)."""
    torch.manual_seed(0)
    net_g, net_d = (m.to(device) for m in build_networks(cfg.model, cfg.data.channels, cfg.data.resolution))
    criterion = nn.BCEWithLogitsLoss()
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    b = cfg.train.batch_size
    data = torch.from_numpy(images)  # on the host, like a DataLoader's batches
    t0 = 0.0
    for i in range(cfg.train.steps):
        if i == warmup:
            _sync(device)
            t0 = clock()
        start = (i * b) % (len(data) - b)
        real = data[start:start + b].to(device).float().div_(127.5).sub_(1)
        net_d.zero_grad()
        label = torch.full((b,), 1.0, device=device)
        output = net_d(real)
        err_real = criterion(output, label)
        err_real.backward()
        d_x = output.sigmoid().mean().item()
        fake = net_g(torch.randn(b, cfg.model.z_dim, device=device))
        label.fill_(0.0)
        output = net_d(fake.detach())
        err_fake = criterion(output, label)
        err_fake.backward()
        d_g_z1 = output.sigmoid().mean().item()
        opt_d.step()
        net_g.zero_grad()
        label.fill_(1.0)
        output = net_d(fake)
        err_g = criterion(output, label)
        err_g.backward()
        d_g_z2 = output.sigmoid().mean().item()
        opt_g.step()
        _ = ((err_real + err_fake).item(), err_g.item(), d_x, d_g_z1, d_g_z2)  # what the example prints
    _sync(device)
    return (cfg.train.steps - warmup) * b / (clock() - t0)


def run(cases=CPU_CASES, repeats: int = 3, device: str = "cpu", compile: bool = False,
        channels: int = 1, warmup: int = 2, clock: str = "wall") -> list[dict]:
    device, timer = torch.device(device), CLOCKS[clock]
    rows = []
    for arch, resolution, width, batch, steps in cases:
        cfg = _config(arch, resolution, width, batch, steps, channels)
        images = np.random.default_rng(0).integers(0, 256, (batch * 8, channels, resolution, resolution),
                                                   dtype=np.uint8)
        ours, base = [], []
        for _ in range(repeats):
            ours.append(ganflow_images_per_s(cfg, images, warmup, device, compile, timer))
            base.append(baseline_images_per_s(cfg, images, warmup, device, timer))
        rows.append({"case": f"{arch} {resolution}x{resolution}x{channels}, width {width}, batch {batch}, "
                             f"{steps} steps, {device.type}{', compiled' if compile else ''}"
                             f"{', CPU time' if clock == 'process' else ''}",
                     "ganflow": statistics.median(ours), "baseline": statistics.median(base),
                     "ratio": statistics.median(ours) / statistics.median(base)})
    return rows


def to_markdown(rows: list[dict]) -> list[str]:
    lines = ["| case | ganflow img/s | plain loop img/s | ratio |", "|---|---|---|---|"]
    return lines + [f"| {r['case']} | {r['ganflow']:.0f} | {r['baseline']:.0f} | {r['ratio']:.2f}x |" for r in rows]


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--archs", default="dcgan,resnet_sngan")
    p.add_argument("--resolution", type=int, default=64)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10, help="steps not timed (cuDNN autotuning, compilation)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall", help="process: CPU time (shared CPUs)")
    p.add_argument("--cpu-cases", action="store_true", help="the CPU cases of `make bench` instead of one size")
    p.add_argument("--json", help="also write the rows to this file")
    a = p.parse_args(argv)
    cases = CPU_CASES if a.cpu_cases else [(arch, a.resolution, a.width, a.batch, a.steps)
                                           for arch in a.archs.split(",")]
    if a.device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # both loops: the example sets it too
    rows = run(cases, a.repeats, a.device, a.compile, 1 if a.cpu_cases else a.channels,
               2 if a.cpu_cases else a.warmup, a.clock)
    print("\n".join(to_markdown(rows)))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
