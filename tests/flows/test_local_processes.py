"""`ganflow run` on the embedded default, as a new user runs it: while it runs, every listening
socket of its process tree (the S3 server, Prefect's API, Ray's GCS, raylet, agents and workers,
the driver) is on loopback; SIGKILL of it mid-training leaves none of those processes behind.
One run serves both tests (about a minute)."""

import os
import signal
import subprocess
import time

import pytest

from tests.helpers import SMOKE_CONFIG, clean_env, start_cli
from tests.infra.procfs import alive, command_line, descendants, is_loopback, listening_sockets, start_time

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("killed-run")
    proc, log, training, _ = start_cli(["run", "--config", str(SMOKE_CONFIG), "--set", "train.steps=100000"], tmp,
                                       clean_env(tmp), "[ganflow] step", stdout=subprocess.DEVNULL, start_new_session=True)

    seen: dict[int, tuple[int, set[str]]] = {}  # pid -> (start time, every command line it showed)
    sockets: set[tuple[str, int, int]] = set()

    def sample() -> None:
        pids = descendants(proc.pid) | {proc.pid}
        for pid in pids:
            # Read again each time and keep them all: a child seen between fork and exec still
            # shows its parent's command line (the CLI's, for gcs_server), and Ray's processes
            # later retitle themselves (ray::IDLE, ray::DashboardAgent). Exec and retitling keep
            # the pid and the start time.
            start = start_time(pid)
            if start is not None and (pid not in seen or seen[pid][0] == start):
                seen[pid] = (start, seen.get(pid, (start, set()))[1] | {command_line(pid)} - {""})
        sockets.update(listening_sockets(pids))

    deadline = time.monotonic() + 600  # a slow first start: Prefect alone may take 180 s
    while not training.is_set() and proc.poll() is None and time.monotonic() < deadline:
        sample()
        time.sleep(0.5)
    for _ in range(4):  # a little more of training: workers, agents and their servers all up
        sample()
        time.sleep(0.5)
    started = training.is_set()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    survivors = {}
    end = time.monotonic() + 60  # Prefect's server gets SIGTERM and shuts down gracefully
    while time.monotonic() < end:
        survivors = {pid: cmds for pid, (start, cmds) in seen.items() if alive(pid) and start_time(pid) == start}
        if not survivors:
            break
        time.sleep(0.25)
    for pid in survivors:  # leave nothing behind, whatever the outcome
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    assert started, "training never started: " + "".join(log[-40:])
    yield {"processes": seen, "sockets": sockets, "survivors": survivors}


def test_every_listening_socket_of_the_run_is_on_loopback(killed_run):
    commands = killed_run["processes"]
    exposed = {(addr, port, " | ".join(sorted(commands[pid][1]))[:160])
               for addr, port, pid in killed_run["sockets"] if not is_loopback(addr)}
    assert exposed == set()
    listeners = {cmd for _, _, pid in killed_run["sockets"] for cmd in commands[pid][1]}
    # The check saw the servers it is about.
    for server in ("moto.server", "gcs_server", "raylet", "dashboard/agent.py", "runtime_env/agent/main.py"):
        assert any(server in cmd for cmd in listeners), (server, listeners)


def test_sigkill_mid_training_leaves_no_process_behind(killed_run):
    commands = [cmd for _, cmds in killed_run["processes"].values() for cmd in cmds]
    assert any("raylet" in cmd for cmd in commands) and any("default_worker.py" in cmd for cmd in commands)
    assert killed_run["survivors"] == {}
