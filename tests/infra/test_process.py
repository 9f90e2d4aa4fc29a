"""`infra.process.LocalService`: a local server starts on loopback, reports a failed start with
its port and log, and leaves no process behind on stop or when its parent is killed."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from infra.process import LocalService, free_port
from tests.infra.procfs import LOOPBACK_V4, alive, answers, group_members, listening_addresses, wait_until

ROOT = Path(__file__).resolve().parents[2]


def http_server(port: int, directory: Path, **kwargs) -> LocalService:
    return LocalService([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory),
                         str(port)], port, "/", name="test server", **kwargs)


def python(code: str, port: int, **kwargs) -> LocalService:
    return LocalService([sys.executable, "-c", textwrap.dedent(code)], port, "/", name="test server", **kwargs)


def test_a_service_answers_on_loopback_only_and_stop_leaves_nothing(tmp_path):
    port = free_port()
    with http_server(port, tmp_path, log_path=tmp_path / "server.log") as server:
        assert answers(server.url) and server.running
        assert listening_addresses(port) == {LOOPBACK_V4}
        pid = server.pid
    assert not alive(pid) and not group_members(pid)
    assert not answers(f"http://127.0.0.1:{port}/")
    assert (tmp_path / "server.log").is_file()  # a log the caller named is kept


def test_stop_kills_workers_that_ignore_sigterm(tmp_path):
    port = free_port()
    server = python(f"""
        import http.server, subprocess, sys
        subprocess.Popen([sys.executable, "-c",
                          "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(300)"])
        http.server.HTTPServer(("127.0.0.1", {port}), http.server.SimpleHTTPRequestHandler).serve_forever()
        """, port).start()
    pid = server.pid
    assert wait_until(lambda: len(group_members(pid)) == 2, 60)
    server.stop(timeout=1)
    assert wait_until(lambda: not group_members(pid), 60)


def test_a_server_that_exits_on_start_is_reported_with_its_port_and_log(tmp_path):
    port, log = free_port(), tmp_path / "s.log"
    with pytest.raises(RuntimeError) as err:
        python("import sys; print('cannot open the database'); sys.exit(3)", port, log_path=log).start()
    message = str(err.value)
    assert "exited with code 3" in message and str(port) in message and str(log) in message
    assert "cannot open the database" in message  # the log's tail


def test_a_server_that_never_answers_times_out_and_is_killed(tmp_path):
    port = free_port()
    server = python("import time; print('still migrating', flush=True); time.sleep(300)", port)
    with pytest.raises(RuntimeError, match=rf"did not answer on http://127.0.0.1:{port}/ within 1s") as err:
        server.start(timeout=1)
    assert "still migrating" in str(err.value)
    log = Path(str(err.value).split("see its log ")[1].split()[0])
    assert log.is_file()  # a temporary log named in an error is kept
    log.unlink()
    assert server.pid is None and not server.running


def test_a_port_in_use_is_refused_before_starting(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match=rf"port {port} on 127.0.0.1 is already in use"):
            http_server(port, tmp_path).start()


def test_local_s3_server_keeps_its_api(tmp_path):
    from infra.s3_server import LOCAL_CREDENTIALS, LocalS3Server, aws_configured, free_port, local_credentials  # noqa: F401

    port = free_port()
    with LocalS3Server(port=port, log_path=str(tmp_path / "s3.log")) as server:
        assert (server.port, server.url) == (port, f"http://127.0.0.1:{port}")
        assert answers(server.url + "/moto-api/") and listening_addresses(port) == {LOOPBACK_V4}
    assert not answers(server.url + "/moto-api/")
    with local_credentials():
        assert os.environ["AWS_ACCESS_KEY_ID"] == LOCAL_CREDENTIALS["AWS_ACCESS_KEY_ID"]


# A child process starts the service and is then killed with SIGKILL: it can run no clean-up,
# so only PR_SET_PDEATHSIG stands between the service and an orphan.
STARTERS = {
    "http.server": "LocalService([sys.executable, '-m', 'http.server', '--bind', '127.0.0.1', str(port)], port, '/')",
    "s3": "LocalS3Server(port=port)",
    "mlflow": "MlflowServer('sqlite:///' + os.path.abspath('mlflow.db'), Path('art').resolve().as_uri(), port)",
    "prefect": "PrefectServer(port, prefect_home=os.path.abspath('prefect'))",
}


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
@pytest.mark.parametrize("kind", list(STARTERS))
def test_a_service_dies_with_the_process_that_started_it(tmp_path, kind):
    port = free_port()
    code = textwrap.dedent(f"""
        import os, sys, time
        from pathlib import Path
        from infra.process import LocalService
        from infra.s3_server import LocalS3Server
        from infra.mlflow_server import MlflowServer
        from infra.prefect_server import PrefectServer
        port = {port}
        server = {STARTERS[kind]}.start()
        print(server.pid, flush=True)
        time.sleep(600)
        """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(PYTHONPATH=str(ROOT))
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = parent.stdout.readline()  # printed once the service answered
        if not line.strip().isdigit():
            parent.kill()
            pytest.fail(f"the {kind} service did not start: {parent.communicate()[1][-3000:]}")
        pid = int(line)
        assert answers(f"http://127.0.0.1:{port}/") or kind != "http.server"
        assert alive(pid) and group_members(pid)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_until(lambda: not alive(pid), 60), f"the {kind} service outlived its parent"
        assert wait_until(lambda: not group_members(pid), 60), f"the {kind} service's workers outlived it"
        assert not answers(f"http://127.0.0.1:{port}/")
        assert not listening_addresses(port)
    finally:
        if parent.poll() is None:
            parent.kill()
        for member in group_members(pid) if "pid" in locals() else ():
            os.kill(member, signal.SIGKILL)
