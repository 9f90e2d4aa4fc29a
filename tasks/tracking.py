"""The MLflow run of a pipeline run: opened before training, fed live while it trains, finished by
the register step.

The run is keyed by the training run it records (`ganflow.train_run`: the data set version and
the training recipe, as Ray Train names it), so a retried task, or a re-run of the flow on the
same data and recipe, continues the same MLflow run instead of opening a second one.

- `open_run`: params (the flattened config, which cannot hold credentials), the data set as an
  input, the resolved config and the ingest report as artifacts.
- `train_tracked`: training with rank 0's reports logged from the driver as they arrive (real
  timestamps), a sample grid of the EMA generator per checkpoint (`log_image(key="samples",
  step=...)`), and MLflow's system metrics of the driver's machine.
"""

from __future__ import annotations

import logging
import time

from gan_model.config import GanflowConfig, flat_params, to_yaml
from tasks.registry import mlflow_client
from tasks.types import DatasetVersion, TrainResult

log = logging.getLogger("ganflow.tracking")

RUN_KEY_TAG = "ganflow.train_run"
INPUT_TAG = "ganflow.input_logged"
GRID_KEY = "samples"


def _q(value: str) -> str:
    return value.replace("'", "\\'")


def open_run(cfg: GanflowConfig, dataset: DatasetVersion, flow_run_id: str | None = None) -> str:
    """Find or create the MLflow run of this training run, mark it RUNNING, and log what is known
    before training. Returns its id."""
    from mlflow.entities import Param, RunStatus

    from tasks.train import run_name

    client, exp_id, _ = mlflow_client(cfg.registry)
    name = run_name(cfg, dataset)
    runs = client.search_runs([exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{_q(name)}'", max_results=1,
                              order_by=["attributes.start_time DESC"])
    if runs:
        run = runs[0]
        if run.info.status != RunStatus.to_string(RunStatus.RUNNING):
            client.update_run(run.info.run_id, status="RUNNING")
    else:
        run = client.create_run(exp_id, run_name=name, tags={
            RUN_KEY_TAG: name, "ganflow.dataset_version": dataset.version,
            "ganflow.training_identity": cfg.training_identity()})
    run_id = run.info.run_id
    if flow_run_id:
        client.set_tag(run_id, "prefect.flow_run_id", flow_run_id)

    # MLflow params are write-once: a re-run with other runtime settings keeps the first values
    # (its own resolved config is the config.yaml artifact).
    params = {k: v[:6000] for k, v in flat_params(cfg).items()}
    changed = sorted(k for k, v in params.items() if k in run.data.params and run.data.params[k] != v)
    if changed:
        log.info("MLflow run %s keeps its first values of %s; this run's settings are in config.yaml",
                 run_id, ", ".join(changed))
    new = [Param(k, v) for k, v in params.items() if k not in run.data.params]
    for i in range(0, len(new), 100):
        client.log_batch(run_id, params=new[i:i + 100])
    client.log_text(run_id, to_yaml(cfg), "config.yaml")
    client.log_dict(run_id, ingest_report(cfg, dataset), "ingest/report.json")
    if run.data.tags.get(INPUT_TAG) != "1":
        _log_dataset_input(client, run_id, cfg, dataset)
    return run_id


def ingest_report(cfg: GanflowConfig, dataset: DatasetVersion) -> dict:
    """The data set version with every skipped file and its reason (from the version's index)."""
    from tasks.datastore import read_published_index

    report = {"source": cfg.data.source, **dataset.model_dump()}
    try:
        index = read_published_index(dataset.uri, cfg.data) or {}
    except Exception as err:  # the report is worth having, not worth failing a run for
        log.warning("could not read the index of %s: %s", dataset.uri, err)
        index = {}
    report["skipped_files"] = index.get("skipped", [])
    return report


def _log_dataset_input(client, run_id: str, cfg: GanflowConfig, dataset: DatasetVersion) -> None:
    from mlflow.entities import DatasetInput, InputTag

    try:
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset
        ds = MetaDataset(resolve_dataset_source(cfg.data.source), name=cfg.data.source, digest=dataset.version)
        client.log_inputs(run_id, [DatasetInput(ds._to_mlflow_entity(), [InputTag("mlflow.data.context", "training")])])
        client.set_tag(run_id, INPUT_TAG, "1")
    except Exception as err:  # lineage is nice to have, never worth failing a run for
        log.warning("could not log the data set input: %s", err)


class TrainingLog:
    """Rank 0's reports as the driver receives them (`train_gan(on_report=...)`): metrics with the
    time rank 0 reported them, and a sample grid of the EMA generator at every checkpoint. A
    failure here never stops training: what was missed is logged by `catch_up` afterwards."""

    def __init__(self, cfg: GanflowConfig, run_id: str):
        self.client, _, self.tracking_uri = mlflow_client(cfg.registry)
        self.cfg, self.run_id = cfg, run_id
        history = self.client.get_metric_history(run_id, "train/loss_d")
        self.logged_up_to = max((m.step for m in history), default=0)  # a resumed run logs no step twice
        self.grids = 0
        self.warned = False

    def __call__(self, metrics: dict, checkpoint_uri: str | None) -> None:
        try:
            self._log(metrics, checkpoint_uri)
        except Exception as err:
            if not self.warned:
                log.warning("live logging to MLflow failed (%s: %s); the history is logged after training",
                            type(err).__name__, err)
                self.warned = True

    def _log(self, metrics: dict, checkpoint_uri: str | None) -> None:
        from mlflow.entities import Metric

        step = int(metrics["step"])
        ms = int(1000 * metrics.get("timestamp", time.time()))
        if step > self.logged_up_to:
            self.client.log_batch(self.run_id, metrics=[
                Metric(f"train/{k}", float(v), ms, step) for k, v in metrics.items()
                if k not in ("step", "timestamp") and isinstance(v, (int, float))])
            self.logged_up_to = step
        if checkpoint_uri:
            self._grid(checkpoint_uri, step, ms)

    def _grid(self, checkpoint_uri: str, step: int, ms: int) -> None:
        import tempfile
        from pathlib import Path

        from gan_model.checkpoint import CHECKPOINT_FILE, ema_generator
        from gan_model.images import make_grid
        from gan_model.sampling import generate, latents_for_seeds
        from tasks.storage import fetch_folder_once, is_s3

        ev = self.cfg.eval
        if is_s3(checkpoint_uri):  # a temporary copy: the cache would keep every checkpoint of the run
            with tempfile.TemporaryDirectory(prefix="ganflow-grid-") as tmp:
                g = ema_generator(fetch_folder_once(checkpoint_uri, Path(tmp) / "ckpt", self.cfg.data,
                                                    names=[CHECKPOINT_FILE]))
        else:
            g = ema_generator(checkpoint_uri)
        # The seeds of the evaluation's grid: the same images, step after step.
        grid = make_grid(generate(g, latents_for_seeds(range(ev.seed, ev.seed + ev.grid_size), g.z_dim)))
        self.client.log_image(self.run_id, grid[:, :, 0] if grid.shape[2] == 1 else grid, key=GRID_KEY,
                              step=step, timestamp=ms)
        self.grids += 1

    def catch_up(self, trained: TrainResult) -> None:
        """Log the steps the live log missed (an outage, a run trained before this MLflow run
        existed), and the final grid when the run has none."""
        from mlflow.entities import Metric

        from gan_model.checkpoint import load_checkpoint
        from tasks.train import local_checkpoint

        history = trained.history or load_checkpoint(local_checkpoint(trained.checkpoint_uri, self.cfg.data)).get(
            "history", [])
        ms = int(1000 * time.time())
        missing = [Metric(f"train/{k}", float(v), ms, int(m["step"])) for m in history
                   if int(m["step"]) > self.logged_up_to for k, v in m.items() if k != "step"]
        for i in range(0, len(missing), 900):
            self.client.log_batch(self.run_id, metrics=missing[i:i + 900])
        if missing:
            self.logged_up_to = max(m.step for m in missing)
        if not self.grids and not self.client.list_artifacts(self.run_id, "images"):
            self._grid(trained.checkpoint_uri, trained.steps, ms)


def train_tracked(cfg: GanflowConfig, dataset: DatasetVersion, run_id: str | None, **train_kwargs) -> TrainResult:
    """`train_gan` logging into MLflow run `run_id` while it trains (see TrainingLog), with system
    metrics of this machine; a failure marks the run FAILED (a retry marks it RUNNING again)."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    from tasks.train import train_gan

    if run_id is None:
        return train_gan(cfg, dataset, **train_kwargs)
    live = TrainingLog(cfg, run_id)
    live.client.update_run(run_id, status="RUNNING")
    monitor = SystemMetricsMonitor(run_id, resume_logging=True, tracking_uri=live.tracking_uri)
    monitor.start()
    try:
        trained = train_gan(cfg, dataset, on_report=live, **train_kwargs)
    except BaseException as err:
        try:
            live.client.set_terminated(run_id, "FAILED" if isinstance(err, Exception) else "KILLED")
        except Exception:  # the tracking server may be what failed: the training error is the news
            pass
        raise
    finally:
        monitor.finish()
    live.catch_up(trained)
    return trained
