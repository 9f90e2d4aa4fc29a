"""Shared fixtures: a real S3-compatible server on loopback, isolated state folders,
placeholder AWS credentials, and a Prefect test harness for the flow tests."""

from __future__ import annotations

import os
import re
import uuid

import pytest

# Tests never reach outside the machine: no instance-metadata probes, no
# telemetry, and Prefect state in a throwaway folder.
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "RAY_ADDRESS", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(var, None)

from infra.s3_server import LOCAL_CREDENTIALS, LocalS3Server  # noqa: E402

os.environ.update(LOCAL_CREDENTIALS)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = LocalS3Server(log_path=str(tmp_path_factory.mktemp("s3") / "server.log")).start()
    yield server
    server.stop()


@pytest.fixture()
def s3(s3_server):
    from tasks.s3 import make_client
    return make_client(s3_server.url)


@pytest.fixture()
def bucket(s3, request):
    slug = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:40].strip("-")
    name = f"t-{slug}-{uuid.uuid4().hex[:6]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def workdir(tmp_path, monkeypatch):
    """Run in a fresh folder so the project-local state (.ganflow) is the test's own."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect-home"))
    from prefect.testing.utilities import prefect_test_harness
    with prefect_test_harness(server_startup_timeout=120):
        yield
