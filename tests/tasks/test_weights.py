"""eval.fid_weights resolution: files, s3:// URIs, their hash check, the one-line errors, and
weights files that carry code."""

import hashlib

import pytest

from gan_model.config import build_config
from gan_model.errors import GanflowError
from gan_model.inception import InceptionFeatures, WeightsUnavailable, sha256_file
from tasks.evaluate import registered_protocol, resolve_weights


def cfgs(weights, tmp_path, endpoint=None, sha256=None):
    c = build_config({}, [f"eval.fid_weights={weights}", f"data.cache_dir={tmp_path / 'cache'}"]
                     + ([f"data.endpoint_url={endpoint}"] if endpoint else [])
                     + ([f"eval.fid_weights_sha256={sha256}"] if sha256 else []))
    return c.eval, c.data


def test_a_local_file_is_used_only_with_the_expected_hash(tmp_path):
    f = tmp_path / "w.pth"
    f.write_bytes(b"weights")
    with pytest.raises(WeightsUnavailable, match="not the standard 2015-12-05 weights' 6726825d0af5f729"):
        resolve_weights(*cfgs(str(f), tmp_path))
    sha = hashlib.sha256(b"weights").hexdigest()
    assert resolve_weights(*cfgs(str(f), tmp_path, sha256=sha)) == (f, "file")
    with pytest.raises(WeightsUnavailable, match=f"set eval.fid_weights_sha256={sha} to use this file"):
        resolve_weights(*cfgs(str(f), tmp_path, sha256="f" * 64))


def test_an_s3_uri_is_staged_once_in_the_cache_and_only_with_the_expected_hash(s3, s3_server, bucket, tmp_path):
    s3.put_object(Bucket=bucket, Key="models/inception.pth", Body=b"x" * 1000)
    uri = f"s3://{bucket}/models/inception.pth"
    with pytest.raises(WeightsUnavailable, match="sha256"):
        resolve_weights(*cfgs(uri, tmp_path, s3_server.url))
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]  # a refused download is not kept
    sha = hashlib.sha256(b"x" * 1000).hexdigest()
    path, kind = resolve_weights(*cfgs(uri, tmp_path, s3_server.url, sha256=sha))
    assert kind == "file" and path.read_bytes() == b"x" * 1000 and str(tmp_path / "cache") in str(path)
    s3.delete_object(Bucket=bucket, Key="models/inception.pth")
    assert resolve_weights(*cfgs(uri, tmp_path, s3_server.url, sha256=sha))[0] == path  # no second download
    assert sha256_file(path) == sha


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
    cached.write_bytes(b"w")  # the right name is not enough
    with pytest.raises(GanflowError, match="is not the standard Inception weights file .*delete it"):
        resolve_weights(*cfgs("standard", tmp_path))


class Payload:
    """Unpickling this object runs open(marker, "w"): the file appears only if code ran."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_weights_file_is_refused_and_its_payload_never_runs(tmp_path):
    import torch

    marker = tmp_path / "payload-ran"
    weights = tmp_path / "inception.pth"
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "extra": Payload(str(marker))}, weights)
    with pytest.raises(WeightsUnavailable, match="sha256"):  # named by path: its hash is checked first
        resolve_weights(*cfgs(str(weights), tmp_path))
    # Even with its hash given on purpose, only tensors are read from it.
    path, _ = resolve_weights(*cfgs(str(weights), tmp_path, sha256=sha256_file(weights)))
    with pytest.raises(WeightsUnavailable, match="is not a plain tensor file") as err:
        InceptionFeatures(path)
    assert "\n" not in str(err.value)
    assert not marker.exists()


def test_evaluate_takes_only_the_protocol_from_a_registered_run():
    registered = {"data": {"processed_uri": "/somewhere/else", "endpoint_url": "http://attacker:9000"},
                  "eval": {"fid_weights": "s3://their-bucket/weights.pth", "n_generated": 512, "seed": 7,
                           "output_dir": "/etc", "fid_weights_sha256": "0" * 64, "num_workers": 64},
                  "registry": {"tracking_uri": "http://elsewhere:5000"}}
    assert registered_protocol(registered) == {"n_generated": 512, "seed": 7}
    assert registered_protocol({"eval": {"fid_weights": "random"}}) == {"fid_weights": "random"}
    assert registered_protocol("not a mapping") == {} and registered_protocol(None) == {}
