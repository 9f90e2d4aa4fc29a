"""One storage helper for "a local path or an s3:// URI".

- `is_s3(uri)`;
- `atomic_write(path, data)`: a unique temp name beside the file, fsync, rename;
- `staged(dest)`: the same for a folder or a file written by someone else (a download);
- `fetch_file_once` / `fetch_folder_once`: an S3 object or prefix copied once into the local
  cache, checked by the caller's `verify` before it is given its final name; concurrent fetches
  on one machine race harmlessly (the first rename wins);
- `read_cached_object(path, size, etag)`: a cached object, only when it still matches its listing;
- `sweep_stale_parts(folder)`: temp files and folders left by killed writers;
- `publish_folder(staging, uri)`: a complete folder made visible at a local path or S3 prefix,
  its index last, so a reader that finds the index finds everything.

A temp name is always unique (pid and random suffix), so two processes never write the same file,
and nothing half-written is ever visible under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from tasks.s3 import make_client, parse_s3_uri, s3_errors

if TYPE_CHECKING:
    from gan_model.config import DataConfig

PART_SUFFIX = ".part"


def is_s3(uri: str | Path) -> bool:
    return str(uri).startswith("s3://")


def temp_name(dest: Path) -> Path:
    """A name beside `dest` that no other writer uses."""
    return dest.with_name(f"{dest.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}{PART_SUFFIX}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(path: Path) -> None:
    if path.is_dir():
        for child in path.iterdir():
            _fsync_tree(child)
    _fsync(path)


@contextlib.contextmanager
def staged(dest: Path, *, folder: bool = False) -> Iterator[Path]:
    """Yield a unique temp path; on success it is flushed to disk and renamed to `dest`.

    When `dest` appeared meanwhile (another writer of the same content won), the temp copy is
    dropped. On failure nothing is left behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(dest)
    if folder:
        tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)  # the data is on disk before its name is
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.exists():
                raise
        _fsync(dest.parent)  # and the name too
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def atomic_write(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    with staged(path) as tmp:
        tmp.write_bytes(data)
    return path


def _writer_alive(part: Path) -> bool:
    match = re.search(r"\.(\d+)-[0-9a-f]{8}" + re.escape(PART_SUFFIX) + "$", part.name)
    if not match:
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def sweep_stale_parts(folder: Path, older_than_s: float = 3600) -> int:
    """Remove temp files and folders (`*.part`) under `folder` that a killed writer left behind:
    older than `older_than_s` and named after a process that no longer runs. -> how many."""
    swept = 0
    for part in Path(folder).rglob(f"*{PART_SUFFIX}") if Path(folder).is_dir() else ():
        try:
            if time.time() - part.lstat().st_mtime < older_than_s or _writer_alive(part):
                continue
            shutil.rmtree(part) if part.is_dir() and not part.is_symlink() else part.unlink()
            swept += 1
        except FileNotFoundError:  # another sweeper was first
            continue
    return swept


def is_plain_md5(etag: str) -> bool:
    """An ETag that is the object's MD5 (a single-part upload without SSE-KMS/SSE-C: those look the
    same, so a mismatch only ever costs a second download, never a skip)."""
    return re.fullmatch(r"[0-9a-f]{32}", etag) is not None


def read_cached_object(path: Path, size: int, etag: str) -> bytes | None:
    """The cached copy of an object, or None when it is missing or no longer matches its listing
    (a disk that lost a write can leave an empty or short file under the final name); a bad copy
    is removed so it is downloaded again."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) == size and (not is_plain_md5(etag) or hashlib.md5(data).hexdigest() == etag):
        return data
    path.unlink(missing_ok=True)
    return None


def fetch_file_once(uri: str, dest: Path, cfg: "DataConfig", verify: Callable[[Path], None] | None = None) -> Path:
    """The S3 object at `uri` as the local file `dest` (downloaded only when `dest` is missing).

    `verify(path)` runs on the download before it gets its final name and raises to refuse it.
    """
    if dest.is_file():
        return dest
    bucket, key = parse_s3_uri(uri)
    with staged(dest) as tmp:
        with s3_errors("download", uri, cfg.endpoint_url):
            make_client(cfg.endpoint_url, cfg.region).download_file(bucket, key, str(tmp))
        if verify:
            verify(tmp)
    return dest


def fetch_folder_once(uri: str, dest: Path, cfg: "DataConfig", names: Iterable[str] | None = None,
                      complete_marker: str | None = None, verify: Callable[[Path], None] | None = None) -> Path:
    """The flat S3 prefix `uri` (or just `names` under it) as the local folder `dest`.

    The folder counts as present when `complete_marker` (default: any content) exists in it.
    `verify(folder)` runs on the complete download before it gets its final name and raises to
    refuse it.
    """
    marker = dest / complete_marker if complete_marker else dest
    if marker.exists():
        return dest
    bucket, prefix = parse_s3_uri(uri.rstrip("/") + "/")
    client = make_client(cfg.endpoint_url, cfg.region)
    with staged(dest, folder=True) as tmp:
        with s3_errors("download", uri, cfg.endpoint_url):
            if names is None:
                names = [obj["Key"][len(prefix):]
                         for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                         for obj in page.get("Contents", [])]
            for name in names:
                if name and "/" not in name and name not in (".", ".."):  # flat folders only
                    client.download_file(bucket, prefix + name, str(tmp / name))
        if verify:
            verify(tmp)
    return dest


def cache_path(uri: str, cfg: "DataConfig", kind: str, suffix: str = "") -> Path:
    """Where the local copy of `uri` lives in the cache (a hash of the URI, never the URI itself)."""
    return Path(cfg.cache_dir).expanduser().resolve() / kind / (hashlib.sha256(uri.encode()).hexdigest()[:16] + suffix)


def local_folder(uri: str, cfg: "DataConfig", kind: str, marker: str, names: Iterable[str] | None = None,
                 verify: Callable[[Path], None] | None = None) -> Path:
    """A local folder with the content at `uri`: the path itself when local, else a copy fetched
    once into `<cache_dir>/<kind>/` (complete when it holds `marker`, checked by `verify`)."""
    if not is_s3(uri):
        return Path(uri)
    return fetch_folder_once(uri, cache_path(uri, cfg, kind), cfg, names=names, complete_marker=marker,
                             verify=verify)


def publish_folder(staging: Path, uri: str, cfg: "DataConfig", index: str) -> None:
    """Make the complete folder `staging` visible at `uri` (local path or S3 prefix), `index` last."""
    if not is_s3(uri):
        dest = Path(uri)
        _fsync_tree(staging)
        try:
            os.rename(staging, dest)
        except OSError:  # a concurrent writer of the same version won: its result is identical
            if not (dest / index).is_file():
                raise
        _fsync(dest.parent)
        return
    bucket, prefix = parse_s3_uri(uri.rstrip("/"))
    client = make_client(cfg.endpoint_url, cfg.region)
    files = sorted(p for p in staging.iterdir() if p.name != index)
    with s3_errors("upload", uri, cfg.endpoint_url):
        for path in [*files, staging / index]:
            client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
