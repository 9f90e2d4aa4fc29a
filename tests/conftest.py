"""Shared fixtures: a real S3-compatible server on loopback, isolated state folders,
placeholder AWS credentials, a Prefect test harness, a local Ray instance and `run_cli`.

A test that uses a fixture which starts a server, Ray or a subprocess is marked `slow`
automatically (see SLOW_FIXTURES), so `make test-fast` runs only in-process tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

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
from tests.helpers import ROOT, clean_env  # noqa: E402
from tasks.ray_runtime import prepare_local_ray_env  # noqa: E402

prepare_local_ray_env()  # as the CLI does: any Ray these tests start stays on loopback

os.environ.update(LOCAL_CREDENTIALS)

# Fixtures that start a server, Ray or a subprocess: tests using them are `slow`.
SLOW_FIXTURES = {"s3_server", "s3", "bucket", "prefect_harness", "local_ray", "run_cli", "mlflow_server"}


# `make test` runs two test files at a time (pytest-xdist, --dist loadgroup). The files that run
# whole pipelines (Ray Train, Prefect, MLflow, the CLI) use both CPUs for minutes; two of them at
# once is the most the machine takes, so they form two queues of about equal length, each run file
# after file on one worker, first, while every other file is a group of its own (its module
# fixtures start once) and fills in behind. Seconds measured in one run of the suite on 2 cores.
PIPELINE_QUEUES = (
    ("tests/tasks/test_registry_server.py",   # 290 s
     "tests/flows/test_operations.py",        # 285 s
     "tests/flows/test_local_processes.py",   #  85 s
     "tests/tasks/test_distributed_eval.py"),  #  46 s
    ("tests/flows/test_pipeline_e2e.py",      # 239 s
     "tests/tasks/test_train_distributed.py",  # 203 s
     "tests/flows/test_cli_errors.py",        # 172 s
     "tests/tasks/test_two_nodes.py"),        # 102 s
)
QUEUE_OF = {path: (i, rank) for i, queue in enumerate(PIPELINE_QUEUES) for rank, path in enumerate(queue)}


def pytest_collection_modifyitems(config, items):
    place = {}
    for i, item in enumerate(items):
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
        path = Path(item.path).resolve().relative_to(ROOT).as_posix()
        queue = QUEUE_OF.get(path)
        item.add_marker(pytest.mark.xdist_group(f"pipelines-{queue[0]}" if queue else path))
        place[id(item)] = (0, queue[1], queue[0], i) if queue else (1, 0, 0, i)
    # The pipeline queues first, each in its order, then the other files as collected; a file's
    # tests stay together and in their order.
    items.sort(key=lambda item: place[id(item)])


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = LocalS3Server(log_path=str(tmp_path_factory.mktemp("s3") / "server.log")).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def mlflow_server(s3_server, tmp_path_factory):
    """A real MLflow tracking server on loopback for the tests of one module: runs and registry in
    SQLite, artifacts in a bucket of the local S3 server, served through the tracking server (so
    clients need no S3 access of their own). `.bucket` and `.folder` say where things are."""
    from infra.mlflow_server import MlflowServer
    from tasks.s3 import make_client

    folder = tmp_path_factory.mktemp("mlflow-server")
    artifacts_bucket = f"mlartifacts-{uuid.uuid4().hex[:8]}"
    make_client(s3_server.url).create_bucket(Bucket=artifacts_bucket)
    server = MlflowServer(f"sqlite:///{folder / 'mlflow.db'}", "mlflow-artifacts:/", log_path=folder / "server.log",
                          extra_args=["--artifacts-destination", f"s3://{artifacts_bucket}/artifacts"],
                          env={"MLFLOW_S3_ENDPOINT_URL": s3_server.url, **LOCAL_CREDENTIALS})
    server.bucket, server.folder = artifacts_bucket, folder
    with server:
        yield server


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


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU local Ray instance for the tests of one module."""
    import ray
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture()
def run_cli(tmp_path):
    """`ganflow ARGS...` as a user runs it: a fresh process in `tmp_path` (its own .ganflow), this
    checkout on PYTHONPATH. `env` sets variables (None removes one); `new_user=True` starts from
    the environment of a new user instead of the tests' (no AWS, Prefect, MLflow or Ray settings)."""
    def run(*args: str, env: dict | None = None, new_user: bool = False, timeout: float = 300,
            cwd: Path | None = None):
        full = clean_env(tmp_path) if new_user else dict(os.environ, PYTHONPATH=str(ROOT))
        for k, v in (env or {}).items():
            if v is None:
                full.pop(k, None)
            else:
                full[k] = v
        return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True,
                              cwd=cwd or tmp_path, env=full, timeout=timeout)
    return run
