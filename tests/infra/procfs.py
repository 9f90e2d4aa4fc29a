"""Process facts read from /proc (Linux), without psutil."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Iterator


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # fields after "pid (comm) ": state, ppid, pgrp, ...


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (exited, waiting to be reaped) counts as gone."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def processes() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, process group) of every live process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[0] not in ("Z", "X"):
            out[int(entry)] = (int(fields[1]), int(fields[2]))
    return out


def descendants(pid: int) -> set[int]:
    table = processes()
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


def group_members(pgid: int) -> set[int]:
    return {p for p, (_, group) in processes().items() if group == pgid}


def _listening() -> Iterator[tuple[str, int, str]]:
    """(hex address, port, socket inode) of every TCP socket in LISTEN state, IPv4 and IPv6."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A":  # 0A: LISTEN
                address, hexport = fields[1].rsplit(":", 1)
                yield address, int(hexport, 16), fields[9]


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a socket listening on `port` (hex, as /proc/net/tcp* shows them)."""
    return {address for address, p, _ in _listening() if p == port}


LOOPBACK_V4 = "0100007F"  # 127.0.0.1 in /proc/net/tcp's little-endian hex


def answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        opener.open(url, timeout=2).close()
        return True
    except Exception:
        return False


def wait_until(condition, timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return condition()


def start_time(pid: int) -> int | None:
    """Clock ticks after boot at which `pid` started: tells a process from a later one with its pid."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _decode_address(hex_address: str) -> str:
    import socket
    raw = bytes.fromhex(hex_address)
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is little-endian
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw)


def listening_sockets(pids) -> set[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state held by one of `pids`."""
    listening = {inode: (_decode_address(address), port) for address, port, inode in _listening()}
    found = set()
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in listening:
                found.add((*listening[target[8:-1]], pid))
    return found


def is_loopback(address: str) -> bool:
    import ipaddress
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)
