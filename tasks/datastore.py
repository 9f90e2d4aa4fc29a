"""Where processed data set versions live: a local folder or an s3:// prefix.

On a multi-node Ray cluster workers share no disk, so `data.processed_uri`
may be an S3 prefix. The layout is the same either way (`<root>/<version>/`
holding shards and `index.json`), and the index is always written last: a
version whose index cannot be read does not exist.

Readers call `materialize(uri)` to get a local folder: a local version is
used in place; an S3 version is downloaded once per machine into the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from gan_model.config import DataConfig
from gan_model.shards import INDEX, read_index
from tasks.s3 import make_client, parse_s3_uri, s3_errors


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def version_uri(cfg: DataConfig, version: str) -> str:
    root = cfg.processed_uri
    return f"{root.rstrip('/')}/{version}" if is_s3(root) else str(Path(root).expanduser().resolve() / version)


def read_published_index(uri: str, cfg: DataConfig) -> dict | None:
    """The version's index, or None when the version is not (completely) published."""
    if not is_s3(uri):
        return read_index(uri) if (Path(uri) / INDEX).is_file() else None
    from botocore.exceptions import ClientError

    bucket, key = parse_s3_uri(f"{uri}/{INDEX}")
    try:
        body = make_client(cfg.endpoint_url, cfg.region).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        with s3_errors("read", uri, cfg.endpoint_url):
            raise
    return json.loads(body)


def publish(staging: Path, uri: str, cfg: DataConfig) -> None:
    """Make a complete staging folder the version at `uri`, index last."""
    if not is_s3(uri):
        try:
            os.rename(staging, uri)
        except OSError:  # a concurrent ingest of the same version won: its result is identical
            if not (Path(uri) / INDEX).is_file():
                raise
        return
    bucket, prefix = parse_s3_uri(uri)
    client = make_client(cfg.endpoint_url, cfg.region)
    files = sorted(p for p in staging.iterdir() if p.name != INDEX)
    with s3_errors("upload", uri, cfg.endpoint_url):
        for path in files:
            client.upload_file(str(path), bucket, f"{prefix}/{path.name}")
        client.upload_file(str(staging / INDEX), bucket, f"{prefix}/{INDEX}")


def materialize(uri: str, cfg: DataConfig) -> Path:
    """A local folder holding the version at `uri` (downloaded once for an s3:// version)."""
    if not is_s3(uri):
        return Path(uri)
    local = Path(cfg.cache_dir).expanduser().resolve() / "processed" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if (local / INDEX).is_file():
        return local
    index = read_published_index(uri, cfg)
    if index is None:
        from tasks.types import PipelineError
        raise PipelineError(f"no published data set at {uri}: run `ganflow ingest` first")
    bucket, prefix = parse_s3_uri(uri)
    client = make_client(cfg.endpoint_url, cfg.region)
    tmp = local.with_name(f"{local.name}.{uuid.uuid4().hex[:8]}.part")
    tmp.mkdir(parents=True)
    try:
        with s3_errors("download", uri, cfg.endpoint_url):
            for shard in index["shards"]:
                client.download_file(bucket, f"{prefix}/{shard['file']}", str(tmp / shard["file"]))
        (tmp / INDEX).write_text(json.dumps(index))
        try:
            os.rename(tmp, local)
        except OSError:  # another process on this machine got there first
            if not (local / INDEX).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return local
