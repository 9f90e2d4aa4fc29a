"""Ingest against a real S3-compatible server on loopback."""

import json
from pathlib import Path

import numpy as np
import pytest

from gan_model.config import build_config
from gan_model.shards import ShardedImages
from tasks.ingest import ingest_dataset
from gan_model.errors import GanflowError
from tests.helpers import digits, png, upload_images


def data_cfg(tmp_path, source, endpoint, *extra):
    return build_config({}, [f"data.source={source}", f"data.endpoint_url={endpoint}",
                             f"data.processed_uri={tmp_path / 'ds'}", f"data.cache_dir={tmp_path / 'cache'}",
                             "data.resolution=16", "data.shard_size=16", *extra]).data


def test_ingest_versions_validates_and_reuses(s3, s3_server, bucket, tmp_path):
    images = digits(40)
    upload_images(s3, bucket, "set/", images)
    s3.put_object(Bucket=bucket, Key="set/broken.png", Body=png(images[0])[:50])
    s3.put_object(Bucket=bucket, Key="set/notes.txt", Body=b"hello")
    s3.put_object(Bucket=bucket, Key="set/dup.png", Body=png(images[1]))
    s3.put_object(Bucket=bucket, Key="set/../escape.png", Body=png(images[2][::-1]))
    s3.put_object(Bucket=bucket, Key="set/noextension", Body=png(images[3].T))
    cfg = data_cfg(tmp_path, f"s3://{bucket}/set/", s3_server.url)

    ds = ingest_dataset(cfg)
    assert ds.n_images == 42  # 40 + the ".." key + the extension-less image
    assert ds.skipped == {"duplicate": 1, "not a decodable image": 1, "corrupt or truncated image (OSError)": 1}
    assert ds.bytes_downloaded > 0 and not ds.reused
    data = ShardedImages(ds.uri)
    assert len(data) == 42 and data.take([0, 41]).shape == (2, 1, 16, 16)
    assert len(data.index["shards"]) == 3  # 16 + 16 + 10
    reasons = {s["key"]: s["reason"] for s in json.loads((Path(ds.uri) / "index.json").read_text())["skipped"]}
    assert reasons["notes.txt"] == "not a decodable image" and reasons["dup.png"] == "duplicate"
    # Keys are never paths: nothing was written outside the cache and data set folders.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ds"]

    again = ingest_dataset(cfg)
    assert again.version == ds.version and again.reused and again.bytes_downloaded == 0

    # One object changed -> a new version; only that object is downloaded.
    s3.put_object(Bucket=bucket, Key="set/00000.png", Body=png(images[5]))
    changed = ingest_dataset(cfg)
    assert changed.version != ds.version and not changed.reused
    assert 0 < changed.bytes_downloaded < ds.bytes_downloaded / 10


def test_version_depends_on_preprocessing_not_on_location(s3, s3_server, bucket, tmp_path):
    upload_images(s3, bucket, "a/", digits(20))
    upload_images(s3, bucket, "b/", digits(20))
    v_a = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/a/", s3_server.url)).version
    v_b = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/b/", s3_server.url)).version
    v_32 = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/a/", s3_server.url, "data.resolution=32")).version
    assert v_a == v_b and v_a != v_32


def test_listing_is_paginated_beyond_1000_objects(s3, s3_server, bucket, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    body = png(digits(1)[0])
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"many/{i:05d}.png", Body=body), range(1100)))
    from tasks.ingest import list_manifest
    manifest = list_manifest(s3, bucket, "many/")
    assert len(manifest) == 1100 and manifest[0][0] == "00000.png"


@pytest.mark.parametrize("case", ["empty prefix", "missing bucket", "all invalid"])
def test_bad_sources_raise_one_line_errors(s3, s3_server, bucket, tmp_path, case):
    if case == "all invalid":
        s3.put_object(Bucket=bucket, Key="junk/a.png", Body=b"nope")
    source = {"empty prefix": f"s3://{bucket}/nothing/", "missing bucket": "s3://no-such-bucket-x/p/",
              "all invalid": f"s3://{bucket}/junk/"}[case]
    with pytest.raises(GanflowError) as err:
        ingest_dataset(data_cfg(tmp_path, source, s3_server.url))
    message = str(err.value)
    assert "\n" not in message
    assert {"empty prefix": "no objects under", "missing bucket": "does not exist",
            "all invalid": "none of the 1 objects"}[case] in message
    assert not (tmp_path / "ds").exists() or not any((tmp_path / "ds").glob("*/index.json"))


def test_processed_data_can_live_in_s3(s3, s3_server, bucket, tmp_path):
    from tasks.datastore import materialize
    upload_images(s3, bucket, "src/", digits(30))
    cfg = data_cfg(tmp_path, f"s3://{bucket}/src/", s3_server.url, f"data.processed_uri=s3://{bucket}/processed")
    ds = ingest_dataset(cfg)
    assert ds.uri == f"s3://{bucket}/processed/{ds.version}" and ds.n_images == 30
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="processed/")["Contents"]]
    assert f"processed/{ds.version}/index.json" in keys and len(keys) == 3  # 2 shards of 16 + index
    assert not (tmp_path / "ds").exists()  # nothing published locally
    assert ingest_dataset(cfg).reused
    local = materialize(ds.uri, cfg)
    assert len(ShardedImages(local)) == 30 and materialize(ds.uri, cfg) == local


def test_a_killed_ingest_leaves_no_partial_version_and_a_rerun_completes(s3, s3_server, bucket, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time
    from concurrent.futures import ThreadPoolExecutor

    images = digits(600)
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"big/{i:05d}.png", Body=png(images[i])),
                      range(len(images))))
    root = Path(__file__).resolve().parents[2]
    args = [sys.executable, "-m", "flows.cli", "ingest", "--source", f"s3://{bucket}/big/",
            "--endpoint-url", s3_server.url, "--set", f"data.processed_uri={tmp_path / 'ds'}",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.resolution=16",
            "--set", "data.download_workers=2", "--set", "data.decode_processes=0", "--json"]
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache" / "objects").glob("*/*")) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)  # mid-download: no cleanup runs
    proc.wait()
    assert not list((tmp_path / "ds").glob("*/index.json"))  # no version is visible
    rerun = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    ds = json.loads(rerun.stdout)
    assert ds["n_images"] == 600 and ds["n_skipped"] == 0
    assert ds["bytes_downloaded"] < sum(len(png(i)) for i in images)  # the cache kept the first run's work
    assert len(ShardedImages(ds["uri"])) == 600


def test_decoding_in_processes_gives_identical_shards(s3, s3_server, bucket, tmp_path):
    upload_images(s3, bucket, "p/", digits(40))
    s3.put_object(Bucket=bucket, Key="p/bad.png", Body=b"\x89PNG broken")
    a = ingest_dataset(data_cfg(tmp_path / "a", f"s3://{bucket}/p/", s3_server.url, "data.decode_processes=0"))
    b = ingest_dataset(data_cfg(tmp_path / "b", f"s3://{bucket}/p/", s3_server.url, "data.decode_processes=2"))
    assert a.version == b.version and a.skipped == b.skipped == {"not a decodable image": 1}
    assert ShardedImages(a.uri).index["shards"] == ShardedImages(b.uri).index["shards"]  # same sha256s


def _encoded(img, fmt, **kw):
    import io
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_a_bucket_of_hostile_files_is_ingested_with_a_reason_for_each_skip(s3, s3_server, bucket, tmp_path):
    """Every bad case in one prefix: the good ones are converted, the bad ones listed, nothing crashes."""
    from PIL import Image
    base = digits(12, size=24)
    good = {
        "rgb.png": _encoded(Image.fromarray(np.stack([base[0]] * 3, -1)), "PNG"),
        "grey.jpg": _encoded(Image.fromarray(base[1]), "JPEG", quality=95),
        "sixteen.png": _encoded(Image.fromarray(base[2].astype(np.uint16) * 257), "PNG"),
        "cmyk.jpg": _encoded(Image.fromarray(np.stack([base[3]] * 3, -1)).convert("CMYK"), "JPEG"),
        "palette.png": _encoded(Image.fromarray(base[4]).convert("P"), "PNG", transparency=0),
        "animated.gif": _encoded(Image.fromarray(base[5]), "GIF", save_all=True,
                                 append_images=[Image.fromarray(base[6])]),
        "rotated.jpg": _encoded(Image.fromarray(base[7]), "JPEG",
                                exif=(lambda e: (e.__setitem__(0x0112, 6), e.tobytes())[1])(Image.Exif())),
        "no-extension": png(base[8]),
        "small.png": png(base[9][:8, :8]),  # upscaled (data.small_images=upscale)
        "odd name ü %.png": png(base[10]),
        "/abs/../../escape.png": png(base[11]),
    }
    bad = {
        "zero.png": (b"", "empty file"),
        "truncated.png": (png(base[0].T)[:60], "corrupt or truncated image (OSError)"),
        "text.png": (b"<html>not an image</html>", "not a decodable image"),
        "bomb.png": (png(np.zeros((400, 400), np.uint8)), "too many pixels"),
        "zz-copy-of-rgb.png": (good["rgb.png"], "duplicate"),
    }
    for key, body in list(good.items()) + [(k, v[0]) for k, v in bad.items()]:
        s3.put_object(Bucket=bucket, Key=f"h/{key}", Body=body)
    ds = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/h/", s3_server.url, "data.max_pixels=100000"))
    reasons = {s["key"]: s["reason"] for s in json.loads((Path(ds.uri) / "index.json").read_text())["skipped"]}
    assert ds.n_images == len(good), reasons
    for key, (_, reason) in bad.items():
        assert reasons[key].startswith(reason), (key, reasons[key])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ds"]  # nothing escaped the cache
    strict = ingest_dataset(data_cfg(tmp_path / "strict", f"s3://{bucket}/h/", s3_server.url,
                                     "data.small_images=skip", "data.max_pixels=100000"))
    assert strict.n_images == len(good) - 1 and any(r.startswith("smaller than the target") for r in strict.skipped)


@pytest.mark.slow  # starts its own IAM-enforcing S3 server
def test_access_denied_is_named(tmp_path):
    """A real store's answer to valid credentials without permission (moto with IAM enforcement)."""
    import boto3

    from infra.s3_server import LocalS3Server
    from tasks.ingest import check_source
    with LocalS3Server(authenticate=True, unauthenticated_actions=2) as strict:
        # The two free calls create an IAM user with valid keys and no policy at all.
        iam = boto3.client("iam", endpoint_url=strict.url, region_name="us-east-1")
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        import os
        old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        os.environ.update(AWS_ACCESS_KEY_ID=key["AccessKeyId"], AWS_SECRET_ACCESS_KEY=key["SecretAccessKey"])
        try:
            with pytest.raises(GanflowError, match="access denied to s3://any-bucket/x/ .*s3:ListBucket"):
                check_source(data_cfg(tmp_path, "s3://any-bucket/x/", strict.url))
        finally:
            os.environ.update({k: v for k, v in old.items() if v is not None})
