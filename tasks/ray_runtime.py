"""The Ray instance ganflow runs on: a cluster (RAY_ADDRESS) or a local one it owns.

`ray_session()` is the one place that owns Ray's lifetime: steps call `ensure_ray()` when they
need it, and leaving the session (normally, on an error, on Ctrl-C or SIGTERM) shuts down the
local instance it started, its workers with it. A cluster is never shut down, only left.

The local instance is for this machine only:
- every server in it (GCS, raylet, workers, agents, this driver) listens on 127.0.0.1 only, and
  it requires Ray's token authentication (other local users share loopback);
- the dashboard starts only with `train.dashboard: true`, and then on 127.0.0.1;
- torch.distributed's rendezvous store, which Ray Train's rank 0 starts and which listens on all
  interfaces whatever its host name, is bound to 127.0.0.1 (`rendezvous_on_loopback`);
- a watchdog process (tasks/watchdog.py) kills what is left of it when this process dies
  without shutting it down (SIGKILL, a crash).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from gan_model.errors import GanflowError
from tasks import watchdog

LOOPBACK = "127.0.0.1"
# Read by Ray when it is imported (so set before that): with it Ray takes the machine to be a
# single node and resolves its address to loopback, and the C++ servers then bind 127.0.0.1 only.
# Without it, ray.init(_node_ip_address="127.0.0.1") is turned into the routable address and
# every server listens on all interfaces. Token auth is Ray's default from 2.60; 2.52+ has it.
# NCCL (GPU training) otherwise bootstraps over the first non-loopback interface.
# Ray Train's preemption watcher (one more actor process per training run) watches for nodes of a
# cluster that are about to be preempted; on one machine there is no other node to move to, and
# the watcher's only output is an error line from Ray's core about its constructor arguments.
# Ray Train's controller takes one report of each worker per health check, every 2 s by default,
# and ray.train.report() blocks until the previous report is taken: a run that reports more
# often than that waits for the controller. On one machine a check is cheap; every 0.5 s instead.
LOCAL_RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token", "NCCL_SOCKET_IFNAME": "lo",
                 "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0", "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# Logged every few seconds of every training run by Ray Train's placement-group cleaner when the
# state API is off, which it is without the dashboard. The cleaner removes a crashed run's
# placement group; a local instance's groups go with the instance, which ganflow always stops.
STATE_API_NOISE = ("ray.train.v2._internal.execution.controller.placement_group_cleaner",
                   "Failed to query Ray Train Controller actor state")

_watchdog: subprocess.Popen | None = None
_local_roots: set[int] = set()  # the processes ray.init started for the local instance


def prepare_local_ray_env() -> None:
    """Call before importing ray: the environment a local instance needs to stay on loopback.
    Nothing changes when RAY_ADDRESS names a cluster, or for variables the user set."""
    if not os.environ.get("RAY_ADDRESS"):
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)


def _children(pid: int) -> set[int]:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:  # no /proc (macOS): no watchdog
        return set()
    found = set()
    for tid in tasks:
        try:
            found |= {int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()}
        except OSError:
            continue
    return found


def rendezvous_on_loopback() -> None:
    """Runs at the start of every worker process of the local instance (Ray's
    worker_process_setup_hook): rank 0's TCPStore, the rendezvous of DDP's process group, listens
    on 127.0.0.1 only.

    torch's TCPStore server binds the wildcard address; the only way to choose its address is to
    hand it a socket already bound (`master_listen_fd`). Ray Train creates the store inside
    init_process_group("env://"), through torch.distributed.rendezvous._create_c10d_store, so that
    is the function wrapped here. Should a torch release rename it, nothing is wrapped and the
    listening-socket test names the store.
    """
    import importlib
    import socket

    from torch.distributed import TCPStore

    # The module, not torch.distributed's function of the same name that `import ... as` would give.
    rendezvous = importlib.import_module("torch.distributed.rendezvous")

    create = getattr(rendezvous, "_create_c10d_store", None)
    if create is None or getattr(create, "loopback", False):
        return

    def create_on_loopback(hostname, port, rank, world_size, timeout, use_libuv=True):
        if rank != 0 or hostname not in (LOOPBACK, "localhost"):
            return create(hostname, port, rank, world_size, timeout, use_libuv)
        listener = socket.create_server((LOOPBACK, port))
        return TCPStore(hostname, port, world_size, True, timeout, multi_tenant=True,
                        master_listen_fd=listener.detach(), use_libuv=use_libuv)
    create_on_loopback.loopback = True
    rendezvous._create_c10d_store = create_on_loopback


def local_worker_setup() -> None:
    """The setup hook of a local instance without the dashboard: the rendezvous on loopback, and
    no warnings about the state API that only the dashboard serves."""
    import logging

    rendezvous_on_loopback()
    name, message = STATE_API_NOISE
    logging.getLogger(name).addFilter(lambda record: not record.getMessage().startswith(message))


def ensure_ray(num_cpus_needed: float = 1, dashboard: bool = False) -> None:
    prepare_local_ray_env()
    import ray

    if ray.is_initialized():
        return
    # configure_logging=False: leave the driver's logging (and its handlers) to the CLI.
    quiet = {"log_to_driver": True, "configure_logging": False}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, **quiet)
        return
    before = _children(os.getpid())
    # A local instance sized to the machine (never fewer CPUs than the workers ask for).
    # address="local": always our own, as documented (RAY_ADDRESS, else a local instance). With
    # address=None Ray would join the cluster of the last `ray start` on this machine (its
    # /tmp/ray/ray_current_cluster) and then fail on num_cpus ("When connecting to an existing
    # cluster, num_cpus and num_gpus must not be provided").
    ray.init(address="local", num_cpus=max(os.cpu_count() or 1, int(num_cpus_needed + 0.999)),
             _node_ip_address=LOOPBACK, include_dashboard=dashboard, dashboard_host=LOOPBACK,
             runtime_env={"worker_process_setup_hook": rendezvous_on_loopback if dashboard else local_worker_setup},
             **quiet)
    global _watchdog, _local_roots
    _local_roots = _children(os.getpid()) - before  # the processes ray.init just started
    _watchdog = watchdog.start(_local_roots)
    address = ray.util.get_node_ip_address()
    if address != LOOPBACK:
        shutdown_ray()
        raise GanflowError(f"the local Ray instance would listen on {address}, not only on {LOOPBACK}: "
                           f"let ganflow import ray (or set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing "
                           f"it), or set RAY_ADDRESS to a cluster")


def kill_local_actors(class_name: str) -> int:
    """SIGKILL the processes of the local instance's actors of `class_name`; returns how many.

    For an interrupted `trainer.fit()`, whose thread is blocked in Ray: killing its TrainController
    makes that call raise at once (the workers, which the controller owns, die with it), so the
    thread is out of Ray before `ray.shutdown()`. Shutting down under a thread still in Ray makes
    Ray's core exit the whole process with status 1, whatever the caller meant to exit with.
    """
    import signal

    title = f"ray::{class_name}".encode()
    seen, todo, killed = set(), list(_local_roots), 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        todo.extend(_children(pid))
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(title):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        except OSError:
            continue
    return killed


def shutdown_ray() -> None:
    if "ray" in sys.modules:  # never import Ray just to find it was not used
        import ray
        if ray.is_initialized():
            ray.shutdown()
    global _watchdog, _local_roots
    watchdog.stop(_watchdog)  # it kills any straggler of the instance just shut down, then exits
    _watchdog, _local_roots = None, set()


@contextlib.contextmanager
def ray_session() -> Iterator[None]:
    """Within it, steps may start Ray; on the way out Ray is shut down if the session started it."""
    already = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    try:
        yield
    finally:
        if not already:
            shutdown_ray()
