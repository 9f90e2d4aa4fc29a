"""Step 1, ingest: S3 prefix -> a versioned, validated, preprocessed data set.

The version is a content hash of the object manifest (relative key, ETag,
size, sorted) plus the preprocessing settings, so it does not depend on
listing order or endpoint. A version that exists already is returned without
downloading anything. A new one is built in a staging folder and renamed into
place, index last: a partial version is never visible.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from gan_model.config import DataConfig
from gan_model.errors import GanflowError
from gan_model.images import InvalidImage, decode_crops, decode_image, decoded_samples
from gan_model.shards import ShardWriter
from tasks.datastore import describe, publish, read_published_index, version_uri
from tasks.decoding import Budget, DecoderCrashed, DecoderPool, return_large_buffers_to_the_os
from tasks.s3 import make_client, parse_s3_uri, s3_errors
from tasks.storage import atomic_write, is_s3, read_cached_object, sweep_stale_parts
from tasks.types import DatasetVersion

log = logging.getLogger("ganflow.ingest")

PROCESS_DECODE_MIN_BYTES = 64 * 1024
# At most this many objects' worth of the limits is in memory at once: object bytes held
# (data.max_object_bytes each) and pixels being decoded (data.max_pixels each). A decode holds
# up to about 10 bytes per pixel (16-bit PNGs; 1 for grey, 8 for RGBA), so with the defaults
# ingest holds about 256 MiB of objects and 640 MB of pixels at most, whatever the thread count.
BUDGET_OBJECTS = 4
# Decoded results waiting to be written, in texture mode, where one object becomes many crops.
CROP_RESULTS_BYTES = 512 << 20


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
    if settings["crops"] is None:  # added after format 2: off, it leaves existing versions' names as they were
        del settings["crops"]
    # format 2: decoder allowlist, JPEG draft and early reduce change some decoded pixels.
    h = hashlib.sha256(json.dumps({"format": 2, "settings": settings}, sort_keys=True).encode())
    for key, etag, size in sorted(manifest):
        h.update(json.dumps([key, etag, size]).encode())
    return h.hexdigest()[:16]


def crops_bytes(cfg: DataConfig) -> int:
    """Bytes of one object's decoded crops in texture mode."""
    return cfg.crops.per_image * cfg.channels * cfg.resolution ** 2


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


def _too_large(size: int, cfg: DataConfig) -> str:
    return f"too large ({size} bytes > data.max_object_bytes={cfg.max_object_bytes})"


def ingest_dataset(cfg: DataConfig, *, decoder: Callable[..., np.ndarray] = decode_image) -> DatasetVersion:
    """The data set version of `cfg.source` under `cfg`'s preprocessing, built when it is new.

    `decoder` (with `decode_image`'s signature) runs where decoding runs, in decoder processes
    when there are any, so it must be picklable; tests install one that crashes. With
    `data.crops` (texture mode) every object is decoded by `decode_crops` into many images.
    """
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

    # 2. Download what the ETag-keyed cache lacks, with a bounded pool. Memory is bounded by two
    #    budgets, not by the thread count: object bytes held (listed sizes; larger objects are
    #    skipped unread) and pixels being decoded (from each image's header).
    cache_dir = Path(cfg.cache_dir).expanduser().resolve()
    sweep_stale_parts(cache_dir)
    downloaded = 0
    lock = threading.Lock()
    return_large_buffers_to_the_os()  # the budgets below bound RSS only if freed buffers leave it
    object_bytes = Budget(BUDGET_OBJECTS * cfg.max_object_bytes)
    pixels = Budget(BUDGET_OBJECTS * cfg.max_pixels)

    def fetch(item: tuple[str, str, int]) -> bytes | str:
        """The object's bytes (from the cache when it still matches the listing), or why not."""
        nonlocal downloaded
        key, etag, size = item
        path = _cache_path(cache_dir, bucket, prefix + key, etag)
        cached = read_cached_object(path, size, etag)
        if cached is not None:
            return cached
        from botocore.exceptions import ClientError

        with s3_errors("download", f"s3://{bucket}/{prefix}{key}", cfg.endpoint_url):
            try:
                response = client.get_object(Bucket=bucket, Key=prefix + key, IfMatch=etag)
            except ClientError as err:
                code = err.response.get("Error", {}).get("Code", "")
                if code in ("NoSuchKey", "404"):  # deleted between LIST and GET
                    return "vanished (deleted after it was listed)"
                if code in ("PreconditionFailed", "412"):  # the version is keyed by the listed ETag
                    return "changed during ingest (its ETag no longer matches the listing)"
                raise
            with contextlib.closing(response["Body"]) as stream:
                body = stream.read(cfg.max_object_bytes + 1)  # never more than the limit, whatever is sent
        if len(body) != size:
            return (_too_large(len(body), cfg) if len(body) > cfg.max_object_bytes
                    else "changed during ingest (its size no longer matches the listing)")
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

    if cfg.crops is None:
        decode = functools.partial(decoder, resolution=cfg.resolution, channels=cfg.channels,
                                   max_pixels=cfg.max_pixels, small_images=cfg.small_images)
    else:  # texture mode: many crops per image, decoded at full scale
        decode = functools.partial(decode_crops, resolution=cfg.resolution, channels=cfg.channels,
                                   size=cfg.crops.size, count=cfg.crops.per_image, seed=cfg.crops.seed,
                                   max_pixels=cfg.max_pixels)
    budget_resolution = None if cfg.crops else cfg.resolution
    n_procs = cfg.decode_processes
    if n_procs is None:
        # Small images decode in microseconds: shipping them to another process
        # costs more than it saves (measured in benchmarks/RESULTS.md). Photos
        # take milliseconds each and outgrow one core.
        sizes = [size for _, _, size in manifest if size <= cfg.max_object_bytes]
        mean_size = sum(sizes) / max(1, len(sizes))
        n_procs = min(8, os.cpu_count() or 1) if mean_size >= PROCESS_DECODE_MIN_BYTES else 0
    decoders = DecoderPool(n_procs) if n_procs > 0 else None

    def process(item: tuple[str, str, int]) -> tuple[str | None, np.ndarray | str]:
        """-> (sha256 of the bytes or None, image or the reason it is skipped)."""
        key, _, size = item
        if size > cfg.max_object_bytes:
            return None, _too_large(size, cfg)
        with object_bytes.hold(size):
            body = fetch(item)
            if isinstance(body, str):
                return None, body
            digest = hashlib.sha256(body).hexdigest()
            try:
                # Counted in samples (pixels x bands): four grey images at the pixel limit decode
                # at once, but one RGBA one, whose copies are four times larger.
                with pixels.hold(decoded_samples(body, resolution=budget_resolution, max_pixels=cfg.max_pixels)):
                    return digest, (decoders.run(decode, body) if decoders else decode(body))
            except InvalidImage as err:
                return digest, str(err)
            except DecoderCrashed as err:
                log.warning("skipping %s: %s", key, err)
                return digest, str(err)
            except MemoryError:
                return digest, "out of memory while decoding"

    try:
        with ThreadPoolExecutor(cfg.download_workers) as pool:
            # In manifest order (shards are identical across runs), with at most
            # a few objects per download thread in memory at any time.
            window = 4 * cfg.download_workers
            if cfg.crops:  # an object's crops may be large: bound what waits in the window
                window = max(1, min(window, CROP_RESULTS_BYTES // crops_bytes(cfg)))
            results = _ordered_bounded(pool, process, manifest, window=window)
            for (key, _, _), (digest, result) in zip(manifest, results):
                if digest is not None and digest in seen:
                    skipped.append({"key": key, "reason": "duplicate"})
                elif isinstance(result, str):
                    skipped.append({"key": key, "reason": result})
                else:
                    seen[digest] = key
                    for image in (result if result.ndim == 4 else result[None]):  # crops: many per object
                        writer.add(image)
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
            decoders.shutdown()
        shutil.rmtree(staging, ignore_errors=True)
    log.info("data set %s: %d images, %d skipped, %.1f MB downloaded", version, index["n_images"],
             len(skipped), downloaded / 1e6)
    return describe(final, index, bytes_downloaded=downloaded, reused=False)
