"""One way to run a local server as a child process: start it, wait until it answers, stop it.

Every local service (the S3-compatible server, MLflow, Prefect) goes through `LocalService`,
so each one binds to loopback, reports a start-up failure with its port and log, and leaves
no process behind:

- `stop()` (and leaving the `with` block) sends SIGTERM to the service's whole process group
  (its workers included), then SIGKILL to whatever is left after a grace period.
- On Linux the child asks the kernel for SIGTERM when its parent dies (PR_SET_PDEATHSIG), so
  a parent killed with SIGKILL, or one that exits without stopping it, takes the service
  down too. The kernel sends it when the *thread* that started the service exits, not the
  process: start services from the main thread, or from a thread that outlives them (a
  server started from a short-lived worker thread stops when that thread ends).
  The signal goes to the direct child only; a server that forks workers must pass SIGTERM
  on to them (MLflow and uvicorn do).

macOS has no PR_SET_PDEATHSIG: there only `stop()` cleans up.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Mapping, Sequence

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1
# Readiness probes go straight to loopback, never through a user's HTTP(S)_PROXY.
_direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        # Like the servers themselves: connections in TIME_WAIT do not count as "in use".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return True
    return False


def find_executable(name: str) -> str:
    """A console script of this environment: next to the running interpreter, else on PATH."""
    beside = Path(sys.executable).parent / name  # the venv's bin/, even when python is a symlink
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"`{name}` is not installed next to {sys.executable} nor on PATH")
    return found


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when the thread that started it exits."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class LocalService:
    """A server process on 127.0.0.1:`port`, ready when GET `ready_path` answers 2xx.

    The command must make the server bind to 127.0.0.1 and `port`. Output goes to `log_path`
    (a temporary file when none is given, removed after a clean stop). Usable as a context
    manager; `launch()` and `wait_ready()` let a caller start several services at once.
    """

    name = "local service"
    start_timeout = 60.0

    def __init__(self, command: Sequence[str], port: int, ready_path: str = "/", *,
                 log_path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                 name: str | None = None, start_timeout: float | None = None):
        self.command = [str(c) for c in command]
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self.ready_url = self.url + ready_path
        self.env = dict(env) if env is not None else None  # overrides on top of os.environ
        self.name = name or self.name
        self.start_timeout = start_timeout or self.start_timeout
        self.log_path = str(log_path) if log_path else None
        self._temp_log = False
        self._proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        return self._proc.poll() if self._proc else None

    def start(self, timeout: float | None = None) -> "LocalService":
        try:
            self.launch()
            self.wait_ready(timeout)
        except BaseException:  # also Ctrl-C during start-up: never leave the server behind
            self._temp_log = False  # the error names the log: keep it
            self.stop()
            raise
        return self

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        if self._proc is not None:
            raise RuntimeError(f"{self.name} was already started (pid {self._proc.pid})")
        if port_in_use(self.port):
            raise RuntimeError(f"port {self.port} on {HOST} is already in use (wanted by the {self.name})")
        if self.log_path is None:
            fd, self.log_path = tempfile.mkstemp(prefix=f"ganflow-{self.name.replace(' ', '-')}-", suffix=".log")
            os.close(fd)
            self._temp_log = True
        Path(self.log_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the descriptor
            self._proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **self.env} if self.env is not None else None,
                start_new_session=True,  # its own process group: stop() reaches its workers too
                preexec_fn=_die_with_parent())

    def wait_ready(self, timeout: float | None = None) -> None:
        if self._proc is None:
            raise RuntimeError(f"{self.name} was not launched")
        timeout = timeout or self.start_timeout
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the {self.name} exited with code {self._proc.returncode} on start "
                                   f"(port {self.port}); see its log {self.log_path}{self._log_tail()}")
            try:
                _direct.open(self.ready_url, timeout=2).close()
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {self.name} did not answer on {self.ready_url} within {timeout:.0f}s; "
                                   f"see its log {self.log_path}{self._log_tail()}")
            time.sleep(0.2)

    def terminate(self) -> None:
        """Ask the whole process group to stop (SIGTERM) without waiting."""
        if self._proc is not None and self._proc.poll() is None:
            _signal_group(self._proc.pid, signal.SIGTERM)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL to what is left after `timeout` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        clean = True
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                clean = False
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        _signal_group(proc.pid, signal.SIGKILL)  # workers that outlived their leader
        if self._temp_log and clean:
            Path(self.log_path).unlink(missing_ok=True)
            self.log_path, self._temp_log = None, False

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n  " + "\n  ".join(text)) if text else ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url} pid={self.pid}>"


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
