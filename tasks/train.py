"""Step 2, train: the plain training loop run by Ray Train's TorchTrainer.

Each worker trains on its own disjoint share of the shards; G and D are
wrapped by Ray's `prepare_model` (DDP over gloo on CPU, NCCL on GPU);
metrics and checkpoints go through `ray.train.report` into
`RunConfig(storage_path, name)`. The run is named after the data set version
and the training config hash, so a retried task or a re-run of the flow
resumes from that run's latest checkpoint instead of starting over.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from gan_model.config import GanflowConfig
from tasks.types import DatasetVersion, PipelineError, TrainingFailed, TrainResult

log = logging.getLogger("ganflow.train")

# Test-only fault injection: "STEP" makes rank 1 (or rank 0 alone) die hard once at that step.
FAULT_ENV = "GANFLOW_TEST_KILL_AT_STEP"


def storage(cfg: GanflowConfig):
    """(storage_path, filesystem) for Ray's RunConfig: local paths as they are, s3:// through
    pyarrow's S3 filesystem on the data endpoint (credentials from the AWS chain, not the config)."""
    path = cfg.train.storage_path
    if not path.startswith("s3://"):
        return str(Path(path).expanduser().resolve()), None
    from urllib.parse import urlparse

    import pyarrow.fs

    options = {}
    if cfg.data.endpoint_url:
        url = urlparse(cfg.data.endpoint_url)
        options.update(endpoint_override=url.netloc, scheme=url.scheme)
    if cfg.data.region:
        options["region"] = cfg.data.region
    return path[len("s3://"):].rstrip("/"), pyarrow.fs.S3FileSystem(**options)


def local_checkpoint(uri: str, cfg: GanflowConfig) -> Path:
    """A local folder with the checkpoint at `uri` (downloaded once when it lives in S3)."""
    if not uri.startswith("s3://"):
        return Path(uri)
    import hashlib

    from tasks.s3 import make_client, parse_s3_uri, s3_errors

    local = Path(cfg.data.cache_dir).expanduser().resolve() / "checkpoints" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (local / "checkpoint.pt").is_file():
        return local
    bucket, prefix = parse_s3_uri(uri.rstrip("/") + "/")
    client = make_client(cfg.data.endpoint_url, cfg.data.region)
    tmp = local.with_name(local.name + ".part")
    tmp.mkdir(parents=True, exist_ok=True)
    with s3_errors("download", uri, cfg.data.endpoint_url):
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                name = obj["Key"][len(prefix):]
                if name and "/" not in name:  # checkpoint folders are flat
                    client.download_file(bucket, obj["Key"], str(tmp / name))
    tmp.replace(local)
    return local


def run_name(cfg: GanflowConfig, dataset: DatasetVersion) -> str:
    return f"ganflow-{dataset.version}-{cfg.training_identity()}"


def _train_worker(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import warnings

    import torch
    import ray.train
    from ray.train.torch import prepare_model

    from gan_model.checkpoint import load_checkpoint
    from gan_model.shards import ShardedImages
    from gan_model.training import Hooks, RankData, train

    # broadcast_buffers=False is what we want for D (rank-local BatchNorm
    # statistics); torch's deprecation notice about it is not for users.
    warnings.filterwarnings("ignore", message=".*broadcast_buffers.*")
    # Ray Train logs every report at INFO from the worker; our own progress line says it shorter.
    logging.getLogger("ray.train.v2._internal.execution.context").setLevel(logging.WARNING)
    cfg = GanflowConfig.model_validate(config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    cpus = cfg.train.threads_per_worker or int(cfg.train.resources_per_worker.get("CPU", 1))
    torch.set_num_threads(max(1, cpus))
    device = ray.train.torch.get_device()

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(folder)
        if rank == 0:
            print(f"[ganflow] resuming {config['name']} from step {resume['step']}", flush=True)

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)
        if rank == 0 and "loss_d" in metrics:
            print(f"[ganflow] step {metrics['step']}/{cfg.train.steps} loss_d={metrics['loss_d']:.3f} "
                  f"loss_g={metrics['loss_g']:.3f} {metrics['images_per_s']:.0f} img/s", flush=True)

    def wrap(module, broadcast_buffers: bool = True):
        return prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": broadcast_buffers})

    kill_at = config.get("kill_at_step")
    marker = Path(config["kill_marker"]) if config.get("kill_marker") else None

    def before_step(step: int) -> None:
        if kill_at and marker and step == int(kill_at) and rank == min(1, world - 1) and not marker.exists():
            marker.touch()
            # Ray Train registers reported checkpoints on its health-check poll
            # (every 2 s by default): a crash within that window of a report
            # falls back to the previous checkpoint. Wait it out so the test
            # is deterministic about which checkpoint it resumes from.
            time.sleep(3 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", 2.0)))
            os._exit(17)  # a hard crash: no exception, no cleanup

    from tasks.datastore import materialize
    images = ShardedImages(materialize(config["dataset_uri"], cfg.data))  # per node, once for s3:// data
    data = RankData(images, cfg.train.seed, rank, world, cfg.train.batch_size)
    train(cfg, data, device=device, resume=resume, hooks=Hooks(report=report, wrap=wrap, before_step=before_step))


def _ensure_ray(num_cpus_needed: float) -> None:
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    # configure_logging=False: leave the driver's logging (and its handlers) to the CLI.
    quiet = {"log_to_driver": True, "configure_logging": False}
    if address:
        ray.init(address=address, **quiet)
    else:
        # A local instance sized to the machine (never fewer CPUs than the workers ask for).
        # With the dashboard (ray[default]) users can watch the workers at
        # http://127.0.0.1:8265, and Ray Train's cleanup actor can query actor state.
        ray.init(num_cpus=max(os.cpu_count() or 1, int(num_cpus_needed + 0.999)), **quiet)


class _Progress:
    """Rank 0's reports, relayed from Ray Train's controller to the driver through a Ray queue,
    shown as a Prefect progress artifact while training runs (when inside a Prefect run)."""

    def __init__(self, total: int, name: str):
        from ray.util.queue import Queue

        self.total, self.name, self.artifact = total, name, None
        self.queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        try:
            from prefect.artifacts import create_progress_artifact
            from prefect.context import get_run_context
            get_run_context()
            self.artifact = create_progress_artifact(0.0, key="training-progress",
                                                     description=f"{name}: optimisation steps done")
        except Exception:  # not inside a Prefect run: progress goes to the log only
            self.artifact = None

    def callback(self):
        from ray.train import UserCallback

        queue = self.queue

        class Relay(UserCallback):
            def after_report(self, run_context, metrics, checkpoint):
                if metrics and "step" in metrics[0]:
                    try:
                        queue.put_nowait(dict(metrics[0]))
                    except Exception:  # never let progress reporting break training
                        pass

        return Relay()

    def drain(self) -> None:
        latest = None
        while not self.queue.empty():
            latest = self.queue.get_nowait()
        if latest is None:
            return
        if self.artifact is not None:
            from prefect.artifacts import update_progress_artifact
            update_progress_artifact(self.artifact, 100.0 * min(1.0, latest["step"] / self.total))

    def close(self) -> None:
        import ray
        try:
            ray.kill(self.queue.actor)
        except Exception:
            pass


def _fit_watched(trainer, progress: _Progress, stop_ray_on_abort: bool):
    """trainer.fit() in a daemon thread while this one relays progress; Ctrl-C or SIGTERM
    (which arrive in this thread) stop the workers."""
    import threading

    import ray

    outcome: dict = {}

    def fit() -> None:
        try:
            outcome["result"] = trainer.fit()
        except BaseException as err:  # handed to the waiting thread
            outcome["error"] = err

    # A daemon thread: if we are interrupted, interpreter exit must not wait for it.
    thread = threading.Thread(target=fit, name="ganflow-fit", daemon=True)
    thread.start()
    try:
        while thread.is_alive():
            thread.join(timeout=2.0)
            progress.drain()
    except BaseException:
        if stop_ray_on_abort:
            ray.shutdown()  # a local instance: its workers go with it, no orphans
        raise
    finally:
        progress.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def train_gan(cfg: GanflowConfig, dataset: DatasetVersion) -> TrainResult:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    tc = cfg.train
    if dataset.n_images < tc.batch_size * tc.num_workers:
        raise PipelineError(
            f"the data set has {dataset.n_images} images, fewer than one global batch "
            f"({tc.batch_size} x {tc.num_workers} workers): lower train.batch_size or add images")
    resources = dict(tc.resources_per_worker) or {"CPU": 1}
    if tc.use_gpu:
        resources.setdefault("GPU", 1)
    _ensure_ray(resources.get("CPU", 1) * tc.num_workers)

    storage_path, filesystem = storage(cfg)
    name = run_name(cfg, dataset)
    progress = _Progress(tc.steps, name)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "dataset_uri": dataset.uri,
                           "name": name, "kill_at_step": os.environ.get(FAULT_ENV),
                           # once per storage location and run: the restarted worker must live
                           "kill_marker": str(Path(tempfile.gettempdir()) / "ganflow-kill-{}.marker".format(
                               abs(hash((storage_path, name))))) if os.environ.get(FAULT_ENV) else None},
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            # Ray Train's per-report INFO lines stay in its log files; our
            # progress lines (print on rank 0) still reach the console.
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=[progress.callback()]),
    )
    log.info("training %s: %d workers, %d steps, global batch %d", name, tc.num_workers, tc.steps,
             tc.batch_size * tc.num_workers)
    try:
        result = _fit_watched(trainer, progress, stop_ray_on_abort=not os.environ.get("RAY_ADDRESS"))
    except Exception as err:  # TrainingFailedError carries the worker's traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingFailed(f"training failed after {tc.max_failures} restarts: {first}: "
                            f"see the worker log above; the run resumes from its last checkpoint "
                            f"when started again") from err
    if result.checkpoint is None:
        raise PipelineError("training finished without a checkpoint: check train.checkpoint_every")
    metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    uri = f"s3://{result.checkpoint.path}" if filesystem is not None else result.checkpoint.path
    return TrainResult(checkpoint_uri=uri, run_name=name,
                       steps=int(metrics.get("step", tc.steps)), metrics=metrics)
