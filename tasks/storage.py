"""One storage helper for "a local path or an s3:// URI".

- `is_s3(uri)`;
- `atomic_write(path, data)`: a unique temp name beside the file, fsync, rename;
- `staged(dest)`: the same for a folder or a file written by someone else (a download);
- `fetch_file_once` / `fetch_folder_once`: an S3 object or prefix copied once into the local
  cache; concurrent fetches on one machine race harmlessly (the first rename wins);
- `publish_folder(staging, uri)`: a complete folder made visible at a local path or S3 prefix,
  its index last, so a reader that finds the index finds everything.

A temp name is always unique (pid and random suffix), so two processes never write the same file,
and nothing half-written is ever visible under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

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


def fetch_file_once(uri: str, dest: Path, cfg: "DataConfig") -> Path:
    """The S3 object at `uri` as the local file `dest` (downloaded only when `dest` is missing)."""
    if dest.is_file():
        return dest
    bucket, key = parse_s3_uri(uri)
    with s3_errors("download", uri, cfg.endpoint_url), staged(dest) as tmp:
        make_client(cfg.endpoint_url, cfg.region).download_file(bucket, key, str(tmp))
    return dest


def fetch_folder_once(uri: str, dest: Path, cfg: "DataConfig", names: Iterable[str] | None = None,
                      complete_marker: str | None = None) -> Path:
    """The flat S3 prefix `uri` (or just `names` under it) as the local folder `dest`.

    The folder counts as present when `complete_marker` (default: any content) exists in it.
    """
    marker = dest / complete_marker if complete_marker else dest
    if marker.exists():
        return dest
    bucket, prefix = parse_s3_uri(uri.rstrip("/") + "/")
    client = make_client(cfg.endpoint_url, cfg.region)
    with s3_errors("download", uri, cfg.endpoint_url), staged(dest, folder=True) as tmp:
        if names is None:
            names = [obj["Key"][len(prefix):]
                     for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
                     for obj in page.get("Contents", [])]
        for name in names:
            if name and "/" not in name and name not in (".", ".."):  # flat folders only
                client.download_file(bucket, prefix + name, str(tmp / name))
    return dest


def cache_path(uri: str, cfg: "DataConfig", kind: str, suffix: str = "") -> Path:
    """Where the local copy of `uri` lives in the cache (a hash of the URI, never the URI itself)."""
    import hashlib

    return Path(cfg.cache_dir).expanduser().resolve() / kind / (hashlib.sha256(uri.encode()).hexdigest()[:16] + suffix)


def local_folder(uri: str, cfg: "DataConfig", kind: str, marker: str, names: Iterable[str] | None = None) -> Path:
    """A local folder with the content at `uri`: the path itself when local, else a copy fetched
    once into `<cache_dir>/<kind>/` (complete when it holds `marker`)."""
    if not is_s3(uri):
        return Path(uri)
    return fetch_folder_once(uri, cache_path(uri, cfg, kind), cfg, names=names, complete_marker=marker)


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
