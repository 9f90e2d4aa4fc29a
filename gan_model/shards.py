"""The processed data set format: uint8 `.npy` shards plus `index.json`.

    <root>/<version>/shard-00000.npy   uint8 (n, C, H, W)
    <root>/<version>/index.json        written last: a version without it does not exist

Shards are memory-mapped on read, so a worker touches only the images it
trains on.

An index may come from shared storage that others can write, so it is validated before any of
it is used (`read_index`, `validate_index`): shard names are `shard-NNNNN.npy` and nothing else,
so joining them to a folder never leaves it, and `verify_shards` checks every shard's dtype,
shape and sha256 against the index.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from gan_model.errors import GanflowError

INDEX = "index.json"
FORMAT = "ganflow-shards/1"
SHARD_PATTERN = r"^shard-\d{5}\.npy$"
VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"  # it names folders and Ray runs


class InvalidDataset(GanflowError):
    """A processed data set version whose index or shards do not check out."""


def _refuse(where: str | Path, problem: str) -> InvalidDataset:
    return InvalidDataset(f"{where}: {problem}: the data set is corrupt or was tampered with; run `ganflow "
                          f"ingest` again into a data.processed_uri that only ganflow can write")


class _Shard(BaseModel):
    model_config = ConfigDict(extra="forbid")
    file: str = Field(pattern=SHARD_PATTERN)
    count: int = Field(gt=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class _Skipped(BaseModel):
    key: str
    reason: str


class _Index(BaseModel):
    model_config = ConfigDict(extra="allow")  # provenance fields (source, created_at...) are free-form
    format: Literal["ganflow-shards/1"]
    version: str = Field(pattern=VERSION_PATTERN)
    n_images: int = Field(ge=0)
    channels: Literal[1, 3]
    resolution: int = Field(ge=1, le=4096)
    shards: list[_Shard]
    skipped: list[_Skipped] = []

    @model_validator(mode="after")
    def _consistent(self) -> "_Index":
        if self.n_images != sum(s.count for s in self.shards):
            raise ValueError("n_images is not the sum of the shard counts")
        if len({s.file for s in self.shards}) != len(self.shards):
            raise ValueError("a shard is listed twice")
        return self


def validate_index(index: object, where: str | Path) -> dict:
    """`index` when it is a well-formed data set index, else a one-line InvalidDataset."""
    try:
        _Index.model_validate(index)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "index"
        value = f" {first['input']!r}" if not isinstance(first["input"], (dict, list)) else ""
        raise _refuse(where, f"invalid index field {field}{value} ({first['msg'].removeprefix('Value error, ')})") from None
    return index  # type: ignore[return-value]


def verify_shards(folder: str | Path, index: dict) -> None:
    """Every shard of `index` in `folder` has the dtype, shape and sha256 the index gives it."""
    folder = Path(folder)
    shape = (index["channels"], index["resolution"], index["resolution"])
    for shard in index["shards"]:
        path = folder / shard["file"]
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise _refuse(path, f"unreadable shard ({type(err).__name__})") from None
        if arr.dtype != np.uint8 or arr.shape != (shard["count"], *shape):
            raise _refuse(path, f"shard is {arr.dtype} {arr.shape}, the index says uint8 {(shard['count'], *shape)}")
        digest = hashlib.sha256()
        for start in range(0, len(arr), 1024):  # bounded memory whatever the shard size
            digest.update(np.ascontiguousarray(arr[start:start + 1024]).data)
        if digest.hexdigest() != shard["sha256"]:
            raise _refuse(path, "shard sha256 does not match the index")


class ShardWriter:
    """Accumulates images and writes a shard every `shard_size` images.

    Memory stays bounded by one shard whatever the data set size.
    """

    def __init__(self, folder: str | Path, shard_size: int, channels: int, resolution: int):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard_size, self.shape = shard_size, (channels, resolution, resolution)
        self._buf = np.empty((shard_size, *self.shape), np.uint8)
        self._n = 0
        self.shards: list[dict] = []

    def add(self, image: np.ndarray) -> None:
        if image.shape != self.shape:
            raise ValueError(f"image shape {image.shape} != {self.shape}")
        self._buf[self._n] = image
        self._n += 1
        if self._n == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if not self._n:
            return
        name = f"shard-{len(self.shards):05d}.npy"
        arr = self._buf[: self._n]
        np.save(self.folder / name, arr)
        self.shards.append({"file": name, "count": int(self._n),
                            "sha256": hashlib.sha256(arr.tobytes()).hexdigest()})
        self._n = 0

    def close(self, **index_fields) -> dict:
        """Flush the last shard and write the index (the commit point)."""
        self._flush()
        index = {"format": FORMAT, "n_images": sum(s["count"] for s in self.shards),
                 "channels": self.shape[0], "resolution": self.shape[1],
                 "shards": self.shards, **index_fields}
        tmp = self.folder / (INDEX + ".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        tmp.replace(self.folder / INDEX)
        return index


def read_index(folder: str | Path) -> dict:
    """The validated index of the version in `folder`."""
    path = Path(folder) / INDEX
    try:
        index = json.loads(path.read_text())
    except ValueError:
        raise _refuse(path, "not JSON") from None
    return validate_index(index, path)


class ShardedImages:
    """Random access to the images of one processed data set version."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self._arrays = [np.load(self.folder / s["file"], mmap_mode="r", allow_pickle=False)
                        for s in self.index["shards"]]
        for s, arr in zip(self.index["shards"], self._arrays):  # cheap; the hashes: verify_shards
            if arr.dtype != np.uint8 or arr.shape != (s["count"], *self.shape):
                raise _refuse(self.folder / s["file"], "shard shape or dtype differs from the index")
        self._starts = np.cumsum([0] + [len(a) for a in self._arrays])

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.index["channels"], self.index["resolution"], self.index["resolution"])

    def take(self, indices) -> np.ndarray:
        """uint8 (len(indices), C, H, W), in the order given."""
        indices = np.asarray(indices, dtype=np.int64)
        out = np.empty((len(indices), *self.shape), np.uint8)
        shard = np.searchsorted(self._starts, indices, side="right") - 1
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            out[sel] = self._arrays[s][indices[sel] - self._starts[s]]
        return out
