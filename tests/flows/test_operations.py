"""Operating ganflow as its users do: `ganflow serve` on a real Prefect server (started and stopped
here, on loopback), runs triggered through the API, and what the Prefect UI then shows.

One served deployment carries every scenario, so the server, the serve process and Ray start once:
a run that completes and tells its story (artifacts, named task runs, ganflow's log lines); a run
with nothing changed that is skipped; a user error that fails at once; a flaky S3 endpoint that is
retried; two simultaneous runs of one recipe of which only one trains.
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import os
import subprocess
import sys
import threading
import time
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import pytest
import yaml

from tests.helpers import ROOT, digits, tiny_config, upload_images

pytestmark = pytest.mark.slow
DEPLOYMENT = "ganflow/ops-test"
# The schedule's hour: 12 hours from now in Berlin, so no scheduled run starts during the test.
CRON = f"0 {(datetime.datetime.now(ZoneInfo('Europe/Berlin')).hour + 12) % 24} * * *"


class FlakyS3Proxy:
    """Forwards to the S3 server, but answers the first `failures` requests with 503 SlowDown."""

    def __init__(self, target: str, failures: int):
        self.target, self.remaining, self.seen = urlsplit(target), failures, 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                proxy.seen += 1
                if proxy.remaining > 0:
                    proxy.remaining -= 1
                    msg = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                conn = http.client.HTTPConnection(proxy.target.hostname, proxy.target.port, timeout=60)
                conn.request(self.command, self.path, body=body or None,
                             headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    from infra.prefect_server import PrefectServer
    home = tmp_path_factory.mktemp("prefect-server")
    with PrefectServer(prefect_home=home, log_path=home / "server.log") as server:
        yield server


@pytest.fixture(scope="module")
def client(prefect_server):
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings
    with temporary_settings({PREFECT_API_URL: prefect_server.api_url}):
        with get_client(sync_client=True) as c:
            yield c


@pytest.fixture(scope="module")
def served(prefect_server, s3_server, tmp_path_factory):
    """`ganflow serve` of the smoke configuration on the test bucket, in its own folder."""
    from tasks.s3 import make_client
    work = tmp_path_factory.mktemp("serve")
    s3 = make_client(s3_server.url)
    s3.create_bucket(Bucket="ops-test")
    upload_images(s3, "ops-test", "digits/", digits(128, size=16))
    cfg = tiny_config(work, "s3://ops-test/digits/", s3_server.url, "data.max_images=128")
    (work / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(ROOT), PREFECT_API_URL=prefect_server.api_url, PREFECT_HOME=str(work / "home"),
               AWS_MAX_ATTEMPTS="2",  # the user's own botocore retry budget, which ganflow must respect
               PREFECT_RUNNER_POLL_FREQUENCY="2")  # picks up each triggered run in 2 s, not up to 10
    log = open(work / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "serve", "--cron", CRON, "--timezone",
                             "Europe/Berlin", "--name", "ops-test", "--max-concurrent", "2", "--config",
                             str(work / "config.yaml")], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, cfg, work
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def wait_for_deployment(client, proc, work, timeout=240):
    from prefect.exceptions import ObjectNotFound
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, (work / "serve.log").read_text()[-3000:]
        try:
            return client.read_deployment_by_name(DEPLOYMENT)
        except ObjectNotFound:
            time.sleep(1)
    raise AssertionError("the deployment never appeared:\n" + (work / "serve.log").read_text()[-3000:])


def run(client, work, parameters=None, wait=True, timeout=600):
    from prefect.deployments import run_deployment
    flow_run = run_deployment(DEPLOYMENT, parameters=parameters, timeout=0, client=client)
    if not wait:
        return flow_run
    return finished(client, flow_run.id, work, timeout)


def finished(client, flow_run_id, work, timeout=600):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fr = client.read_flow_run(flow_run_id)
        if fr.state and fr.state.is_final():
            return fr
        time.sleep(1)
    raise AssertionError("the run did not finish:\n" + (work / "serve.log").read_text()[-3000:])


def artifacts(client, flow_run_id) -> dict:
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    found = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    return {a.key: a for a in found if a.key}


def task_runs(client, flow_run_id, expected=(), timeout=120) -> dict:
    """name -> task run of a finished flow run, once `expected` are all there and every one is final.

    A task run's states reach the server as events, which it records after the flow run's final
    state (set by a direct API call): read at once, a task may still show Running, or be missing."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    deadline = time.monotonic() + timeout
    while True:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        named = {t.name.split(" ")[0]: t for t in runs}
        if (set(expected) <= set(named) and all(t.state and t.state.is_final() for t in runs)) \
                or time.monotonic() > deadline:
            return named
        time.sleep(1)


def logs(client, flow_run_id, until, timeout=120) -> list:
    """The flow run's log lines, once one satisfies `until` (they arrive in batches, in the background)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    deadline = time.monotonic() + timeout
    while True:
        lines = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        if any(until(line) for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(1)


def config_with(cfg, **sets) -> dict:
    raw = cfg.model_dump(mode="json")
    for key, value in sets.items():
        section, field = key.split("__")
        raw[section][field] = value
    return raw


@pytest.mark.timeout(1800)  # six flow runs: 2-6 minutes on 2 cores; on a slower, busier CI machine the first alone took over 10
def test_a_served_deployment_runs_tells_its_story_and_fits_each_failure(served, client, s3_server):
    proc, cfg, work = served
    deployment = wait_for_deployment(client, proc, work)
    schedule = deployment.schedules[0].schedule
    assert schedule.cron == CRON and schedule.timezone == "Europe/Berlin"
    assert "config" in deployment.parameter_openapi_schema["properties"]  # the UI's typed form

    # 1. A run triggered through the API completes, and the UI tells what happened.
    first = run(client, work, timeout=1500)  # starts Ray and the Prefect runner: over 10 minutes once on CI
    assert first.state.is_completed(), (first.state.message, (work / "serve.log").read_text()[-3000:])
    found = artifacts(client, first.id)
    assert {"ganflow-summary", "ganflow-dataset", "ganflow-training-metrics", "ganflow-samples",
            "training-progress"} <= set(found)
    summary = found["ganflow-summary"].data
    assert "## Decision" in summary and "v1 -> @champion" in summary and "## Warnings" in summary
    assert found["ganflow-dataset"].type == "table" and "used" in found["ganflow-dataset"].data
    assert first.name.startswith(first.name.split("-")[0]) and len(first.name.split("-")[0]) == 16  # <version>-<date>
    names = task_runs(client, first.id, expected={"ingest", "train", "evaluate", "register"})
    assert {"ingest", "train", "evaluate", "register"} <= set(names)
    assert all(t.state.is_completed() for t in names.values())

    def ours(line):
        return line.name.startswith("ganflow.") and "images" in line.message
    assert any(ours(line) for line in logs(client, first.id, until=ours))  # our loggers

    # 2. Nothing changed: the next run is skipped, quickly, as Completed with a reason.
    t0 = time.monotonic()
    second = run(client, work)
    skip_seconds = time.monotonic() - t0
    assert second.state.is_completed()
    assert "Skipped" in artifacts(client, second.id)["ganflow-summary"].data
    assert "train" not in task_runs(client, second.id, expected={"ingest"})
    print(f"skipped run took {skip_seconds:.1f} s")

    # 3. A problem only the user can fix fails at once: no retries, the one-line reason shown.
    bad = run(client, work, {"config": config_with(cfg, data__source="s3://no-such-bucket-ops/x/")})
    assert bad.state.is_failed()
    ingest = task_runs(client, bad.id, expected={"ingest"})["ingest"]
    assert ingest.run_count == 1 and "does not exist" in ingest.state.message

    # 4. A flaky endpoint (503 SlowDown past botocore's own 2 attempts) is retried by Prefect. The
    #    endpoint is where the data lives, not what it is: once ingest gets through, the data set
    #    version is the same as before and the run is skipped (no need to train again to show it).
    flaky = FlakyS3Proxy(s3_server.url, failures=3)
    try:
        ok = run(client, work, {"config": config_with(cfg, data__endpoint_url=flaky.url)})
    finally:
        flaky.close()
    assert ok.state.is_completed(), ok.state.message
    ingest = task_runs(client, ok.id, expected={"ingest"})["ingest"]
    assert ingest.run_count >= 2 and flaky.seen > 3
    assert ingest.state.is_completed() and "Skipped" in artifacts(client, ok.id)["ganflow-summary"].data

    # 5. Two runs of one new recipe started together: only one trains.
    racing = config_with(cfg, train__steps=cfg.train.steps + 5, train__if_busy="skip")
    a, b = (run(client, work, {"config": racing}, wait=False) for _ in range(2))
    a, b = finished(client, a.id, work), finished(client, b.id, work)
    assert a.state.is_completed() and b.state.is_completed()
    trained = ["ganflow-training-metrics" in artifacts(client, r.id) for r in (a, b)]
    assert sorted(trained) == [False, True]
    skipped = (b, a)[trained.index(True)]
    assert "another flow run is training" in artifacts(client, skipped.id)["ganflow-summary"].data


def test_deploy_writes_both_pools_and_applies_the_process_one(prefect_server, client, tmp_path, monkeypatch):
    from flows.deploy import K8S_POOL, K8S_TEMPLATE_FILE, PROCESS_POOL, apply_process_deployment, write_deployments
    from gan_model.config import GanflowConfig

    out = write_deployments(GanflowConfig(), "30 2 * * *", tmp_path / "prefect.yaml", name="ops-deploy",
                            timezone="Europe/Berlin", image="registry.example/ganflow:1.2.3")
    doc = yaml.safe_load(out.read_text())
    pools = {d["name"]: d["work_pool"] for d in doc["deployments"]}
    assert pools["ops-deploy"]["name"] == PROCESS_POOL and pools["ops-deploy-k8s"]["name"] == K8S_POOL
    assert pools["ops-deploy-k8s"]["job_variables"]["image"] == "registry.example/ganflow:1.2.3"
    template = yaml.safe_load((tmp_path / K8S_TEMPLATE_FILE).read_text())
    container = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "{{ secret_name }}"}}]  # credentials never inlined
    assert "AWS_SECRET_ACCESS_KEY" not in out.read_text()

    monkeypatch.setenv("PREFECT_API_URL", prefect_server.api_url)
    apply_process_deployment(out, "ops-deploy")
    deployment = client.read_deployment_by_name("ganflow/ops-deploy")
    assert deployment.work_pool_name == PROCESS_POOL
    assert deployment.schedules[0].schedule.cron == "30 2 * * *"
