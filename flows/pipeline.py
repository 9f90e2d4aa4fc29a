"""The ganflow pipeline: one Prefect flow that only wires the four steps, and the two ways to
start it (once, or on a schedule) that the CLI and users call."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from gan_model.config import GanflowConfig
from tasks import steps
from tasks.ray_runtime import ray_session


@flow(name="ganflow", log_prints=True)
def ganflow_pipeline(config: GanflowConfig | None = None) -> dict:
    cfg = config or GanflowConfig()
    run_id = str(flow_run.id) if flow_run.id else None
    with ray_session():  # a local Ray instance started by a step ends with the run
        dataset = steps.ingest(cfg)
        mlflow_run_id = steps.track(cfg, dataset, run_id)  # one MLflow run, open before training
        trained = steps.train(cfg, dataset, mlflow_run_id)
        evaluation = steps.evaluate(cfg, dataset, trained)
        registration = steps.register(cfg, dataset, trained, evaluation, mlflow_run_id)
    summary = {
        "dataset_version": dataset.version, "n_images": dataset.n_images, "n_skipped": dataset.n_skipped,
        "fid": evaluation.fid, "kid": evaluation.kid, "kid_std": evaluation.kid_std,
        "fid_comparable": evaluation.comparable, "fid_weights_sha256": evaluation.protocol["weights_sha256"],
        "steps": trained.steps, "checkpoint_uri": trained.checkpoint_uri,
        "model_name": registration.model_name, "model_version": registration.model_version,
        "alias": registration.alias, "decision": registration.reason,
        "mlflow_run_id": registration.mlflow_run_id, "tracking_uri": registration.tracking_uri,
        "flow_run_id": run_id, "sample_grid": evaluation.sample_grid, "warnings": evaluation.warnings,
    }
    create_markdown_artifact(key="ganflow-summary", description="ganflow run summary", markdown="\n".join(
        ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in summary.items() if k != "warnings"]))
    return summary


def run_pipeline(cfg: GanflowConfig) -> dict:
    """The whole pipeline once, as `ganflow run` and `make run` start it.

    The source and the registry are checked before any compute, so a missing bucket, bad
    credentials or an unreachable server fail in seconds and nothing is registered.
    """
    from flows.environment import data_source, mlflow_ui_command, prefect_ui_command
    from tasks.ingest import check_source
    from tasks.registry import mlflow_client

    with data_source(cfg) as cfg:
        check_source(cfg.data)
        mlflow_client(cfg.registry)
        summary = ganflow_pipeline(config=cfg)
    return {**summary, "mlflow_ui": mlflow_ui_command(summary["tracking_uri"]), "prefect_ui": prefect_ui_command()}


def ingest_only(cfg: GanflowConfig) -> dict:
    """Step 1 alone (`ganflow ingest`): the DatasetVersion as a dict."""
    from flows.environment import data_source
    from tasks.ingest import ingest_dataset

    with data_source(cfg) as cfg:
        return ingest_dataset(cfg.data).model_dump()


def serve_pipeline(cfg: GanflowConfig, cron: str, name: str) -> None:
    """Serve a scheduled deployment of the flow from this process until interrupted."""
    import os

    from gan_model.errors import UsageError

    if not os.environ.get("PREFECT_API_URL"):
        raise UsageError("schedules need a Prefect server: start one (`ganflow services` or `prefect server start`) "
                         "and set PREFECT_API_URL=http://127.0.0.1:4200/api")
    from flows.environment import data_source

    with data_source(cfg) as cfg:
        ganflow_pipeline.serve(name=name, cron=cron, parameters={"config": cfg.model_dump(mode="json")})
