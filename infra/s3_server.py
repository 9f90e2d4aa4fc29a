"""A local S3-compatible server on loopback, for development, tests and the embedded default.

moto's server mode is the S3-compatible server that installs from PyPI here
(no MinIO binary can be fetched); boto3 talks to it over real HTTP. It runs
as a separate process and keeps its objects in memory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator

from infra.process import LocalService, free_port

__all__ = ["LOCAL_CREDENTIALS", "LocalS3Server", "aws_configured", "free_port", "local_credentials"]

# Placeholder credentials for the local server only (it accepts any).
LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ganflow-local", "AWS_SECRET_ACCESS_KEY": "ganflow-local",
                     "AWS_DEFAULT_REGION": "us-east-1"}


class LocalS3Server(LocalService):
    name = "local S3 server"
    start_timeout = 30.0

    def __init__(self, port: int | None = None, log_path: str | None = None, authenticate: bool = False,
                 unauthenticated_actions: int = 0):
        port = port or free_port()
        # With authentication on, the server checks access keys and IAM policies like a real
        # store; the first `unauthenticated_actions` calls are let through (to create IAM users).
        self.authenticate, self.free_actions = authenticate, unauthenticated_actions
        env = {"INITIAL_NO_AUTH_ACTION_COUNT": str(unauthenticated_actions)} if authenticate else {}
        super().__init__([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], port,
                         "/moto-api/", log_path=log_path, env=env)


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
