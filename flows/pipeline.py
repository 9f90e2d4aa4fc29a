"""The ganflow pipeline: one Prefect flow that only wires the four steps."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from gan_model.config import GanflowConfig
from tasks import steps


@flow(name="ganflow", log_prints=True)
def ganflow_pipeline(config: GanflowConfig | None = None) -> dict:
    cfg = config or GanflowConfig()
    run_id = str(flow_run.id) if flow_run.id else None
    dataset = steps.ingest(cfg)
    trained = steps.train(cfg, dataset)
    evaluation = steps.evaluate(cfg, dataset, trained)
    registration = steps.register(cfg, dataset, trained, evaluation, run_id)
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
