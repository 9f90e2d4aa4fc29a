"""Ingest throughput from the local S3-compatible server, against its own ceiling and a naive loop.

In one run, on the same 5,000 PNGs:
- ceiling: a bare concurrent GET loop (32 threads, no decoding): what the server can serve;
- naive: list_objects_v2 + get_object + PIL decode, one object after another;
- ganflow: `ingest_dataset` from an empty cache (default settings, and decoding in threads);
- no-change re-run: `ingest_dataset` again, against the time of one full listing.
moto (Python) is itself the bottleneck on 2 cores, so ganflow is reported as a share of the
ceiling; client CPU time per image is what scales on a real store.
"""

from __future__ import annotations

import io
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _cpu() -> float:
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime


def _timed(fn):
    t, c = time.perf_counter(), _cpu()
    out = fn()
    return out, time.perf_counter() - t, _cpu() - c


def run(n: int = 5000) -> list[dict]:
    import numpy as np
    from PIL import Image

    from gan_model.config import build_config
    from infra.s3_server import LocalS3Server, local_credentials
    from infra.sample_data import load_sample, png_bytes
    from tasks.ingest import ingest_dataset, list_manifest
    from tasks.s3 import make_client

    rows: list[dict] = []
    work = Path(tempfile.mkdtemp(prefix="ganflow-bench-ingest-"))
    try:
        with LocalS3Server() as server, local_credentials():
            client = make_client(server.url, max_pool=32)
            client.create_bucket(Bucket="bench")
            images = load_sample("mnist")[:n]
            bodies = [png_bytes(img) for img in images]
            with ThreadPoolExecutor(32) as pool:
                list(pool.map(lambda i: client.put_object(Bucket="bench", Key=f"png/{i:05d}.png", Body=bodies[i]),
                              range(n)))
            mb = sum(map(len, bodies)) / 1e6
            keys = [f"png/{i:05d}.png" for i in range(n)]

            def ceiling():
                with ThreadPoolExecutor(32) as pool:
                    list(pool.map(lambda k: client.get_object(Bucket="bench", Key=k)["Body"].read(), keys))

            def naive():
                c = make_client(server.url)
                for page in c.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="png/"):
                    for obj in page["Contents"]:
                        body = c.get_object(Bucket="bench", Key=obj["Key"])["Body"].read()
                        np.asarray(Image.open(io.BytesIO(body)).convert("L"))

            def ingest(tag: str, *sets: str):
                cfg = build_config({}, ["data.source=s3://bench/png/", f"data.endpoint_url={server.url}",
                                        f"data.processed_uri={work / tag / 'ds'}",
                                        f"data.cache_dir={work / tag / 'cache'}", *sets]).data
                return lambda: ingest_dataset(cfg)

            _, t_ceiling, c_ceiling = _timed(ceiling)
            _, t_naive, c_naive = _timed(naive)
            ds, t_ours, c_ours = _timed(ingest("default"))
            assert ds.n_images == n, ds
            _, t_procs, c_procs = _timed(ingest("processes", "data.decode_processes=2"))
            again, t_again, _ = _timed(ingest("default"))
            assert again.reused and again.bytes_downloaded == 0
            _, t_list, _ = _timed(lambda: list_manifest(client, "bench", "png/"))

            rows.append({"what": "server ceiling (32-thread bare GET)", "img_s": n / t_ceiling,
                         "mb_s": mb / t_ceiling, "cpu_ms": 1e3 * c_ceiling / n})
            rows.append({"what": "naive sequential loop (list + get + PIL decode)", "img_s": n / t_naive,
                         "mb_s": mb / t_naive, "cpu_ms": 1e3 * c_naive / n})
            for what, t, c in (("ganflow ingest (default: small images decode in the download threads)",
                                t_ours, c_ours),
                               ("ganflow ingest (data.decode_processes=2)", t_procs, c_procs)):
                rows.append({"what": what, "img_s": n / t, "mb_s": mb / t, "cpu_ms": 1e3 * c / n,
                             "of_ceiling": t_ceiling / t, "vs_naive": t_naive / t})
            rows.append({"what": "no-change re-run vs one full listing", "rerun_s": t_again, "list_s": t_list,
                         "ratio": t_again / t_list})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def to_markdown(rows: list[dict]) -> list[str]:
    lines = ["| measurement | images/s | MB/s | client CPU ms/image | share of ceiling | vs naive |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        if "img_s" in r:
            share = f"{100 * r['of_ceiling']:.0f}%" if "of_ceiling" in r else ""
            naive = f"{r['vs_naive']:.2f}x" if "vs_naive" in r else ""
            lines.append(f"| {r['what']} | {r['img_s']:.0f} | {r['mb_s']:.2f} | {r['cpu_ms']:.2f} | {share} | {naive} |")
    for r in rows:
        if "ratio" in r:
            lines.append(f"\nNo-change re-run: {r['rerun_s']:.2f} s against {r['list_s']:.2f} s for one full "
                         f"listing ({r['ratio']:.2f}x).")
    return lines
