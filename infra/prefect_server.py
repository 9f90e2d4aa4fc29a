"""A local Prefect server (API, UI and scheduler) on loopback."""

from __future__ import annotations

import os
from typing import Sequence

from infra.process import HOST, LocalService, find_executable, free_port


class PrefectServer(LocalService):
    """`prefect server start` on 127.0.0.1:`port`; its database lives under `prefect_home`
    (Prefect's own default, ~/.prefect or $PREFECT_HOME, when None)."""

    name = "Prefect server"
    # A fresh database is migrated on the first start: 30 s or more on a loaded small machine.
    start_timeout = 180.0

    def __init__(self, port: int | None = None, prefect_home: str | os.PathLike | None = None, *,
                 log_path: str | os.PathLike | None = None, extra_args: Sequence[str] = ()):
        port = port or free_port()
        env = {"PREFECT_SERVER_API_HOST": HOST, "PREFECT_SERVER_API_PORT": str(port)}
        if prefect_home is not None:
            env["PREFECT_HOME"] = str(prefect_home)
        super().__init__([find_executable("prefect"), "server", "start", "--host", HOST, "--port", str(port),
                          *extra_args], port, "/api/health", log_path=log_path, env=env)

    @property
    def api_url(self) -> str:
        return self.url + "/api"
