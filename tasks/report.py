"""What the Prefect UI shows of a run: its name, tables, the summary and the sample grid.

Each function publishes one artifact of the current flow run; outside a run they do nothing.
The summary says what happened in a sentence, then the warnings, the promotion decision and its
reason, and links to where the results live.
"""

from __future__ import annotations

import datetime
import logging
from urllib.parse import quote

from tasks.types import DatasetVersion, Registration

log = logging.getLogger("ganflow.report")


def _in_flow_run() -> bool:
    from prefect.context import FlowRunContext
    return FlowRunContext.get() is not None


def name_flow_run(dataset: DatasetVersion) -> None:
    """Rename the running flow run after its data set version and the date, once ingest knows it."""
    if not _in_flow_run():
        return
    from prefect.client.orchestration import get_client
    from prefect.runtime import flow_run

    name = f"{dataset.version}-{datetime.datetime.now(datetime.timezone.utc):%Y%m%d-%H%M}"
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run.id, name=name)


def dataset_table(dataset: DatasetVersion) -> None:
    if not _in_flow_run():
        return
    from prefect.artifacts import create_table_artifact

    rows = [{"reason": "used", "files": dataset.n_images}] + [
        {"reason": reason, "files": n} for reason, n in sorted(dataset.skipped.items())]
    create_table_artifact(rows, key="ganflow-dataset", description=(
        f"Data set {dataset.version}: files used and skipped by reason (each skipped key and its "
        f"reason is listed in {dataset.uri}/index.json)"))


def metrics_table(history: list[dict], run_name: str) -> None:
    if not _in_flow_run() or not history:
        return
    from prefect.artifacts import create_table_artifact

    create_table_artifact([{k: round(v, 4) if isinstance(v, float) else v for k, v in m.items()} for m in history],
                          key="ganflow-training-metrics", description=f"{run_name}: training metrics per report")


def mlflow_links(registration: Registration) -> dict[str, str]:
    """Web links when the tracking server is reachable over HTTP, else how to open the UI."""
    uri = registration.tracking_uri
    if uri.startswith(("http://", "https://")):
        base = uri.rstrip("/")
        return {
            "MLflow run": f"{base}/#/experiments/{registration.experiment_id}/runs/{registration.mlflow_run_id}",
            "model version": f"{base}/#/models/{quote(registration.model_name)}/versions/{registration.model_version}",
            "MLflow UI": base,
        }
    return {"MLflow UI": f"`mlflow ui --backend-store-uri {uri}` (run {registration.mlflow_run_id})"}


def sample_grid(summary: dict) -> None:
    """The grid as an image when it has a URL (a tracking server serves the run's artifacts),
    else a link to the local file; the latent walk (GIF, MP4) is linked in its description."""
    if not _in_flow_run() or not summary.get("sample_grid"):
        return
    from prefect.artifacts import create_image_artifact, create_link_artifact

    uri = summary["tracking_uri"]
    walks = summary.get("latent_walks") or []
    if uri.startswith(("http://", "https://")):
        base = f"{uri.rstrip('/')}/get-artifact?run_uuid={summary['mlflow_run_id']}&path=samples/"
        walk = f"; a latent walk: [GIF]({base}latent_walk.gif), [MP4]({base}latent_walk.mp4)" if walks else ""
        create_image_artifact(f"{base}samples.png", key="ganflow-samples",
                              description=f"samples from the EMA generator{walk}")
    else:
        walk = f"; a latent walk: {', '.join(walks)}" if walks else ""
        create_link_artifact(f"file://{summary['sample_grid']}", link_text="samples.png", key="ganflow-samples",
                             description=f"samples from the EMA generator (a local file){walk}")


def summary_markdown(summary: dict, registration: Registration | None) -> None:
    if not _in_flow_run():
        return
    from prefect.artifacts import create_markdown_artifact

    lines = [f"# ganflow run {summary['dataset_version']}", ""]
    if summary.get("skipped"):
        lines += [f"**Skipped**: {summary['skip_reason']}", ""]
    else:
        fid = f"{summary['fid']:.4g}" if summary.get("fid") is not None else "-"
        lines += [f"Trained `{summary.get('train_run')}` for {summary.get('steps')} steps on "
                  f"{summary['n_images']} images ({summary['n_skipped']} skipped). FID {fid}, KID "
                  f"{summary.get('kid') or 0:.4g}.", ""]
    if registration is not None:
        alias = f"@{registration.alias}" if registration.alias else "no alias"
        lines += ["## Decision", "", f"`{registration.model_name}` v{registration.model_version} -> {alias}: "
                  f"{registration.reason}", ""]
        lines += ["## Links", ""] + [f"- {k}: {v}" for k, v in mlflow_links(registration).items()] + [""]
    if summary.get("warnings"):
        lines += ["## Warnings", ""] + [f"- {w}" for w in summary["warnings"]] + [""]
    lines += ["## Details", "", "| | |", "|---|---|"] + [
        f"| {k} | {v} |" for k, v in summary.items() if k not in ("warnings",) and v not in (None, "")]
    create_markdown_artifact("\n".join(lines), key="ganflow-summary", description="ganflow run summary")
