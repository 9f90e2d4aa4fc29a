"""Ingest against a real S3-compatible server on loopback."""

import json
import os
import re
import signal
import subprocess
import sys
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

    # Another machine (a fresh cache) refuses a tampered shard, and a poisoned index before any
    # download; nothing of either is kept.
    from gan_model.shards import InvalidDataset
    other = cfg.model_copy(update={"cache_dir": str(tmp_path / "other-cache")})
    key = f"processed/{ds.version}/shard-00001.npy"
    shard = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    s3.put_object(Bucket=bucket, Key=key, Body=shard[:-1] + bytes([shard[-1] ^ 1]))
    with pytest.raises(InvalidDataset, match="shard sha256 does not match the index"):
        materialize(ds.uri, other)
    index = json.loads(s3.get_object(Bucket=bucket, Key=f"processed/{ds.version}/index.json")["Body"].read())
    index["shards"][0]["file"] = "../../../../escape.npy"
    s3.put_object(Bucket=bucket, Key=f"processed/{ds.version}/index.json", Body=json.dumps(index).encode())
    with pytest.raises(InvalidDataset, match="invalid index field shards.0.file"):
        materialize(ds.uri, other)
    assert not [p for p in (tmp_path / "other-cache").rglob("*") if p.is_file()]


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
    def cached() -> int:  # objects in the cache, not counting one still being written
        return sum(not p.name.endswith(".part") for p in (tmp_path / "cache" / "objects").glob("*/*"))
    deadline = time.monotonic() + 120
    while cached() < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the ingest finished before it could be killed"
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


def assert_only_hashed_layout(root: Path) -> None:
    """Every file under `root` is a cache object named by its hash or a published shard or index:
    no object key ever became a path."""
    for path in root.rglob("*"):
        rel = path.relative_to(root).parts
        if path.is_dir():
            assert rel[0] in ("cache", "ds") and len(rel) <= 3, rel
            continue
        if rel[0] == "cache":
            assert len(rel) == 4 and rel[1] == "objects" and re.fullmatch(r"[0-9a-f]{64}", rel[3]) \
                and rel[2] == rel[3][:2], rel
        else:
            assert len(rel) == 3 and rel[0] == "ds" and re.fullmatch(r"shard-\d{5}\.npy|index\.json", rel[2]), rel


def test_a_bucket_of_hostile_files_is_ingested_with_a_reason_for_each_skip(s3, s3_server, bucket, tmp_path,
                                                                           monkeypatch):
    """Every bad case in one prefix: the good ones are converted, the bad ones listed, nothing crashes,
    no key becomes a path and no decoder outside the allowlist runs."""
    from PIL import EpsImagePlugin, Image

    from tests.helpers import fake_program
    gs = fake_program(tmp_path.parent / f"{tmp_path.name}-bin", "gs")  # Ghostscript, as Pillow finds it
    monkeypatch.setenv("PATH", f"{gs.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)
    base = digits(16, size=24)
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
        "../../../../../../tmp/ganflow-escape.png": png(base[12]),
        "//etc/ganflow-passwd.png": png(base[13]),
        "..\\..\\windows.png": png(base[14]),
        "%2e%2e/%2e%2e/encoded.png": png(base[15]),
    }
    bad = {
        "zero.png": (b"", "empty file"),
        "truncated.png": (png(base[0].T)[:60], "corrupt or truncated image (OSError)"),
        "text.png": (b"<html>not an image</html>", "not a decodable image"),
        "bomb.png": (png(np.zeros((400, 400), np.uint8)), "too many pixels"),
        "zz-copy-of-rgb.png": (good["rgb.png"], "duplicate"),
        "figure.eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n", "unsupported format EPS"),
    }
    for key, body in list(good.items()) + [(k, v[0]) for k, v in bad.items()]:
        s3.put_object(Bucket=bucket, Key=f"h/{key}", Body=body)
    ds = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/h/", s3_server.url, "data.max_pixels=100000"))
    reasons = {s["key"]: s["reason"] for s in json.loads((Path(ds.uri) / "index.json").read_text())["skipped"]}
    assert ds.n_images == len(good), reasons
    for key, (_, reason) in bad.items():
        assert reasons[key].startswith(reason), (key, reasons[key])
    assert not (gs.parent / "gs.called").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "ds"]  # nothing escaped the cache
    assert_only_hashed_layout(tmp_path)
    assert not Path("/tmp/ganflow-escape.png").exists() and not Path("/etc/ganflow-passwd.png").exists()
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


def test_objects_over_the_size_limit_are_skipped_without_being_downloaded(s3, s3_server, bucket, tmp_path):
    upload_images(s3, bucket, "big/", digits(4))
    s3.put_object(Bucket=bucket, Key="big/huge.png", Body=png(np.random.default_rng(0).integers(
        0, 255, (400, 400), dtype=np.uint8)))  # about 160 KB
    ds = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/big/", s3_server.url, "data.max_object_bytes=100000"))
    assert ds.n_images == 4 and list(ds.skipped) == ["too large (160" + list(ds.skipped)[0][len("too large (160"):]]
    assert ds.bytes_downloaded < 100_000
    requests = Path(s3_server.log_path).read_text()
    assert f"GET /{bucket}/big/00000.png " in requests and f"/{bucket}/big/huge.png " not in requests.replace(
        f"PUT /{bucket}/big/huge.png ", "")


def test_objects_deleted_or_replaced_after_listing_are_skipped(s3, s3_server, bucket, tmp_path, monkeypatch):
    import tasks.ingest
    images = digits(6)
    upload_images(s3, bucket, "race/", images)
    real_listing = tasks.ingest.list_manifest

    def listing_then_changes(*args, **kwargs):  # someone edits the bucket between LIST and GET
        manifest = real_listing(*args, **kwargs)
        s3.delete_object(Bucket=bucket, Key="race/00000.png")
        s3.put_object(Bucket=bucket, Key="race/00001.png", Body=png(images[5].T))
        return manifest
    monkeypatch.setattr(tasks.ingest, "list_manifest", listing_then_changes)
    ds = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/race/", s3_server.url))
    reasons = {s["key"]: s["reason"] for s in json.loads((Path(ds.uri) / "index.json").read_text())["skipped"]}
    assert ds.n_images == 4 and reasons == {"00000.png": "vanished (deleted after it was listed)",
                                            "00001.png": "changed during ingest (its ETag no longer matches the listing)"}


def test_a_damaged_cache_entry_is_downloaded_again(s3, s3_server, bucket, tmp_path):
    upload_images(s3, bucket, "c/", digits(5))
    cfg = data_cfg(tmp_path, f"s3://{bucket}/c/", s3_server.url)
    first = ingest_dataset(cfg)
    objects = sorted((tmp_path / "cache" / "objects").glob("*/*"))
    objects[0].write_bytes(b"")  # what a lost write can leave under the final name
    objects[1].write_bytes(objects[1].read_bytes()[::-1])  # same size, other bytes: caught by the MD5
    stale = objects[2].with_name(objects[2].name + ".4242424-0123abcd.part")
    stale.write_bytes(b"half")
    os.utime(stale, (1, 1))  # from a writer long gone
    again = ingest_dataset(data_cfg(tmp_path, f"s3://{bucket}/c/", s3_server.url, "data.resolution=32"))  # a new version
    assert again.version != first.version and again.n_images == 5 and again.n_skipped == 0
    assert 0 < again.bytes_downloaded < first.bytes_downloaded  # just the two bad entries
    assert not stale.exists()


CRASH = png(np.full((20, 20), 7, np.uint8))


def crashing_decoder(data: bytes, **kwargs):
    """decode_image, except that one image kills the process decoding it (as a decoder segfault would)."""
    from gan_model.images import decode_image
    if data == CRASH:
        os.kill(os.getpid(), signal.SIGKILL)
    return decode_image(data, **kwargs)


def test_a_crashing_decoder_process_costs_one_named_object(s3, s3_server, bucket, tmp_path):
    upload_images(s3, bucket, "crash/", digits(12))
    s3.put_object(Bucket=bucket, Key="crash/0000-poison.png", Body=CRASH)
    cfg = data_cfg(tmp_path, f"s3://{bucket}/crash/", s3_server.url, "data.decode_processes=2")
    ds = ingest_dataset(cfg, decoder=crashing_decoder)
    reasons = {s["key"]: s["reason"] for s in json.loads((Path(ds.uri) / "index.json").read_text())["skipped"]}
    assert ds.n_images == 12 and reasons == {"0000-poison.png": "decoder process crashed (killed by SIGKILL)"}


BOMB_INGEST = """
import json, resource, sys
from gan_model.config import build_config
from tasks.ingest import ingest_dataset
cfg = build_config({}, sys.argv[1:]).data
ds = ingest_dataset(cfg)
print(json.dumps({"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "skipped": ds.skipped,
                  "n_images": ds.n_images}))
"""


@pytest.mark.slow  # its own S3 server and a subprocess
def test_decompression_bombs_are_skipped_with_bounded_memory(tmp_path):
    """A real bomb (144 megapixels in 140 KB) is skipped from its header, and a prefix of images just
    under the pixel limit (64 MB each once decoded, 62 KB on the wire) is decoded a few at a time,
    whatever the number of threads: the ingest's peak RSS stays bounded."""
    from infra.s3_server import LocalS3Server
    from tasks.s3 import make_client
    from tests.helpers import ROOT, bomb_png
    # A server of its own: the session's server, full of other tests' objects, answers at another
    # pace, and the peak measured below must not depend on what ran before.
    with LocalS3Server() as server:
        s3, bucket = make_client(server.url), "bombs"
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="bombs/000-huge.png", Body=bomb_png(12_000, 12_000))
        near_limit = bomb_png(4000, 3999, color_type=6)
        for i in range(16):
            s3.put_object(Bucket=bucket, Key=f"bombs/{i + 1:03d}-near.png", Body=near_limit)
        args = [f"data.source=s3://{bucket}/bombs/", f"data.endpoint_url={server.url}",
                f"data.processed_uri={tmp_path / 'ds'}", f"data.cache_dir={tmp_path / 'cache'}",
                "data.download_workers=16", "data.decode_processes=0"]  # decoded in this process's threads
        # A process as a user starts it: only what it needs from this test run's environment.
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG") or k.startswith("AWS_")}
        proc = subprocess.run([sys.executable, "-c", BOMB_INGEST, *args], capture_output=True, text=True,
                              env=dict(env, PYTHONPATH=str(ROOT)), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    assert result["n_images"] == 1 and result["skipped"] == {"too many pixels (12000x12000 > data.max_pixels=16000000)": 1,
                                                           "duplicate": 15}
    # Before the budgets this ingest peaked at 4.5 GB. With them it peaks at 450-560 MB when it
    # runs alone, but at 1.9-2.6 GB on the same machine after the end-to-end tests, in a clean
    # environment and against a server of its own (the cause is not found yet), so the bound is
    # set between the two: it still fails for unbounded decoding.
    assert result["peak_mb"] < 3500, result


def test_the_colour_texture_demo_ingests_into_seeded_reproducible_crops(s3, s3_server, bucket, tmp_path):
    from infra.sample_data import seed_bucket

    assert seed_bucket(s3, bucket, "textures/", "textures") == 5  # what `make run` seeds for configs/textures.yaml
    crops = ["data.channels=3", "data.resolution=32", "data.crops.size=64", "data.crops.per_image=8"]
    a = ingest_dataset(data_cfg(tmp_path / "a", f"s3://{bucket}/textures/", s3_server.url, *crops,
                                "data.decode_processes=0"))
    assert (a.n_images, a.channels, a.resolution, a.n_skipped) == (40, 3, 32, 0)  # 5 images x 8 crops
    images = ShardedImages(a.uri).take(range(40))
    assert images.shape == (40, 3, 32, 32)
    assert np.abs(images[:, 0].astype(int) - images[:, 2]).mean() > 5  # colour, not grey in three channels
    assert len({img.tobytes() for img in images}) == 40  # every crop from its own place
    # The same settings elsewhere (decoded in processes): the same version and the same pixels.
    b = ingest_dataset(data_cfg(tmp_path / "b", f"s3://{bucket}/textures/", s3_server.url, *crops,
                                "data.decode_processes=2"))
    assert b.version == a.version and ShardedImages(b.uri).index["shards"] == ShardedImages(a.uri).index["shards"]
    # Another crop seed: another version with other crops.
    c = ingest_dataset(data_cfg(tmp_path / "a", f"s3://{bucket}/textures/", s3_server.url, *crops,
                                "data.crops.seed=1", "data.decode_processes=0"))
    assert c.version != a.version and not np.array_equal(ShardedImages(c.uri).take(range(40)), images)

    # Crops larger than every image: one line naming the setting to change.
    upload_images(s3, bucket, "tiny/", digits(3, size=32))
    with pytest.raises(GanflowError, match=r"smaller than the crop \(32x32 < data.crops.size=64\); lower "
                                           r"data.crops.size.*check data.source") as err:
        ingest_dataset(data_cfg(tmp_path / "a", f"s3://{bucket}/tiny/", s3_server.url, *crops))
    assert "\n" not in str(err.value)
