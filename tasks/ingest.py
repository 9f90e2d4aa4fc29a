"""Step 1, ingest: S3 prefix -> a versioned, validated, preprocessed data set.

The version is a content hash of the object manifest (relative key, ETag,
size, sorted) plus the preprocessing settings, so it does not depend on
listing order or endpoint. A version that exists already is returned without
downloading anything. A new one is built in a staging folder and renamed into
place, index last: a partial version is never visible.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gan_model.config import DataConfig
from gan_model.images import InvalidImage, decode_image
from gan_model.shards import INDEX, ShardWriter, read_index
from tasks.s3 import make_client, parse_s3_uri, s3_errors
from tasks.types import DatasetVersion, PipelineError

log = logging.getLogger("ganflow.ingest")

PREPROCESSING_FIELDS = ("resolution", "channels", "small_images", "max_pixels", "max_images")


def list_manifest(client, bucket: str, prefix: str, max_images: int | None = None) -> list[tuple[str, str, int]]:
    """(key relative to prefix, ETag, size) for every object under the prefix, sorted by key."""
    out = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            if obj["Key"].endswith("/"):  # "folder" placeholder objects
                continue
            out.append((obj["Key"][len(prefix):], obj["ETag"].strip('"'), int(obj["Size"])))
    out.sort()
    return out[:max_images] if max_images else out


def dataset_version(manifest: list[tuple[str, str, int]], cfg: DataConfig) -> str:
    settings = {k: getattr(cfg, k) for k in PREPROCESSING_FIELDS}
    h = hashlib.sha256(json.dumps({"format": 1, "settings": settings}, sort_keys=True).encode())
    for key, etag, size in sorted(manifest):
        h.update(json.dumps([key, etag, size]).encode())
    return h.hexdigest()[:16]


def _cache_path(cache_dir: Path, bucket: str, key: str, etag: str) -> Path:
    # Object keys are never used as paths: "../../etc/passwd" is just bytes to hash.
    digest = hashlib.sha256(f"{bucket}/{key}\0{etag}".encode()).hexdigest()
    return cache_dir / "objects" / digest[:2] / digest


def _descriptor(folder: Path, index: dict, *, bytes_downloaded: int = 0, reused: bool) -> DatasetVersion:
    return DatasetVersion(
        uri=str(folder), version=index["version"], n_images=index["n_images"],
        resolution=index["resolution"], channels=index["channels"],
        n_skipped=len(index["skipped"]), skipped=dict(Counter(s["reason"] for s in index["skipped"])),
        bytes_downloaded=bytes_downloaded, reused=reused)


def check_source(cfg: DataConfig) -> None:
    """Fail fast, before any compute, on a missing bucket, bad credentials, an unreachable endpoint
    or an empty prefix."""
    bucket, prefix = parse_s3_uri(cfg.source)
    client = make_client(cfg.endpoint_url, cfg.region)
    with s3_errors("list", cfg.source, cfg.endpoint_url):
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    if not page.get("KeyCount", 0):
        raise PipelineError(f"no objects under {cfg.source}: upload images there or fix data.source")


def ingest_dataset(cfg: DataConfig) -> DatasetVersion:
    bucket, prefix = parse_s3_uri(cfg.source)
    client = make_client(cfg.endpoint_url, cfg.region, max_pool=cfg.download_workers)

    # 1. List (paginated) and derive the version from the manifest alone.
    t0 = time.perf_counter()
    with s3_errors("list", cfg.source, cfg.endpoint_url):
        manifest = list_manifest(client, bucket, prefix, cfg.max_images)
    if not manifest:
        raise PipelineError(f"no objects under {cfg.source}: upload images there or fix data.source")
    version = dataset_version(manifest, cfg)
    root = Path(cfg.processed_uri).expanduser().resolve()
    final = root / version
    if (final / INDEX).is_file():
        log.info("data set %s already exists (%d objects listed in %.1fs): nothing to download",
                 version, len(manifest), time.perf_counter() - t0)
        return _descriptor(final, read_index(final), reused=True)

    # 2. Download what the ETag-keyed cache lacks, with a bounded pool.
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    downloaded = 0
    lock = threading.Lock()

    def fetch(item: tuple[str, str, int]) -> bytes:
        nonlocal downloaded
        key, etag, _ = item
        path = _cache_path(cache_dir, bucket, prefix + key, etag)
        if path.is_file():
            return path.read_bytes()
        with s3_errors("download", f"s3://{bucket}/{prefix}{key}", cfg.endpoint_url):
            body = client.get_object(Bucket=bucket, Key=prefix + key, IfMatch=etag)["Body"].read()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.part")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        with lock:
            downloaded += len(body)
        return body

    # 3. Decode, validate and write shards in a staging folder; skipped files
    #    are listed with their reason, duplicates (same bytes) counted once.
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{version}-{uuid.uuid4().hex[:8]}"
    writer = ShardWriter(staging, cfg.shard_size, cfg.channels, cfg.resolution)
    skipped: list[dict] = []
    seen: dict[str, str] = {}

    def process(item: tuple[str, str, int]):
        body = fetch(item)
        digest = hashlib.sha256(body).hexdigest()
        try:
            return digest, decode_image(body, resolution=cfg.resolution, channels=cfg.channels,
                                        max_pixels=cfg.max_pixels, small_images=cfg.small_images)
        except InvalidImage as err:
            return digest, str(err)

    try:
        with ThreadPoolExecutor(cfg.download_workers) as pool:
            # map() keeps manifest order, so shards are identical across runs.
            for (key, _, _), (digest, result) in zip(manifest, pool.map(process, manifest)):
                if digest in seen:
                    skipped.append({"key": key, "reason": "duplicate"})
                elif isinstance(result, str):
                    skipped.append({"key": key, "reason": result})
                else:
                    seen[digest] = key
                    writer.add(result)
        if not seen:
            example = f" (e.g. {skipped[0]['key']!r}: {skipped[0]['reason']})" if skipped else ""
            raise PipelineError(f"none of the {len(manifest)} objects under {cfg.source} is a usable image"
                                f"{example}: check data.source")
        index = writer.close(version=version, source=cfg.source, n_objects=len(manifest), skipped=skipped,
                             preprocessing={k: getattr(cfg, k) for k in PREPROCESSING_FIELDS},
                             created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        # 4. Publish atomically. A concurrent ingest of the same version may win
        #    the race; its result is identical, so ours is dropped.
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / INDEX).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("data set %s: %d images, %d skipped, %.1f MB downloaded", version, index["n_images"],
             len(skipped), downloaded / 1e6)
    return _descriptor(final, read_index(final), bytes_downloaded=downloaded, reused=False)
