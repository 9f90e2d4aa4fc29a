"""Ray Train's fixed cost per training run on the local instance, with Ray's defaults and with
ganflow's (tasks/ray_runtime.LOCAL_RAY_ENV: a health check every 0.5 s instead of 2 s, so
`ray.train.report` waits less for the controller to take the previous report; no preemption
watcher actor).

The smoke recipe (2 workers, 20 steps, a report every 5 and a checkpoint every 10) on 256
digits, each run in a fresh process (Ray reads these variables when it starts), the two settings
alternating. Seconds are `train_gan` from the call to its return, Ray's start included.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {
    "Ray's defaults (check every 2 s, preemption watcher)": {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2.0", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"},
    "ganflow's local instance (every 0.5 s, no watcher)": {
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"},
}


def one_run(dataset_dir: str, storage: str) -> float:
    """In this process: train the smoke recipe once; the seconds train_gan took."""
    import time

    from gan_model.config import load_config
    from tasks.ray_runtime import ray_session
    from tasks.train import train_gan
    from tasks.types import DatasetVersion

    cfg = load_config(ROOT / "configs" / "smoke.yaml", [f"train.storage_path={storage}"])
    ds = DatasetVersion(uri=dataset_dir, version="bench", n_images=256, resolution=16, channels=1)
    with ray_session():
        t0 = time.perf_counter()
        train_gan(cfg, ds)
        return time.perf_counter() - t0


def run(repeats: int = 2) -> list[dict]:
    import numpy as np
    from PIL import Image

    from gan_model.shards import ShardWriter
    from infra.sample_data import load_sample

    work = Path(tempfile.mkdtemp(prefix="ganflow-bench-ray-"))
    seconds: dict[str, list[float]] = {name: [] for name in SETTINGS}
    try:
        writer = ShardWriter(work / "ds", 4096, 1, 16)
        for img in load_sample("digits")[:256]:
            writer.add(np.asarray(Image.fromarray(img).resize((16, 16)))[None])
        writer.close(version="bench", skipped=[])
        code = ("import json, sys; from benchmarks.bench_ray_overhead import one_run; "
                "print(json.dumps(one_run(sys.argv[1], sys.argv[2])))")
        for i in range(repeats):
            for k, (name, env) in enumerate(SETTINGS.items()):
                out = subprocess.run([sys.executable, "-c", code, str(work / "ds"), str(work / f"ray-{k}-{i}")],
                                     env={**os.environ, **env, "PYTHONPATH": str(ROOT)}, cwd=work,
                                     capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    raise RuntimeError(f"{name}: the training run failed:\n{out.stderr[-3000:]}")
                seconds[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return [{"setting": name, "seconds": s} for name, s in seconds.items()]


def to_markdown(rows: list[dict]) -> list[str]:
    base = min(rows[0]["seconds"])
    lines = ["| Ray Train settings | train_gan seconds (each run) | best | vs Ray's defaults |", "|---|---|---|---|"]
    lines += [f"| {r['setting']} | {', '.join(f'{s:.1f}' for s in r['seconds'])} | {min(r['seconds']):.1f} | "
              f"{base / min(r['seconds']):.2f}x |" for r in rows]
    return lines


if __name__ == "__main__":
    print("\n".join(to_markdown(run())))
