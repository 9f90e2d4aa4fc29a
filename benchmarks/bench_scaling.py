"""Ray Train throughput with 1 and 2 CPU workers at the same global batch.

Both runs use every core of the machine (1 worker x 2 torch threads, 2 workers x 1 thread),
the quickstart networks (DCGAN 32x32, width 32) and a global batch of 128. images/s is read
from the training history after the first report (start-up excluded).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def run(steps: int = 120) -> list[dict]:
    import numpy as np
    import ray
    from PIL import Image

    from gan_model.checkpoint import load_checkpoint
    from gan_model.config import build_config
    from gan_model.shards import ShardWriter
    from infra.sample_data import load_sample
    from tasks.train import train_gan
    from tasks.types import DatasetVersion

    work = Path(tempfile.mkdtemp(prefix="ganflow-bench-scaling-"))
    cores = os.cpu_count() or 2
    rows = []
    try:
        writer = ShardWriter(work / "ds", 4096, 1, 32)
        for img in load_sample("mnist")[:2048]:
            writer.add(np.asarray(Image.fromarray(img).resize((32, 32)))[None])
        writer.close(version="bench", skipped=[])
        ds = DatasetVersion(uri=str(work / "ds"), version="bench", n_images=2048, resolution=32, channels=1)
        for workers in (1, 2):
            cfg = build_config({}, [f"train.num_workers={workers}", f"train.batch_size={128 // workers}",
                                    f"train.threads_per_worker={max(1, cores // workers)}",
                                    f"train.steps={steps}", f"train.log_every={steps // 4}",
                                    f"train.checkpoint_every={steps}", f"train.storage_path={work / 'ray'}",
                                    f"train.seed={workers}"])
            result = train_gan(cfg, ds)
            history = load_checkpoint(result.checkpoint_uri)["history"][1:]
            ips = sum(m["images_per_s"] for m in history) / len(history)
            rows.append({"workers": workers, "per_worker_batch": 128 // workers, "img_s": ips})
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    return rows


def to_markdown(rows: list[dict]) -> list[str]:
    base = rows[0]["img_s"]
    lines = ["| workers | per-worker batch | images/s | vs 1 worker |", "|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['per_worker_batch']} | {r['img_s']:.0f} | {r['img_s'] / base:.2f}x |"
              for r in rows]
    return lines
