"""A local MLflow tracking server (UI, tracking and model registry) on loopback."""

from __future__ import annotations

import os
from typing import Sequence

from infra.process import HOST, LocalService, find_executable, free_port


class MlflowServer(LocalService):
    """`mlflow server` on 127.0.0.1:`port` with its runs and registry in `backend_store_uri`.

    `extra_args` go on the command line as they are, e.g.
    `["--artifacts-destination", "s3://bucket/mlartifacts"]`.
    """

    name = "MLflow server"
    start_timeout = 120.0

    def __init__(self, backend_store_uri: str, default_artifact_root: str, port: int | None = None, *,
                 log_path: str | os.PathLike | None = None, workers: int = 1, job_execution: bool = False,
                 extra_args: Sequence[str] = ()):
        port = port or free_port()
        # One worker: mlflow's default of four triples start-up time and memory on a small
        # machine, and a development server has one user.
        args = ["server", "--host", HOST, "--port", str(port), "--workers", str(workers),
                "--backend-store-uri", backend_store_uri, "--default-artifact-root", default_artifact_root,
                *extra_args]
        # MLflow's job execution (GenAI evaluation jobs, which ganflow does not use) starts eight
        # more processes that outlive the server by up to 20 s when it is killed.
        env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(job_execution).lower()}
        super().__init__([find_executable("mlflow"), *args], port, "/health", log_path=log_path, env=env)

    @property
    def tracking_uri(self) -> str:
        return self.url
