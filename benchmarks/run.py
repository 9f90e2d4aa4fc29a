"""`make bench`: run every benchmark (or those named: ingest, train, fid, scaling, scaling_model, ray_overhead,
pipeline, quality, quality_textures) and append the results to benchmarks/RESULTS.md."""

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


# name -> (title, what is measured); each module has run() and to_markdown(rows).
BENCHMARKS = {
    "train": ("Training-step throughput",
              "Single process; images/s is the median of 3 alternating runs; ratio = ganflow / plain loop "
              "(the PyTorch examples' DCGAN loop on the same networks and batch, same loss, no augmentation)."),
    "ingest": ("Ingest throughput",
               "5,000 MNIST PNGs (about 1.4 MB) on the local moto server, all measured in one run; "
               "client CPU includes the decode processes."),
    "fid": ("FID feature extraction",
            "MNIST 28x28 digits (grey, expanded to RGB), the same calibrated random Inception weights file "
            "for both, batch 32; ratio = torch-fidelity time / ganflow time."),
    "scaling": ("Ray Train worker scaling",
                "DCGAN 32x32 width 32, global batch 128, all cores used in both runs, 120 steps."),
    "scaling_model": ("Scaling to 1, 8 and 64 GPUs: a MODEL, not a measurement",
                      "Computed, not timed: parameters and FLOPs counted from gan_model.networks, the GPU and "
                      "network figures assumed (see the text below the command)."),
    "ray_overhead": ("Ray Train's fixed cost per training run, local instance",
                     "The smoke recipe (2 workers, 20 steps, a report every 5) on 256 digits, each run in a fresh "
                     "process, the two settings alternating; seconds of train_gan, Ray's start included; "
                     "ratio = Ray's defaults / setting (best runs)."),
    "pipeline": ("The whole pipeline, end to end",
                 "`make run`'s pipeline on the embedded default (local S3 server seeded with 5,000 MNIST digits, "
                 "local Ray, MLflow on SQLite, Prefect's ephemeral API), from a fresh state folder; task times "
                 "from Prefect's task runs."),
    "quality": ("Sample quality for the same training time",
                "MNIST (5,000 digits padded to 32x32), each model trained for the same wall-clock budget one after "
                "the other in one process; FID/KID of 2,048 samples against 2,048 digits."),
    "quality_textures": ("Sample quality for the same training time, texture set",
                         "The texture demo's crops (configs/textures.yaml), each model trained for the same "
                         "wall-clock budget one after the other in one process; FID/KID of 2,048 samples against "
                         "2,048 crops."),
}
MODULES = {"train": "bench_train_step", "ingest": "bench_ingest", "fid": "bench_fid", "scaling": "bench_scaling",
           "ray_overhead": "bench_ray_overhead", "pipeline": "bench_pipeline", "scaling_model": "scaling_model",
           "quality": "bench_quality", "quality_textures": "bench_quality"}
ARGS = {"quality_textures": {"dataset": "textures"}}  # run()'s arguments where not its defaults


def main(which: list[str]) -> None:
    import importlib

    unknown = set(which) - set(BENCHMARKS)
    if unknown:
        sys.exit(f"unknown benchmark(s) {sorted(unknown)}: choose from {sorted(BENCHMARKS)}")
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines: list[str] = []
    for name, (title, what) in BENCHMARKS.items():
        if which and name not in which:
            continue
        module = importlib.import_module(f"benchmarks.{MODULES[name]}")
        lines += [f"\n## {title}, {stamp}\n",
                  f"Command: `make bench` (`python -m benchmarks.run {name}`). Machine: {machine()}. {what}\n"]
        lines += module.to_markdown(module.run(**ARGS.get(name, {})))
    text = "\n".join(lines) + "\n"
    if not RESULTS.exists():
        RESULTS.write_text("# Benchmark results\n\nEach section is appended by `make bench`; "
                           "compare ratios, not absolute numbers (shared, noisy machines).\n")
    with RESULTS.open("a") as f:
        f.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
