"""Decoding untrusted objects with bounded memory, where a crashing decoder costs one object.

- `Budget`: a shared allowance (object bytes held, pixels being decoded) that threads reserve
  before they work and give back after, so what is in memory at once does not grow with the
  number of threads.
- `DecoderPool`: decode calls in worker processes. When a worker dies (a decoder segfault, the
  kernel's OOM killer), every call in flight fails with it, but only one object caused it: those
  calls are repeated one by one in a fresh process each, which names the culprit, and the pool is
  replaced for the calls that follow.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Callable, Iterator


def return_large_buffers_to_the_os() -> None:
    """Make glibc serve every allocation of 1 MiB or more with mmap, so a decoded image's memory
    goes back to the OS when it is freed.

    By default glibc raises its mmap threshold (up to 32 MiB) after the first large free, and then
    keeps freed image buffers in per-thread arenas: with 16 download threads the process's RSS
    grew to 2.6 GB although the pixel budget held at most 4 images at once (measured in the bomb
    test). A fixed threshold also turns off that dynamic adjustment. No-op off glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class DecoderCrashed(Exception):
    """The process decoding one object died; `str(err)` says how."""


class Budget:
    """At most `capacity` units held at once across threads; a single request larger than the
    whole budget waits until it can run alone."""

    def __init__(self, capacity: int):
        self.capacity, self.used = capacity, 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, units: int) -> Iterator[None]:
        units = min(max(int(units), 0), self.capacity)
        with self._cond:
            self._cond.wait_for(lambda: self.used + units <= self.capacity)
            self.used += units
        try:
            yield
        finally:
            with self._cond:
                self.used -= units
                self._cond.notify_all()


def _call_and_send(conn, fn: Callable, args: tuple) -> None:
    try:
        conn.send((True, fn(*args)))
    except BaseException as err:  # handed back to the parent, which decides
        conn.send((False, err))
    finally:
        conn.close()


def run_isolated(fn: Callable, *args, context=None):
    """fn(*args) in a process of its own; DecoderCrashed if that process dies before answering."""
    ctx = context or multiprocessing.get_context("forkserver")
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_call_and_send, args=(send, fn, args), daemon=True)
    proc.start()
    send.close()  # only the child holds the sending end: its death ends the pipe
    try:
        ok, value = receive.recv()
    except EOFError:
        proc.join()
        code = proc.exitcode
        how = f"killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        raise DecoderCrashed(f"decoder process crashed ({how})") from None
    finally:
        receive.close()
        proc.join()
    if ok:
        return value
    raise value


class DecoderPool:
    """fn(*args) in `processes` worker processes, surviving the death of any of them."""

    def __init__(self, processes: int):
        # forkserver: children start clean, not as forks of a process full of threads.
        self._ctx = multiprocessing.get_context("forkserver")
        self._processes = processes
        self._lock = threading.Lock()
        self._pool = self._new_pool()
        self.crashes = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self._processes, mp_context=self._ctx)

    def run(self, fn: Callable, *args):
        pool = self._pool
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:  # the first caller to notice replaces it
                    self.crashes += 1
                    pool.shutdown(wait=False, cancel_futures=True)
                    self._pool = self._new_pool()
            return run_isolated(fn, *args, context=self._ctx)

    def shutdown(self) -> None:
        self._pool.shutdown(cancel_futures=True)
