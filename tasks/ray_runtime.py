"""The Ray instance ganflow runs on: a cluster (RAY_ADDRESS) or a local one it owns.

`ray_session()` is the one place that owns Ray's lifetime: steps call `ensure_ray()` when they
need it, and leaving the session (normally, on an error, on Ctrl-C or SIGTERM) shuts down the
local instance it started, its workers with it. A cluster is never shut down, only left.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator


def ensure_ray(num_cpus_needed: float = 1) -> None:
    import ray

    if ray.is_initialized():
        return
    # configure_logging=False: leave the driver's logging (and its handlers) to the CLI.
    quiet = {"log_to_driver": True, "configure_logging": False}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **quiet)
    else:
        # A local instance sized to the machine (never fewer CPUs than the workers ask for).
        # With the dashboard (ray[default]) users can watch the workers at
        # http://127.0.0.1:8265, and Ray Train's cleanup actor can query actor state.
        ray.init(num_cpus=max(os.cpu_count() or 1, int(num_cpus_needed + 0.999)), **quiet)


def shutdown_ray() -> None:
    if "ray" in sys.modules:  # never import Ray just to find it was not used
        import ray
        if ray.is_initialized():
            ray.shutdown()


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Within it, steps may start Ray; on the way out Ray is shut down if the session started it."""
    already = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    try:
        yield
    finally:
        if not already:
            shutdown_ray()
