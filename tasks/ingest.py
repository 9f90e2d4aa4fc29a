"""Step 1, ingest: S3 prefix -> a versioned, validated, preprocessed data set.

The version is a content hash of the object manifest (relative key, ETag,
size, sorted) plus the preprocessing settings, so it does not depend on
listing order or endpoint. A version that exists already is returned without
downloading anything. A new one is built in a staging folder and renamed into
place, index last: a partial version is never visible.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import multiprocessing
import os
import shutil
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from gan_model.config import DataConfig
from gan_model.errors import GanflowError
from gan_model.images import InvalidImage, decode_image
from gan_model.shards import ShardWriter
from tasks.datastore import describe, publish, read_published_index, version_uri
from tasks.s3 import make_client, parse_s3_uri, s3_errors
from tasks.storage import atomic_write, is_s3
from tasks.types import DatasetVersion

log = logging.getLogger("ganflow.ingest")

PROCESS_DECODE_MIN_BYTES = 64 * 1024


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
    # Every preprocessing setting is in the version: the whole sub-model, not a list of names.
    settings = cfg.preprocessing().model_dump(mode="json")
    # format 2: decoder allowlist, JPEG draft and early reduce change some decoded pixels.
    h = hashlib.sha256(json.dumps({"format": 2, "settings": settings}, sort_keys=True).encode())
    for key, etag, size in sorted(manifest):
        h.update(json.dumps([key, etag, size]).encode())
    return h.hexdigest()[:16]


def _ordered_bounded(pool, fn, items, window: int) -> Iterator:
    """pool.map(fn, items) that keeps at most `window` calls in flight or unconsumed."""
    it = iter(items)
    pending = deque(pool.submit(fn, item) for item in itertools.islice(it, window))
    while pending:
        result = pending.popleft().result()
        pending.extend(pool.submit(fn, item) for item in itertools.islice(it, 1))
        yield result


def _cache_path(cache_dir: Path, bucket: str, key: str, etag: str) -> Path:
    # Object keys are never used as paths: "../../etc/passwd" is just bytes to hash.
    digest = hashlib.sha256(f"{bucket}/{key}\0{etag}".encode()).hexdigest()
    return cache_dir / "objects" / digest[:2] / digest


def check_source(cfg: DataConfig) -> None:
    """Fail fast, before any compute, on a missing bucket, bad credentials, an unreachable endpoint
    or an empty prefix."""
    bucket, prefix = parse_s3_uri(cfg.source)
    client = make_client(cfg.endpoint_url, cfg.region)
    with s3_errors("list", cfg.source, cfg.endpoint_url):
        page = client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    if not page.get("KeyCount", 0):
        raise GanflowError(f"no objects under {cfg.source}: upload images there or fix data.source")


def ingest_dataset(cfg: DataConfig) -> DatasetVersion:
    bucket, prefix = parse_s3_uri(cfg.source)
    client = make_client(cfg.endpoint_url, cfg.region, max_pool=cfg.download_workers)

    # 1. List (paginated) and derive the version from the manifest alone.
    t0 = time.perf_counter()
    with s3_errors("list", cfg.source, cfg.endpoint_url):
        manifest = list_manifest(client, bucket, prefix, cfg.max_images)
    if not manifest:
        raise GanflowError(f"no objects under {cfg.source}: upload images there or fix data.source")
    version = dataset_version(manifest, cfg)
    final = version_uri(cfg, version)
    existing = read_published_index(final, cfg)
    if existing is not None:
        log.info("data set %s already exists (%d objects listed in %.1fs): nothing to download",
                 version, len(manifest), time.perf_counter() - t0)
        return describe(final, existing, reused=True)

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
        atomic_write(path, body)
        with lock:
            downloaded += len(body)
        return body

    # 3. Decode, validate and write shards in a staging folder; skipped files
    #    are listed with their reason, duplicates (same bytes) counted once.
    # Staging sits beside a local destination (so publishing is one rename)
    # or in the cache for an S3 destination (published by upload, index last).
    staging_root = Path(final).parent if not is_s3(final) else cache_dir / "staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    for stale in staging_root.glob(".staging-*"):  # left by killed runs; live ones are recent
        if time.time() - stale.stat().st_mtime > 6 * 3600:
            shutil.rmtree(stale, ignore_errors=True)
    staging = staging_root / f".staging-{version}-{uuid.uuid4().hex[:8]}"
    writer = ShardWriter(staging, cfg.shard_size, cfg.channels, cfg.resolution)
    skipped: list[dict] = []
    seen: dict[str, str] = {}

    decode = functools.partial(decode_image, resolution=cfg.resolution, channels=cfg.channels,
                               max_pixels=cfg.max_pixels, small_images=cfg.small_images)
    n_procs = cfg.decode_processes
    if n_procs is None:
        # Small images decode in microseconds: shipping them to another process
        # costs more than it saves (measured in benchmarks/RESULTS.md). Photos
        # take milliseconds each and outgrow one core.
        mean_size = sum(size for _, _, size in manifest) / len(manifest)
        n_procs = min(8, os.cpu_count() or 1) if mean_size >= PROCESS_DECODE_MIN_BYTES else 0
    # forkserver: children start clean, not as forks of a process full of threads.
    decoders = ProcessPoolExecutor(n_procs, mp_context=multiprocessing.get_context("forkserver")) \
        if n_procs > 0 else None

    def process(item: tuple[str, str, int]):
        body = fetch(item)
        digest = hashlib.sha256(body).hexdigest()
        try:
            return digest, (decoders.submit(decode, body).result() if decoders else decode(body))
        except InvalidImage as err:
            return digest, str(err)

    try:
        with ThreadPoolExecutor(cfg.download_workers) as pool:
            # In manifest order (shards are identical across runs), with at most
            # a few objects per download thread in memory at any time.
            results = _ordered_bounded(pool, process, manifest, window=4 * cfg.download_workers)
            for (key, _, _), (digest, result) in zip(manifest, results):
                if digest in seen:
                    skipped.append({"key": key, "reason": "duplicate"})
                elif isinstance(result, str):
                    skipped.append({"key": key, "reason": result})
                else:
                    seen[digest] = key
                    writer.add(result)
        if not seen:
            example = f" (e.g. {skipped[0]['key']!r}: {skipped[0]['reason']})" if skipped else ""
            raise GanflowError(f"none of the {len(manifest)} objects under {cfg.source} is a usable image"
                                f"{example}: check data.source")
        index = writer.close(version=version, source=cfg.source, n_objects=len(manifest), skipped=skipped,
                             preprocessing=cfg.preprocessing().model_dump(mode="json"),
                             created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        # 4. Publish: a partial version is never visible.
        publish(staging, final, cfg)
    finally:
        if decoders:
            decoders.shutdown(cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
    log.info("data set %s: %d images, %d skipped, %.1f MB downloaded", version, index["n_images"],
             len(skipped), downloaded / 1e6)
    return describe(final, index, bytes_downloaded=downloaded, reused=False)
