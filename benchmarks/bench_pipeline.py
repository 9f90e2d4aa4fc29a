"""The whole pipeline as `make run` runs it (embedded S3 server, local Ray, MLflow on SQLite,
Prefect's ephemeral API), split into where the time goes; then the same run again with nothing
changed (the skip path a scheduled run takes); then `train_gan` alone on the same data set and
recipe, for the training throughput the pipeline costs. All in one process, one run.

The quickstart configuration with fewer steps (`steps`): start-up, ingest, evaluation and
registration do not depend on them, and the full run's training time follows from the
throughput.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path


def _task_seconds(flow_run_id: str) -> dict[str, float]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name.split(" ")[0]: r.total_run_time.total_seconds() for r in runs}


def run(steps: int = 200) -> list[dict]:
    from flows.environment import set_local_defaults
    from gan_model.config import load_config

    root = Path(__file__).resolve().parent.parent
    work = Path(tempfile.mkdtemp(prefix="ganflow-bench-pipeline-"))
    cwd = os.getcwd()
    os.chdir(work)  # a fresh state folder, as on a new machine
    try:
        set_local_defaults()
        from flows.pipeline import run_pipeline
        from gan_model.checkpoint import load_checkpoint
        from tasks.train import local_checkpoint, train_gan
        from tasks.types import DatasetVersion

        cfg = load_config(root / "configs" / "quickstart.yaml", [f"train.steps={steps}", f"train.log_every={steps // 5}",
                                                                  f"train.checkpoint_every={steps}"])
        t0 = time.perf_counter()
        first = run_pipeline(cfg)
        wall = time.perf_counter() - t0
        tasks = _task_seconds(first["flow_run_id"])
        t0 = time.perf_counter()
        skipped = run_pipeline(cfg)
        skip_wall = time.perf_counter() - t0
        assert skipped["skipped"], skipped
        history = load_checkpoint(local_checkpoint(first["checkpoint_uri"], cfg.data))["history"][1:]
        inside = statistics.median(m["images_per_s"] for m in history)

        # Evaluation against torch-fidelity extracting features of as many images, same weights.
        import numpy as np
        import torch
        import torch_fidelity

        from gan_model.shards import ShardedImages
        local = Path(cfg.data.processed_uri).resolve() / first["dataset_version"]
        weights = sorted((local / "fid-cache").glob("inception-random*.pth")) or [None]
        n = cfg.eval.n_generated
        x = torch.from_numpy(ShardedImages(local).take(np.arange(2 * n))).expand(-1, 3, -1, -1).contiguous()

        class Images(torch.utils.data.Dataset):
            def __init__(self, t):
                self.t = t

            def __len__(self):
                return len(self.t)

            def __getitem__(self, i):
                return self.t[i]
        t0 = time.perf_counter()
        torch_fidelity.calculate_metrics(input1=Images(x[:n]), input2=Images(x[n:]), fid=True, cuda=False,
                                         cache=False, verbose=False, batch_size=cfg.eval.batch_size,
                                         feature_extractor_weights_path=str(weights[0]) if weights[0] else None)
        fidelity_s = time.perf_counter() - t0

        # The same recipe alone, outside Prefect, on the data set the pipeline ingested.
        import ray
        ds = DatasetVersion(uri=str(Path(cfg.data.processed_uri).resolve() / first["dataset_version"]),
                            version=first["dataset_version"], n_images=first["n_images"],
                            resolution=cfg.data.resolution, channels=cfg.data.channels)
        alone_cfg = cfg.model_copy(deep=True)
        alone_cfg.train.storage_path = str(work / "alone")
        alone = train_gan(alone_cfg, ds)
        ray.shutdown()
        alone_ips = statistics.median(m["images_per_s"] for m in alone.history[1:])
    finally:
        os.chdir(cwd)
        shutil.rmtree(work, ignore_errors=True)
    overhead = wall - tasks.get("train", 0) - tasks.get("evaluate", 0)
    return [{"steps": steps, "wall": wall, "tasks": tasks, "overhead": overhead, "skip": skip_wall,
             "inside_ips": inside, "alone_ips": alone_ips, "fidelity_s": fidelity_s}]


def to_markdown(rows: list[dict]) -> list[str]:
    r = rows[0]
    t = r["tasks"]
    lines = [f"Quickstart configuration with train.steps={r['steps']}.", "",
             "| part | seconds |", "|---|---|"]
    lines += [f"| start-up before the flow's first task, and between tasks | "
              f"{r['wall'] - sum(t.values()):.1f} |"]
    lines += [f"| {name} task | {seconds:.1f} |" for name, seconds in t.items()]
    lines += [f"| **whole run** | {r['wall']:.1f} |",
              f"| everything except the train and evaluate tasks (goal: under 60 s) | {r['overhead']:.1f} |",
              f"| a second run with nothing changed (skipped; goal: under 30 s) | {r['skip']:.1f} |", "",
              "| training throughput | images/s |", "|---|---|",
              f"| inside the pipeline (median of reports) | {r['inside_ips']:.0f} |",
              f"| `train_gan` alone, same data set and recipe | {r['alone_ips']:.0f} |",
              f"| ratio | {r['inside_ips'] / r['alone_ips']:.2f}x |", "",
              "| evaluation | seconds |", "|---|---|",
              f"| the evaluate task (generation, features, FID/KID, grid; first run, nothing cached) | "
              f"{t.get('evaluate', 0):.1f} |",
              f"| torch-fidelity's feature extraction of the same number of images, same weights | "
              f"{r['fidelity_s']:.1f} |",
              f"| ratio | {t.get('evaluate', 0) / r['fidelity_s']:.2f}x |"]
    return lines
