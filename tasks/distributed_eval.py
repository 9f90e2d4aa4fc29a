"""Generated-image statistics on the Ray workers: each worker its share of the seeds.

Worker i generates seeds [seed + start_i, seed + start_i + n_i) and returns mergeable
FeatureStats (count, sum, sum of outer products in float64, plus the first kept features);
merging in shard order gives the single-pass statistics up to float rounding, whatever the
number of workers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gan_model.config import GanflowConfig
from gan_model.fid import FeatureStats

log = logging.getLogger("ganflow.evaluate")


def _shard_stats(generator: bytes, weights: bytes, start: int, count: int, seed: int, batch: int, keep: int,
                 threads: int, use_gpu: bool) -> FeatureStats:
    import tempfile

    import torch

    from gan_model.checkpoint import load_generator
    from gan_model.evaluation import stats_of
    from gan_model.inception import InceptionFeatures
    from gan_model.sampling import generate_batches

    torch.set_num_threads(max(1, threads))
    device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory(prefix="ganflow-eval-") as tmp:
        (Path(tmp) / "generator.pt").write_bytes(generator)
        (Path(tmp) / "weights.pth").write_bytes(weights)
        g = load_generator(Path(tmp) / "generator.pt", map_location=device)
        net = InceptionFeatures(Path(tmp) / "weights.pth", device=device, batch_size=batch)
        return stats_of(net, generate_batches(g, count, seed + start, batch), keep)


def shards(n: int, workers: int) -> list[tuple[int, int]]:
    """(start, count) of each worker's contiguous share of n seeds."""
    base, extra = divmod(n, workers)
    out, start = [], 0
    for i in range(workers):
        count = base + (1 if i < extra else 0)
        if count:
            out.append((start, count))
        start += count
    return out


def generated_stats_on_ray(cfg: GanflowConfig, generator_path: Path, weights_path: Path, keep: int,
                           workers: int) -> FeatureStats:
    from tasks.ray_runtime import ensure_ray

    tc, ev = cfg.train, cfg.eval
    cpus = float(tc.resources_per_worker.get("CPU", 1))
    ensure_ray(cpus * workers, dashboard=tc.dashboard)  # before Ray is imported
    import ray
    remote = ray.remote(num_cpus=cpus, num_gpus=1 if tc.use_gpu else 0)(_shard_stats)
    generator_ref = ray.put(Path(generator_path).read_bytes())
    weights_ref = ray.put(Path(weights_path).read_bytes())  # one copy in the object store
    parts = ray.get([remote.remote(generator_ref, weights_ref, start, count, ev.seed, ev.batch_size, keep,
                                   int(tc.threads_per_worker or cpus), tc.use_gpu)
                     for start, count in shards(ev.n_generated, workers)])
    log.info("generated statistics from %d Ray workers", len(parts))
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    return merged
