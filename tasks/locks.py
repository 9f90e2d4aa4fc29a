"""Runs never collide: one holder at a time of a named Prefect global concurrency limit.

The limit lives on the Prefect API, so it holds across processes and machines (a `ganflow serve`
process, a manual `ganflow run`, Prefect workers on a cluster). Limits are created on first use
with one slot; Prefect renews the holder's lease while it runs and frees the slot if the holder
dies. Outside a Prefect run (a step called alone) there is nothing to collide with the flow's
bookkeeping, and the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import re
from typing import Iterator

log = logging.getLogger("ganflow.locks")


def limit_name(*parts: str) -> str:
    """A valid limit name (no '/', '%', '&', '<', '>') from parts such as a model name."""
    return "ganflow-" + "-".join(re.sub(r"[^A-Za-z0-9_.-]+", "_", p) for p in parts)


def _in_prefect_run() -> bool:
    from prefect.context import FlowRunContext, TaskRunContext
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def _ensure_limit(name: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
        except ObjectAlreadyExists:
            pass


@contextlib.contextmanager
def exclusive(name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the limit `name` for the block. Yields True when held; with wait=False, yields False
    at once when another run holds it (the block must then do nothing)."""
    if not _in_prefect_run():
        yield True
        return
    from prefect.concurrency.sync import concurrency

    _ensure_limit(name)
    with contextlib.ExitStack() as stack:
        try:
            # wait=False makes exactly one attempt (max_retries=0), however long the API takes to
            # answer it: a time window (it was 1 s) let two runs on a loaded machine both give up
            # on a free slot, and neither trained.
            stack.enter_context(concurrency(name, occupy=1, max_retries=None if wait else 0, strict=True))
        except Exception as err:
            if wait or not _held_by_another(err):
                raise
            log.warning("%s is held by another run: skipping", name)
            yield False
            return
        yield True


def _held_by_another(err: BaseException) -> bool:
    """True when an acquisition failed only because the slot is taken (HTTP 423 Locked); an
    unreachable API or any other error is not "busy" and must not be mistaken for it."""
    import httpx

    while err is not None:
        if isinstance(err, httpx.HTTPStatusError) and err.response.status_code == 423:
            return True
        err = err.__cause__ or err.__context__
    return False
