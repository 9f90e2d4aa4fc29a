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
import sys
from pathlib import Path
from typing import Callable

from gan_model.checkpoint import CHECKPOINT_FILE
from gan_model.config import DataConfig, GanflowConfig
from gan_model.errors import GanflowError, TrainingFailed
from tasks.ray_runtime import ensure_ray, kill_local_actors
from tasks.storage import is_s3, local_folder
from tasks.types import DatasetVersion, TrainResult

log = logging.getLogger("ganflow.train")


def storage(cfg: GanflowConfig):
    """(storage_path, filesystem) for Ray's RunConfig: local paths as they are, s3:// through
    pyarrow's S3 filesystem on the data endpoint (credentials from the AWS chain, not the config)."""
    path = cfg.train.storage_path
    if not is_s3(path):
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


def local_checkpoint(uri: str, data: DataConfig) -> Path:
    """A local folder with the checkpoint at `uri` (downloaded once when it lives in S3)."""
    return local_folder(uri, data, "checkpoints", marker=CHECKPOINT_FILE)


def run_name(cfg: GanflowConfig, dataset: DatasetVersion) -> str:
    return f"ganflow-{dataset.version}-{cfg.training_identity()}"


def say(line: str) -> None:
    """A progress line from a worker, once, on its stderr (Ray relays it to the driver's). Not
    print(): Ray Train replaces it on its workers with one that writes the line twice, to the
    original stream and through the root logger's console handler."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _train_worker(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import time
    import warnings

    import torch
    import ray.train
    from ray.train.torch import prepare_model

    from gan_model.checkpoint import load_checkpoint
    from gan_model.config import ModelConfig, TrainRecipe
    from gan_model.shards import ShardedImages
    from gan_model.training import Hooks, RankData, train
    from tasks.datastore import materialize

    # broadcast_buffers=False is what we want for D (rank-local BatchNorm
    # statistics); torch's deprecation notice about it is not for users.
    warnings.filterwarnings("ignore", message=".*broadcast_buffers.*")
    # Ray Train logs every report at INFO from the worker, on a logger named after its file (so
    # neither LoggingConfig nor the "ray.train" logger reaches it); our progress line says it shorter.
    from ray.train.v2._internal.execution import context as train_context
    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    recipe = TrainRecipe.model_validate(config["recipe"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = load_checkpoint(folder)
        if rank == 0:
            say(f"[ganflow] resuming {config['name']} from step {resume['step']}")

    def report(metrics: dict, checkpoint_dir: str | None) -> None:
        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        # When rank 0 measured them: the driver logs them later, with this time.
        ray.train.report({**metrics, "timestamp": time.time()}, checkpoint=ckpt)
        if rank == 0 and "loss_d" in metrics:
            say(f"[ganflow] step {metrics['step']}/{recipe.steps} loss_d={metrics['loss_d']:.3f} "
                f"loss_g={metrics['loss_g']:.3f} {metrics['images_per_s']:.0f} img/s")

    def wrap(module, broadcast_buffers: bool = True):
        return prepare_model(module, parallel_strategy_kwargs={"broadcast_buffers": broadcast_buffers})

    # Per node, once for s3:// data.
    images = ShardedImages(materialize(config["dataset_uri"], DataConfig.model_validate(config["data"])))
    data = RankData(images, recipe.seed, rank, world, recipe.batch_size)
    hooks = Hooks(report=report, wrap=wrap)
    if config["before_step"] is not None:
        hooks.before_step = config["before_step"]
    train(ModelConfig.model_validate(config["model"]), recipe, data, log_every=config["log_every"],
          checkpoint_every=config["checkpoint_every"], device=device, resume=resume, hooks=hooks,
          compile=config["compile"])


class _Progress:
    """Rank 0's reports, relayed from Ray Train's controller to the driver through a Ray queue:
    each is handed to `on_report(metrics, checkpoint_uri)` on the driver, in order (MLflow logging
    lives there, not on the workers), and the latest is shown as a Prefect progress artifact while
    training runs (when inside a Prefect run)."""

    def __init__(self, total: int, name: str, on_report: Callable[[dict, str | None], None] | None = None,
                 s3_storage: bool = False):
        from ray.util.queue import Queue

        self.total, self.name, self.artifact, self.on_report = total, name, None, on_report
        self.queue = Queue(maxsize=10_000, actor_options={"num_cpus": 0})
        self.s3_storage = s3_storage
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

        queue, s3_storage = self.queue, self.s3_storage

        class Relay(UserCallback):
            def after_report(self, run_context, metrics, checkpoint):
                if metrics and "step" in metrics[0]:
                    path = None
                    if checkpoint is not None:  # already persisted to storage when this is called
                        path = f"s3://{checkpoint.path}" if s3_storage else checkpoint.path
                    try:
                        queue.put_nowait((dict(metrics[0]), path))
                    except Exception:  # never let progress reporting break training
                        pass

        return Relay()

    def drain(self) -> None:
        latest = None
        while not self.queue.empty():
            latest, checkpoint = self.queue.get_nowait()
            if self.on_report is not None:
                self.on_report(latest, checkpoint)
        if latest is None:
            return
        if self.artifact is not None:
            from prefect.artifacts import update_progress_artifact
            update_progress_artifact(self.artifact, 100.0 * min(1.0, latest["step"] / self.total))

    def close(self) -> None:
        import ray
        try:
            self.drain()  # the last reports (the final checkpoint) arrive as fit() returns
        except Exception as err:
            log.warning("could not relay the last training reports: %s", err)
        try:
            ray.kill(self.queue.actor)
        except Exception:
            pass


def _fit_watched(trainer, progress: _Progress):
    """trainer.fit() in a daemon thread while this one relays progress. Ctrl-C or SIGTERM arrive
    in this thread and unwind to the enclosing `ray_session()`, which stops the workers."""
    import threading

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
    except BaseException:  # interrupted: get the fit thread out of Ray before Ray is shut down
        if kill_local_actors("TrainController"):
            log.warning("interrupted: stopped the training run; it resumes from its last checkpoint")
            thread.join(timeout=30)
        raise
    finally:
        progress.close()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def train_exclusively(cfg: GanflowConfig, dataset: DatasetVersion,
                      mlflow_run_id: str | None = None) -> TrainResult | None:
    """train_gan, never twice at once for one run name (data set version and recipe) across flow
    runs: a second run waits for the first and then finds its checkpoint, or with
    train.if_busy=skip returns None at once. Once it holds the run, training logs into MLflow run
    `mlflow_run_id` (tasks.tracking.train_tracked)."""
    from tasks.locks import exclusive, limit_name
    from tasks.tracking import train_tracked

    with exclusive(limit_name("train", run_name(cfg, dataset)), wait=cfg.train.if_busy == "wait") as held:
        return train_tracked(cfg, dataset, mlflow_run_id) if held else None


def train_gan(cfg: GanflowConfig, dataset: DatasetVersion, *,
              before_step: Callable[[int], None] | None = None,
              on_report: Callable[[dict, str | None], None] | None = None) -> TrainResult:
    """Train (or resume, or find finished) the run named after the data set and the recipe.

    `before_step(step)` runs on every worker before each step (fault injection, profiling); it
    is shipped to the workers by value, so it must be picklable. `on_report(metrics,
    checkpoint_uri)` runs on the driver for each of rank 0's reports, in order.
    """
    tc = cfg.train
    if dataset.n_images < tc.batch_size * tc.num_workers:
        raise GanflowError(
            f"the data set has {dataset.n_images} images, fewer than one global batch "
            f"({tc.batch_size} x {tc.num_workers} workers): lower train.batch_size or add images")
    resources = dict(tc.resources_per_worker) or {"CPU": 1}
    if tc.use_gpu:
        resources.setdefault("GPU", 1)
    ensure_ray(resources.get("CPU", 1) * tc.num_workers, dashboard=tc.dashboard)  # before Ray is imported
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = storage(cfg)
    name = run_name(cfg, dataset)
    progress = _Progress(tc.steps, name, on_report, s3_storage=filesystem is not None)
    trainer = TorchTrainer(
        _train_worker,
        # The workers get the recipe and model settings they compute with, where the data set
        # is, and how often to report: no registry or checkpoint-storage settings.
        train_loop_config={"recipe": tc.recipe().model_dump(mode="json"),
                           "model": cfg.model.model_dump(mode="json"),
                           "data": cfg.data.model_dump(mode="json"), "dataset_uri": dataset.uri,
                           "log_every": tc.log_every, "checkpoint_every": tc.checkpoint_every,
                           "compile": tc.compile,
                           "threads": max(1, tc.threads_per_worker or int(resources.get("CPU", 1))),
                           "name": name, "before_step": before_step},
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                     resources_per_worker=resources),
        run_config=RunConfig(
            name=name, storage_path=storage_path, storage_filesystem=filesystem,
            checkpoint_config=CheckpointConfig(num_to_keep=tc.keep_checkpoints),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            # Ray Train's own INFO lines stay in its log files; our progress
            # lines (say() on rank 0) still reach the console.
            logging_config=LoggingConfig(log_level="WARNING"),
            callbacks=[progress.callback()]),
    )
    log.info("training %s: %d workers, %d steps, global batch %d", name, tc.num_workers, tc.steps,
             tc.batch_size * tc.num_workers)
    try:
        result = _fit_watched(trainer, progress)
    except Exception as err:  # TrainingFailedError carries the worker's traceback
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TrainingFailed(f"training failed after {tc.max_failures} restarts: {first}: "
                            f"see the worker log above; the run resumes from its last checkpoint "
                            f"when started again") from err
    if result.checkpoint is None:
        raise GanflowError("training finished without a checkpoint: check train.checkpoint_every")
    metrics = {k: float(v) for k, v in (result.metrics or {}).items()
               if isinstance(v, (int, float)) and k != "timestamp"}
    uri = f"s3://{result.checkpoint.path}" if filesystem is not None else result.checkpoint.path
    from gan_model.checkpoint import load_checkpoint
    history = load_checkpoint(local_checkpoint(uri, cfg.data)).get("history", [])  # every report, resumes included
    return TrainResult(checkpoint_uri=uri, run_name=name, steps=int(metrics.get("step", tc.steps)),
                       metrics=metrics, history=history)
