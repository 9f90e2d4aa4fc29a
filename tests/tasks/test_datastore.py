"""Processed data set versions are read from storage others may write: a poisoned index or a
tampered shard is refused with one line before any of it is used."""

import json

import numpy as np
import pytest

from gan_model.config import build_config
from gan_model.shards import InvalidDataset, ShardedImages
from tasks.datastore import materialize
from tests.helpers import digits, write_dataset


def poison_shard_name(index):
    index["shards"][0]["file"] = "../../outside.npy"


def poison_absolute_name(index):
    index["shards"][1]["file"] = "/etc/passwd"


def poison_hash(index):
    index["shards"][0]["sha256"] = "0" * 64


def poison_count(index):
    index["n_images"] += 1


@pytest.mark.parametrize("poison,needle", [
    (poison_shard_name, "invalid index field shards.0.file '../../outside.npy'"),
    (poison_absolute_name, "invalid index field shards.1.file '/etc/passwd'"),
    (poison_hash, "shard sha256 does not match the index"),
    (poison_count, "n_images is not the sum of the shard counts"),
])
def test_a_poisoned_index_is_refused_with_one_line(tmp_path, poison, needle):
    ds = write_dataset(tmp_path / "v1", digits(20, size=16), shard_size=8)
    cfg = build_config({}, [f"data.cache_dir={tmp_path / 'cache'}"]).data
    assert len(ShardedImages(materialize(ds.uri, cfg))) == 20
    path = tmp_path / "v1" / "index.json"
    index = json.loads(path.read_text())
    poison(index)
    path.write_text(json.dumps(index))
    with pytest.raises(InvalidDataset) as err:
        materialize(ds.uri, cfg)
    message = str(err.value)
    assert needle in message and "\n" not in message and "ganflow ingest" in message
    assert not (tmp_path.parent / "outside.npy").exists()


def test_a_tampered_shard_is_refused(tmp_path):
    ds = write_dataset(tmp_path / "v1", digits(20, size=16), shard_size=8)
    shard = tmp_path / "v1" / "shard-00001.npy"
    arr = np.load(shard)
    arr[0, 0, 0, 0] ^= 1  # one bit, same shape and dtype
    np.save(shard, arr)
    with pytest.raises(InvalidDataset, match="shard-00001.npy: shard sha256 does not match the index"):
        materialize(ds.uri, build_config({}).data)
