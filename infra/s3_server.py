"""A local S3-compatible server on loopback, for development, tests and the embedded default.

moto's server mode is the S3-compatible server that installs from PyPI here
(no MinIO binary can be fetched); boto3 talks to it over real HTTP. It runs
as a separate process and keeps its objects in memory.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from typing import Iterator

# Placeholder credentials for the local server only (it accepts any).
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ganflow-local", "AWS_SECRET_ACCESS_KEY": "ganflow-local",
                     "AWS_DEFAULT_REGION": "us-east-1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalS3Server:
    def __init__(self, port: int | None = None, log_path: str | None = None, authenticate: bool = False,
                 unauthenticated_actions: int = 0):
        self.port = port or free_port()
        # With authentication on, the server checks access keys and IAM policies like a real
        # store; the first `unauthenticated_actions` calls are let through (to create IAM users).
        self.authenticate, self.free_actions = authenticate, unauthenticated_actions
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> "LocalS3Server":
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=dict(os.environ, **({"INITIAL_NO_AUTH_ACTION_COUNT": str(self.free_actions)} if self.authenticate else {})))
        finally:
            if log is not subprocess.DEVNULL:
                log.close()  # the child has its own copy
        try:
            self._wait_ready(timeout)
        except BaseException:  # also Ctrl-C during start-up: never leave the server behind
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"the local S3 server exited with code {self._proc.returncode} on start")
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=1).close()
                return
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.2)
        raise RuntimeError(f"the local S3 server did not answer on {self.url} within {timeout:.0f}s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> "LocalS3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@contextlib.contextmanager
def local_credentials() -> Iterator[None]:
    """Point this process's boto3 chain at the local server's placeholder credentials."""
    saved = {k: os.environ.get(k) for k in [*LOCAL_CREDENTIALS, "AWS_PROFILE", "AWS_SESSION_TOKEN"]}
    os.environ.update(LOCAL_CREDENTIALS)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.pop("AWS_SESSION_TOKEN", None)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def aws_configured(endpoint_url: str | None) -> bool:
    """True when the user pointed boto3 somewhere: an endpoint, keys, a profile or AWS config files.

    Decided without any network call (in particular no instance-metadata probe).
    """
    if endpoint_url or any(os.environ.get(k) for k in (
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_PROFILE",
            "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
        return True
    home = os.path.expanduser("~/.aws")
    return any(os.path.isfile(os.path.join(home, f)) for f in ("credentials", "config"))
