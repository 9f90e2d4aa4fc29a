"""The Prefect tasks: each step's function with its retry policy.

Whether a failure is retried is a property of its class (`gan_model.errors`):
a `GanflowError` is a problem the user must fix (missing bucket, bad
credentials, invalid weights file) and fails at once, unless it is marked
`retryable` (TransientError: network, 5xx, throttling, an MLflow outage;
TrainingFailed: a lost Ray worker after Ray's own restarts). Anything
unexpected is retried too. Retries back off exponentially with jitter, and
each step's time limit per attempt comes from the config (`*.timeout_s`),
applied by the flow with `with_options`.
"""

from __future__ import annotations

from prefect import task
from prefect.tasks import exponential_backoff

from gan_model.config import GanflowConfig
from gan_model.errors import is_retryable
from tasks.types import DatasetVersion, EvalResult, Registration, TrainResult

BACKOFF = {"retry_delay_seconds": exponential_backoff(backoff_factor=5), "retry_jitter_factor": 0.5}


def _retry_unless_user_error(task, task_run, state) -> bool:
    try:
        state.result()
    except BaseException as err:
        return is_retryable(err)
    return False


@task(name="ingest", task_run_name="ingest {cfg.data.source}", retries=3,
      retry_condition_fn=_retry_unless_user_error, **BACKOFF)
def ingest(cfg: GanflowConfig) -> DatasetVersion:
    from tasks.ingest import ingest_dataset
    return ingest_dataset(cfg.data)


@task(name="track", task_run_name="track {dataset.version}", retries=3,
      retry_condition_fn=_retry_unless_user_error, **BACKOFF)
def track(cfg: GanflowConfig, dataset: DatasetVersion, flow_run_id: str | None = None) -> str:
    # Opens (or, on a retry or re-run, continues) the MLflow run before training: its id.
    from tasks.tracking import open_run
    return open_run(cfg, dataset, flow_run_id)


@task(name="train", task_run_name="train {dataset.version}", retries=1,
      retry_condition_fn=_retry_unless_user_error, **BACKOFF)
def train(cfg: GanflowConfig, dataset: DatasetVersion, mlflow_run_id: str | None = None) -> TrainResult | None:
    # A retry re-creates the trainer with the same run name: it resumes from
    # the latest checkpoint rather than starting over. None: skipped (busy).
    from tasks.train import train_exclusively
    return train_exclusively(cfg, dataset, mlflow_run_id)


@task(name="evaluate", task_run_name="evaluate {trained.run_name}", retries=2,
      retry_condition_fn=_retry_unless_user_error, **BACKOFF)
def evaluate(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult) -> EvalResult:
    from tasks.evaluate import evaluate_generator
    return evaluate_generator(cfg, dataset, trained)


@task(name="register", task_run_name="register {cfg.registry.model_name}", retries=3,
      retry_condition_fn=_retry_unless_user_error, **BACKOFF)
def register(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult, evaluation: EvalResult,
             mlflow_run_id: str | None = None) -> Registration:
    from tasks.register import register_exclusively
    return register_exclusively(cfg, dataset, trained, evaluation, mlflow_run_id)


@task(name="find-registered", task_run_name="find registered {dataset.version}", retries=3,
      retry_condition_fn=_retry_unless_user_error, **BACKOFF)
def find_registered(cfg: GanflowConfig, dataset: DatasetVersion) -> Registration | None:
    """The version an earlier run registered for this data set version, recipe and protocol."""
    from tasks.register import find_registered as find
    return find(cfg, dataset)
