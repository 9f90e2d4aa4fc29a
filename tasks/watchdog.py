"""A watchdog process that kills what a process started once that process is gone.

`start(roots)` runs this file as a child with a pipe on its stdin whose only writer is the
caller. The watchdog records the root processes and all their descendants once a second; when
the pipe closes (the caller exited, however it exited: SIGKILL, a crash, os._exit) it sends
SIGKILL to each recorded process that is still the same process (same start time), then exits.

Why: Ray's GCS server and raylet die with their parent (PR_SET_PDEATHSIG), but what the raylet
started (the dashboard agent, the runtime-env agent, idle workers) waits for them for many
seconds, or for good: after `ganflow run` was killed with SIGKILL they were still running 15 s
later, and so was Prefect's temporary API server, which Prefect starts without any such link.

The script uses the standard library only and is started by file path, not by module name, so
it does not depend on the caller's import path.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path
from typing import Iterable

SCAN_INTERVAL_S = 1.0


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, start time in clock ticks since boot) of every live process (from /proc)."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                text = f.read().decode(errors="replace")
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) ": state, ppid, ...
        if fields[0] not in ("Z", "X"):
            table[int(entry)] = (int(fields[1]), int(fields[19]))
    return table


def _scan(roots: set[int], tracked: dict[int, int]) -> None:
    """Add the roots and every live descendant of a tracked process to `tracked` (pid -> start)."""
    table = _processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    frontier = [p for p in roots if p in table]
    frontier += [p for p, start in tracked.items() if p in table and table[p][1] == start]
    while frontier:
        pid = frontier.pop()
        if pid not in tracked or tracked[pid] == table[pid][1]:
            tracked[pid] = table[pid][1]
            frontier.extend(c for c in children.get(pid, ()) if c not in tracked)


def _kill(tracked: dict[int, int], spare: set[int]) -> None:
    table = _processes()
    for pid, start in tracked.items():
        if pid in table and table[pid][1] == start and pid not in spare:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def start(roots: Iterable[int]) -> subprocess.Popen | None:
    """A watchdog over `roots` and their descendants, for as long as this process lives (None
    where there is no /proc)."""
    roots = sorted(set(roots))
    if not roots or not os.path.isdir("/proc/self/task"):
        return None
    # Its own session: Ctrl-C or a closed terminal reach the caller, which then stops what it
    # started itself; the watchdog acts only once the pipe closes.
    return subprocess.Popen([sys.executable, "-I", str(Path(__file__)), *map(str, roots)],
                            stdin=subprocess.PIPE, start_new_session=True)


def stop(watchdog: subprocess.Popen | None, timeout: float = 10) -> None:
    """Close the pipe now: the watchdog kills whatever of its processes is still running, then exits."""
    if watchdog is None:
        return
    watchdog.stdin.close()
    try:
        watchdog.wait(timeout)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def main(argv: list[str]) -> int:
    # Interrupts meant for the parent (Ctrl-C, a closed terminal) must not take the watchdog first.
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    roots = {int(a) for a in argv}
    # The caller closes the pipe on its way out (interpreter teardown closes files while it still
    # runs): it is never killed, whether or not it is one of the roots.
    spare = {os.getpid(), os.getppid()}
    tracked: dict[int, int] = {}
    while True:
        _scan(roots, tracked)
        ready, _, _ = select.select([sys.stdin], [], [], SCAN_INTERVAL_S)
        if ready and not os.read(sys.stdin.fileno(), 1):  # end of file: the parent is gone
            break
    _kill(tracked, spare)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
