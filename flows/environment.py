"""Where outside systems are found, and the embedded defaults when none is set.

- S3: the boto3 chain plus data.endpoint_url; with nothing configured, a
  local S3-compatible server seeded with a real sample data set.
- Ray: RAY_ADDRESS, else a local instance (tasks/train.py).
- MLflow: MLFLOW_TRACKING_URI, else SQLite under .ganflow (tasks/register.py).
- Prefect: PREFECT_API_URL, else the ephemeral API with its database under
  .ganflow/prefect, so `prefect server start` later shows the same runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from gan_model.config import DEMO_BUCKET, STATE_DIR, GanflowConfig

EPHEMERAL_STARTUP_TIMEOUT_S = 180
log = logging.getLogger("ganflow")


def set_local_defaults() -> None:
    """Call before importing prefect, ray or mlflow."""
    if not os.environ.get("PREFECT_API_URL"):
        if not os.environ.get("PREFECT_HOME"):
            os.environ["PREFECT_HOME"] = str((STATE_DIR / "prefect").resolve())
        # Prefect's ephemeral API server gets 20 s to start by default; its first start on a
        # fresh PREFECT_HOME migrates the database, which took 16-31 s on a 2-core machine with
        # both CPUs busy (about 10 s idle), so a new user's first run failed at random.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S))
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
        n = seed_bucket(make_client(server.url), bucket, prefix, cfg.data.seed_dataset)
        log.info("embedded S3 server at %s: %s", server.url,
                 f"uploaded {n} {cfg.data.seed_dataset} images to {cfg.data.source}" if n else "prefix already seeded")
        yield cfg


def mlflow_ui_command(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {tracking_uri}"


def prefect_ui_command() -> str:
    api = os.environ.get("PREFECT_API_URL")
    if api:
        return f"open {api.removesuffix('/api')}"
    return f"PREFECT_HOME={os.environ.get('PREFECT_HOME', '~/.prefect')} prefect server start  # then open http://127.0.0.1:4200"
