"""The ganflow pipeline: one Prefect flow that only wires the four steps, and the two ways to
start it (once, or on a schedule) that the CLI and users call."""

from __future__ import annotations

import logging

from prefect import flow, get_run_logger
from prefect.runtime import flow_run

from gan_model.config import GanflowConfig
from tasks import report, steps
from tasks.ray_runtime import ray_session


def _first_name() -> str:
    """The flow run's name until ingest knows the data set version (then `<version>-<date>`)."""
    from prefect.runtime import flow_run as current
    cfg = current.parameters.get("config") or {}
    source = cfg.get("data", {}).get("source") if isinstance(cfg, dict) else cfg.data.source
    return f"ingesting {source or GanflowConfig().data.source}"


@flow(name="ganflow", flow_run_name=_first_name, log_prints=True)
def ganflow_pipeline(config: GanflowConfig | None = None, force: bool = False) -> dict:
    """S3 images in, an evaluated, registered generator out. `force` trains and registers even
    when an earlier run already did for this data set version, recipe and protocol."""
    cfg = config or GanflowConfig()
    run_id = str(flow_run.id) if flow_run.id else None
    # ganflow's loggers reach the run's logs (PREFECT_LOGGING_EXTRA_LOGGERS) at INFO, also in a
    # flow-run process that Prefect started, where nothing else configured them.
    if logging.getLogger("ganflow").level == logging.NOTSET:
        logging.getLogger("ganflow").setLevel(logging.INFO)
    with ray_session():  # a local Ray instance started by a step ends with the run
        dataset = steps.ingest.with_options(timeout_seconds=cfg.data.timeout_s)(cfg)
        report.name_flow_run(dataset)
        report.dataset_table(dataset)
        summary = {"dataset_version": dataset.version, "n_images": dataset.n_images,
                   "n_skipped": dataset.n_skipped, "flow_run_id": run_id, "skipped": False}
        if cfg.registry.skip_unchanged and not force:
            found = steps.find_registered(cfg, dataset)
            if found is not None:
                return _finish({**summary, **_registration_fields(found), "skipped": True,
                                "skip_reason": f"{found.model_name} v{found.model_version} was registered from "
                                               f"this data set version, recipe and protocol (run with --force "
                                               f"to train again)"}, found)
        mlflow_run_id = steps.track(cfg, dataset, run_id)  # one MLflow run, open before training
        trained = steps.train.with_options(timeout_seconds=cfg.train.timeout_s)(cfg, dataset, mlflow_run_id)
        if trained is None:
            return _finish({**summary, "skipped": True, "skip_reason": "another flow run is training this data "
                            "set and recipe (train.if_busy=skip)"}, None)
        report.metrics_table(trained.history, trained.run_name)
        evaluation = steps.evaluate.with_options(timeout_seconds=cfg.eval.timeout_s)(cfg, dataset, trained)
        # Re-evaluating the champion under a new protocol is an evaluation inside the register step.
        register_s = cfg.registry.timeout_s + (cfg.eval.timeout_s if cfg.registry.reevaluate_champion else 0)
        registration = steps.register.with_options(timeout_seconds=register_s)(
            cfg, dataset, trained, evaluation, mlflow_run_id)
    return _finish({
        **summary, **_registration_fields(registration),
        "fid": evaluation.fid, "kid": evaluation.kid, "kid_std": evaluation.kid_std,
        "fid_comparable": evaluation.comparable, "fid_weights_sha256": evaluation.protocol["weights_sha256"],
        "steps": trained.steps, "train_run": trained.run_name, "checkpoint_uri": trained.checkpoint_uri,
        "sample_grid": evaluation.sample_grid, "latent_walks": evaluation.latent_walks, "warnings": evaluation.warnings,
    }, registration)


def _registration_fields(r) -> dict:
    return {"model_name": r.model_name, "model_version": r.model_version, "alias": r.alias, "decision": r.reason,
            "mlflow_run_id": r.mlflow_run_id, "tracking_uri": r.tracking_uri, "fid": r.fid, "kid": r.kid}


def _finish(summary: dict, registration) -> dict:
    """Publish what the UI shows, log the outcome in a sentence, and return the summary."""
    log = get_run_logger()
    if summary.get("skipped"):
        log.info("skipped: %s", summary["skip_reason"])
    elif registration is not None:
        log.info("registered %s v%s -> %s (%s)", registration.model_name, registration.model_version,
                 registration.alias or "no alias", registration.reason)
    for w in summary.get("warnings", []):
        log.warning(w)
    report.summary_markdown(summary, registration)
    report.sample_grid(summary)
    return summary


def run_pipeline(cfg: GanflowConfig, force: bool = False) -> dict:
    """The whole pipeline once, as `ganflow run` and `make run` start it.

    The source and the registry are checked before any compute, so a missing bucket, bad
    credentials or an unreachable server fail in seconds and nothing is registered.
    """
    from flows.environment import data_source, flow_api, mlflow_ui_command, outside_systems_summary, prefect_ui_command
    from tasks.ingest import check_source
    from tasks.registry import mlflow_client

    logging.getLogger("ganflow").info("environment: %s", outside_systems_summary())
    with data_source(cfg) as cfg:
        check_source(cfg.data)
        mlflow_client(cfg.registry)
        with flow_api() as api:
            logging.getLogger("ganflow").info("Prefect API: %s", api)
            summary = ganflow_pipeline(config=cfg, force=force)
    ui = mlflow_ui_command(summary["tracking_uri"]) if summary.get("tracking_uri") else None
    return {**summary, "mlflow_ui": ui, "prefect_ui": prefect_ui_command()}


def ingest_only(cfg: GanflowConfig) -> dict:
    """Step 1 alone (`ganflow ingest`): the DatasetVersion as a dict."""
    from flows.environment import data_source
    from tasks.ingest import ingest_dataset

    with data_source(cfg) as cfg:
        return ingest_dataset(cfg.data).model_dump()


def serve_pipeline(cfg: GanflowConfig, cron: str, name: str, timezone: str = "UTC", max_concurrent: int = 1) -> None:
    """Serve a scheduled deployment of the flow from this process until interrupted.

    The deployment's parameters are typed (`config: GanflowConfig`, `force`), so the Prefect UI's
    "Custom run" form validates a changed config before a run starts; `max_concurrent` caps the
    deployment's simultaneous runs on the server.
    """
    from prefect.schedules import Cron

    from flows.environment import configured_prefect_api, data_source
    from gan_model.errors import UsageError

    if configured_prefect_api() is None:
        raise UsageError("schedules need a Prefect server: start one (`ganflow services` or `prefect server start`) "
                         "and set PREFECT_API_URL=http://127.0.0.1:4200/api (or `prefect config set PREFECT_API_URL=...`)")
    import zoneinfo

    try:
        zoneinfo.ZoneInfo(timezone)
        schedule = Cron(cron, timezone=timezone)
    except (ValueError, KeyError) as err:  # ZoneInfoNotFoundError is a KeyError
        raise UsageError(f"invalid schedule --cron {cron!r} --timezone {timezone!r} ({err}): "
                         f'use five cron fields such as "0 3 * * *" and an IANA zone such as Europe/Berlin') from None
    with data_source(cfg) as cfg:
        ganflow_pipeline.serve(name=name, schedule=schedule, parameters={"config": cfg.model_dump(mode="json")},
                               global_limit=max_concurrent, tags=["ganflow"], pause_on_shutdown=False,
                               description=f"ganflow on {cfg.data.source}, {cron} ({timezone})")
