"""Where outside systems are found, and the embedded defaults when none is set.

- S3: the boto3 chain plus data.endpoint_url; with nothing configured, a
  local S3-compatible server seeded with a real sample data set.
- Ray: RAY_ADDRESS, else a local instance (tasks/train.py).
- MLflow: MLFLOW_TRACKING_URI, else SQLite under .ganflow (tasks/register.py).
- Prefect: PREFECT_API_URL (or the active profile), else a local Prefect server that ganflow
  starts for the run (`flow_api()`), with its database under .ganflow/prefect, so `prefect
  server start` later shows the same runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from gan_model.config import DEMO_BUCKET, STATE_DIR, GanflowConfig, strip_userinfo

# Prefect's ephemeral API server gets 20 s to start by default; its first start on a fresh
# PREFECT_HOME migrates the database, which took 16-31 s on a 2-core machine with both CPUs
# busy (about 10 s idle), so a new user's first run failed at random.
EPHEMERAL_STARTUP_TIMEOUT_S = 180
# The variables by which ganflow (and boto3, Ray, MLflow, Prefect under it) find each outside
# system. A deployment sets them for the process that runs the flow; the Ray nodes, which read
# shards and write checkpoints but never track or schedule, need only S3's. infra/compose.yaml
# and infra/k8s set exactly these (tests/infra/test_deploy_files.py), and every run logs which
# of them are set.
OUTSIDE_SYSTEMS = {
    "S3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"),
    "Ray": ("RAY_ADDRESS",),
    "MLflow": ("MLFLOW_TRACKING_URI",),
    "Prefect": ("PREFECT_API_URL",),
}
RAY_NODE_SYSTEMS = ("S3",)
log = logging.getLogger("ganflow")


def set_local_defaults() -> None:
    """Call before importing prefect, ray or mlflow."""
    if configured_prefect_api() is None:  # else the user's own Prefect: leave its home alone
        if not os.environ.get("PREFECT_HOME"):
            home = (STATE_DIR / "prefect").resolve()
            home.mkdir(parents=True, exist_ok=True)  # else Prefect warns at import on a fresh checkout
            os.environ["PREFECT_HOME"] = str(home)
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
    # ganflow's own log lines (data set counts, warnings, decisions) go to the run's logs in the UI.
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "ganflow")
    # ... and outside a run (the CLI's own lines) they stay local without a warning per line.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # This machine may be offline: no usage-statistics calls home.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Ray's driver-side log monitor prints worker warnings that users need not see.
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    from tasks.ray_runtime import prepare_local_ray_env
    prepare_local_ray_env()  # a local Ray instance listens on loopback only


def configured_prefect_api() -> tuple[str, str] | None:
    """(API URL, where it was configured) when the user has a Prefect API: PREFECT_API_URL, or the
    active profile of their profiles file (`prefect config set` / `prefect cloud login` write
    there). Read without importing prefect, whose settings must see PREFECT_HOME first."""
    # The URL is for showing: without credentials (Prefect itself reads the original).
    if os.environ.get("PREFECT_API_URL"):
        return strip_userinfo(os.environ["PREFECT_API_URL"]), "PREFECT_API_URL"
    home = Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        import tomllib
        profiles = tomllib.loads(path.read_text())
    except (OSError, ValueError, ImportError):  # no file, unreadable, or Python 3.10 without tomllib
        return None
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active")
    url = profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") if active else None
    return (strip_userinfo(url), f"profile {active!r} in {path}") if url else None


def outside_systems_summary() -> str:
    """Which of OUTSIDE_SYSTEMS' variables are set, by name only (values may be secrets): a cluster
    deployment that forgot one shows it in the run's first log lines, before the embedded default
    silently stands in."""
    return "; ".join(f"{system}: " + ", ".join(f"{var} {'set' if os.environ.get(var) else 'unset'}" for var in names)
                     for system, names in OUTSIDE_SYSTEMS.items())


@contextlib.contextmanager
def flow_api() -> Iterator[str]:
    """The Prefect API that flow runs report to, for the block; yields a line saying which.

    The user's (PREFECT_API_URL or the active profile) when configured. Otherwise a local Prefect
    server that ganflow starts and stops around the block, rather than Prefect's own temporary
    one: that one runs in the terminal's process group, so Ctrl-C stopped it together with the
    run, and the interrupted run then spent minutes retrying a dead API instead of recording that
    it crashed. Ours runs in a process group of its own and dies with this process.
    """
    configured = configured_prefect_api()
    if configured is not None:
        yield f"{configured[0]} (from {configured[1]})"
        return
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra.prefect_server import PrefectServer

    home = Path(os.environ.get("PREFECT_HOME") or STATE_DIR / "prefect")
    home.mkdir(parents=True, exist_ok=True)
    with PrefectServer(prefect_home=home, log_path=home / "server.log") as server:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            try:
                yield (f"ganflow's local server at {server.api_url} for this run (no PREFECT_API_URL in the "
                       f"environment or profile; its runs stay in {home})")
            finally:
                _drain_prefect_workers()  # the run's last log lines and events, before the server stops


def _drain_prefect_workers(timeout: float = 10.0) -> None:
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        try:
            worker.drain_all(timeout=timeout)
        except Exception as err:  # never let the bookkeeping hide the run's own outcome
            log.debug("could not drain %s: %s", worker.__name__, err)


def uses_embedded_s3(cfg: GanflowConfig) -> bool:
    from infra.s3_server import aws_configured

    mode = cfg.data.embedded_server
    # auto never stands in for a user's own bucket (an instance role, which we
    # cannot see without a network call, may be what grants access to it).
    demo = cfg.data.source.startswith(f"s3://{DEMO_BUCKET}/")
    return mode == "always" or (mode == "auto" and demo and not aws_configured(cfg.data.endpoint_url))


@contextlib.contextmanager
def data_source(cfg: GanflowConfig) -> Iterator[GanflowConfig]:
    """Yield the config to run with; starts and seeds the embedded S3 server when it applies."""
    if not uses_embedded_s3(cfg):
        yield cfg
        return
    from infra.s3_server import LocalS3Server, local_credentials
    from infra.sample_data import seed_bucket
    from tasks.s3 import make_client, parse_s3_uri

    STATE_DIR.mkdir(exist_ok=True)
    with LocalS3Server(log_path=str(STATE_DIR / "s3-server.log")) as server, local_credentials():
        cfg = cfg.model_copy(deep=True)
        cfg.data.endpoint_url = server.url
        bucket, prefix = parse_s3_uri(cfg.data.source)
        # Only the objects the run reads: ingest takes the first data.max_images keys in key order,
        # which are the seeded set's first images, so the data set version is the same as with the
        # whole set uploaded (the smoke run: server up and 256 of 1,797 digits seeded in 3.0 s, not 8.0).
        n = seed_bucket(make_client(server.url), bucket, prefix, cfg.data.seed_dataset, limit=cfg.data.max_images)
        log.info("embedded S3 server at %s: %s", server.url,
                 f"uploaded {n} {cfg.data.seed_dataset} images to {cfg.data.source}" if n else "prefix already seeded")
        yield cfg


def mlflow_ui_command(tracking_uri: str) -> str:
    tracking_uri = strip_userinfo(tracking_uri)  # shown to users: never with credentials
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def prefect_ui_command() -> str:
    configured = configured_prefect_api()
    if configured:
        return f"open {configured[0].removesuffix('/').removesuffix('/api')}"
    return f"PREFECT_HOME={os.environ.get('PREFECT_HOME', '~/.prefect')} prefect server start  # then open http://127.0.0.1:4200"
