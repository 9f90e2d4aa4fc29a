"""eval.fid_weights resolution: files, s3:// URIs, and the one-line errors."""

import pytest

from gan_model.config import build_config
from gan_model.inception import sha256_file
from tasks.evaluate import resolve_weights
from gan_model.errors import GanflowError


def cfgs(weights, tmp_path, endpoint=None):
    c = build_config({}, [f"eval.fid_weights={weights}", f"data.cache_dir={tmp_path / 'cache'}"]
                     + ([f"data.endpoint_url={endpoint}"] if endpoint else []))
    return c.eval, c.data


def test_a_local_file_is_used_as_is(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"weights")
    assert resolve_weights(*cfgs(str(f), tmp_path)) == (f, "file")


def test_an_s3_uri_is_staged_once_in_the_cache(s3, s3_server, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="models/inception.pth", Body=b"x" * 1000)
    uri = f"s3://{bucket}/models/inception.pth"
    path, kind = resolve_weights(*cfgs(uri, tmp_path, s3_server.url))
    assert kind == "file" and path.read_bytes() == b"x" * 1000 and str(tmp_path / "cache") in str(path)
    s3.delete_object(Bucket=bucket, Key="models/inception.pth")
    assert resolve_weights(*cfgs(uri, tmp_path, s3_server.url))[0] == path  # no second download
    assert sha256_file(path)


def test_missing_file_and_missing_object_are_one_line_errors(s3_server, bucket, tmp_path):
    with pytest.raises(GanflowError, match="neither standard, auto, random"):
        resolve_weights(*cfgs(str(tmp_path / "nope.pth"), tmp_path))
    with pytest.raises(GanflowError, match="S3 download of s3://"):
        resolve_weights(*cfgs(f"s3://{bucket}/missing.pth", tmp_path, s3_server.url))


def test_standard_without_cache_or_network_says_how_to_provide_the_file(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*a, **k):
        raise OSError("network is unreachable")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(GanflowError, match="weights-inception-2015-12-05-6726825d.pth into"):
        resolve_weights(*cfgs("standard", tmp_path))
    assert resolve_weights(*cfgs("auto", tmp_path)) == (None, "random")
    cached = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(b"w")
    assert resolve_weights(*cfgs("standard", tmp_path)) == (cached, "standard")
