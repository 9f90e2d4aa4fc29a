"""The Prefect tasks: each step's function with its retry policy.

Whether a failure is retried is a property of its class (`gan_model.errors`):
a `GanflowError` is a problem the user must fix (missing bucket, bad
credentials, invalid weights file) and is not retried unless it is marked
`retryable` (TransientError, TrainingFailed); anything unexpected is.
"""

from __future__ import annotations

from prefect import task

from gan_model.config import GanflowConfig
from gan_model.errors import is_retryable
from tasks.types import DatasetVersion, EvalResult, Registration, TrainResult


def _retry_unless_user_error(task, task_run, state) -> bool:
    try:
        state.result()
    except BaseException as err:
        return is_retryable(err)
    return False


@task(name="ingest", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_user_error)
def ingest(cfg: GanflowConfig) -> DatasetVersion:
    from tasks.ingest import ingest_dataset
    return ingest_dataset(cfg.data)


@task(name="track", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_user_error)
def track(cfg: GanflowConfig, dataset: DatasetVersion, flow_run_id: str | None = None) -> str:
    # Opens (or, on a retry or re-run, continues) the MLflow run before training: its id.
    from tasks.tracking import open_run
    return open_run(cfg, dataset, flow_run_id)


@task(name="train", retries=1, retry_delay_seconds=5, retry_condition_fn=_retry_unless_user_error)
def train(cfg: GanflowConfig, dataset: DatasetVersion, mlflow_run_id: str | None = None) -> TrainResult:
    # A retry re-creates the trainer with the same run name: it resumes from
    # the latest checkpoint rather than starting over.
    from tasks.tracking import train_tracked
    return train_tracked(cfg, dataset, mlflow_run_id)


@task(name="evaluate", retries=1, retry_delay_seconds=5, retry_condition_fn=_retry_unless_user_error)
def evaluate(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult) -> EvalResult:
    from tasks.evaluate import evaluate_generator
    return evaluate_generator(cfg, dataset, trained)


@task(name="register", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_unless_user_error)
def register(cfg: GanflowConfig, dataset: DatasetVersion, trained: TrainResult, evaluation: EvalResult,
             mlflow_run_id: str | None = None) -> Registration:
    from tasks.register import register_generator
    return register_generator(cfg, dataset, trained, evaluation, mlflow_run_id)
