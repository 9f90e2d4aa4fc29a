"""`make bench`: run every benchmark (or those named: ingest, train, fid, scaling) and append the results to
benchmarks/RESULTS.md."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

import torch

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPUs ({cpu}), {gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main(which: list[str]) -> None:
    from benchmarks import bench_ingest

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines: list[str] = []
    if not which or "ingest" in which:
        lines += [f"\n## Ingest throughput, {stamp}\n",
                  f"Command: `make bench` (`python -m benchmarks.run ingest`). Machine: {machine()}. "
                  "5,000 MNIST PNGs (about 1.4 MB) on the local moto server, all measured in one run; "
                  "client CPU includes the decode processes.\n"]
        lines += bench_ingest.to_markdown(bench_ingest.run())
    if not which or "train" in which:
        lines += train_section(stamp)
    if not which or "fid" in which:
        from benchmarks import bench_fid
        lines += [f"\n## FID feature extraction, {stamp}\n",
                  f"Command: `make bench` (`python -m benchmarks.run fid`). Machine: {machine()}. "
                  "MNIST 28x28 digits (grey, expanded to RGB), the same calibrated random Inception "
                  "weights file for both, batch 32; ratio = torch-fidelity time / ganflow time.\n"]
        lines += bench_fid.to_markdown(bench_fid.run())
    if not which or "scaling" in which:
        from benchmarks import bench_scaling
        lines += [f"\n## Ray Train worker scaling, {stamp}\n",
                  f"Command: `make bench` (`python -m benchmarks.run scaling`). Machine: {machine()}. "
                  "DCGAN 32x32 width 32, global batch 128, all cores used in both runs, 120 steps.\n"]
        lines += bench_scaling.to_markdown(bench_scaling.run())
    text = "\n".join(lines) + "\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by `make bench`; "
                           "compare ratios, not absolute numbers (shared, noisy machines).\n")
    with RESULTS.open("a") as f:
        f.write(text)
    sys.stdout.write(text)


def train_section(stamp: str) -> list[str]:
    from benchmarks import bench_train_step

    rows = bench_train_step.run()
    lines = [f"\n## Training-step throughput, {stamp}\n",
             f"Command: `make bench` (`python -m benchmarks.run`). Machine: {machine()}.\n",
             "Single process; images/s is the median of 3 alternating runs; ratio = ganflow / baseline "
             "(the PyTorch examples' DCGAN loop on the same networks and batch).\n",
             "| case | ganflow img/s | baseline img/s | ratio |", "|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['ganflow']:.0f} | {r['baseline']:.0f} | {r['ratio']:.2f}x |" for r in rows]
    return lines


if __name__ == "__main__":
    main(sys.argv[1:])
