"""The processed data set format: uint8 `.npy` shards plus `index.json`.

    <root>/<version>/shard-00000.npy   uint8 (n, C, H, W)
    <root>/<version>/index.json        written last: a version without it does not exist

Shards are memory-mapped on read, so a worker touches only the images it
trains on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

INDEX = "index.json"
FORMAT = "ganflow-shards/1"


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
    path = Path(folder) / INDEX
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path}: unknown data set format {index.get('format')!r}")
    return index


class ShardedImages:
    """Random access to the images of one processed data set version."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.index = read_index(self.folder)
        self._arrays = [np.load(self.folder / s["file"], mmap_mode="r") for s in self.index["shards"]]
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
