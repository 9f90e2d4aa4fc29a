"""Where processed data set versions live: a local folder or an s3:// prefix.

On a multi-node Ray cluster workers share no disk, so `data.processed_uri`
may be an S3 prefix. The layout is the same either way (`<root>/<version>/`
holding shards and `index.json`), and the index is always written last: a
version whose index cannot be read does not exist.

Readers call `materialize(uri)` to get a local folder: a local version is
used in place; an S3 version is downloaded once per machine into the cache. Either way the index
is validated before use and every shard's sha256 is checked against it (an S3 copy before it is
given its place in the cache, which only this machine writes).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from gan_model.config import DataConfig
from gan_model.errors import GanflowError
from gan_model.shards import INDEX, VERSION_PATTERN, InvalidDataset, read_index, validate_index, verify_shards
from tasks.s3 import make_client, parse_s3_uri, s3_errors
from tasks.storage import cache_path, is_s3, local_folder, publish_folder
from tasks.types import DatasetVersion


def version_uri(cfg: DataConfig, version: str) -> str:
    root = cfg.processed_uri
    return f"{root.rstrip('/')}/{version}" if is_s3(root) else str(Path(root).expanduser().resolve() / version)


def read_published_index(uri: str, cfg: DataConfig) -> dict | None:
    """The version's validated index, or None when the version is not (completely) published."""
    if not is_s3(uri):
        return _same_version(read_index(uri), uri) if (Path(uri) / INDEX).is_file() else None
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(f"{uri}/{INDEX}")
    try:
        body = make_client(cfg.endpoint_url, cfg.region).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        with s3_errors("read", uri, cfg.endpoint_url):
            raise
    try:
        index = json.loads(body)
    except ValueError:
        index = None
    return _same_version(validate_index(index, f"{uri}/{INDEX}"), uri)


def _same_version(index: dict, uri: str) -> dict:
    if index["version"] != str(uri).rstrip("/").rsplit("/", 1)[-1]:
        raise InvalidDataset(f"{uri}/{INDEX}: it describes version {index['version']!r}, not the one its "
                             f"folder names: the data set was tampered with; run `ganflow ingest` again")
    return index


def describe(uri: str, index: dict, *, bytes_downloaded: int = 0, reused: bool) -> DatasetVersion:
    """The descriptor steps hand each other, from a version's index."""
    return DatasetVersion(
        uri=uri, version=index["version"], n_images=index["n_images"],
        resolution=index["resolution"], channels=index["channels"],
        n_skipped=len(index["skipped"]), skipped=dict(Counter(s["reason"] for s in index["skipped"])),
        bytes_downloaded=bytes_downloaded, reused=reused)


def published_version(cfg: DataConfig, version: str) -> DatasetVersion:
    """The published version `version` under data.processed_uri, or a one-line error."""
    if not re.fullmatch(VERSION_PATTERN, version):  # it may come from a registry tag: it becomes a path
        raise GanflowError(f"{version!r} is not a data set version name: check the registered run's "
                           f"ganflow.dataset_version tag")
    uri = version_uri(cfg, version)
    index = read_published_index(uri, cfg)
    if index is None:
        raise GanflowError(f"data set version {version!r} is not under {cfg.processed_uri}: "
                           f"set data.processed_uri or re-run `ganflow ingest`")
    return describe(uri, index, reused=True)


def publish(staging: Path, uri: str, cfg: DataConfig) -> None:
    """Make a complete staging folder the version at `uri`, index last."""
    publish_folder(staging, uri, cfg, index=INDEX)


def materialize(uri: str, cfg: DataConfig) -> Path:
    """A local folder holding the verified version at `uri` (downloaded once for an s3:// version)."""
    if not is_s3(uri):
        verify_shards(uri, read_index(uri))  # the folder may be shared storage others write
        return Path(uri)
    if (cache_path(uri, cfg, "processed") / INDEX).is_file():  # verified when it was put there
        return cache_path(uri, cfg, "processed")
    index = read_published_index(uri, cfg)
    if index is None:
        raise GanflowError(f"no published data set at {uri}: run `ganflow ingest` first")

    def verify(folder: Path) -> None:  # the index downloaded with the shards must be the one checked
        if read_index(folder) != index:
            raise InvalidDataset(f"{uri}/{INDEX} changed while the data set was downloaded: run again")
        verify_shards(folder, index)
    return local_folder(uri, cfg, "processed", marker=INDEX, verify=verify,
                        names=[s["file"] for s in index["shards"]] + [INDEX])  # the index last
