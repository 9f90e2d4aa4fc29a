"""Helpers for tests: real small images, uploads, configs with state in a temp folder, and the
pure training loop driven by a config."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SMOKE_CONFIG = ROOT / "configs" / "smoke.yaml"


def png(array: np.ndarray, **save_kwargs) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=save_kwargs.pop("format", "PNG"), **save_kwargs)
    return buf.getvalue()


def digits(n: int, size: int = 16) -> np.ndarray:
    """Real images: scikit-learn's handwritten digits, upscaled to `size`, uint8 (n, size, size)."""
    from PIL import Image
    from sklearn.datasets import load_digits
    x = (load_digits().images[:n] * (255 / 16)).astype(np.uint8)
    return np.stack([np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BICUBIC)) for a in x])


def upload_images(s3, bucket: str, prefix: str, images: np.ndarray) -> list[str]:
    keys = []
    for i, img in enumerate(images):
        key = f"{prefix}{i:05d}.png"
        s3.put_object(Bucket=bucket, Key=key, Body=png(img))
        keys.append(key)
    return keys


def tiny_config(tmp: Path, source: str, endpoint: str, *extra: str):
    """The smoke configuration with every state folder under `tmp`."""
    from gan_model.config import load_config
    return load_config(SMOKE_CONFIG, [
        f"data.source={source}", f"data.endpoint_url={endpoint}", "data.embedded_server=never",
        f"data.processed_uri={tmp / 'datasets'}", f"data.cache_dir={tmp / 'cache'}",
        f"train.storage_path={tmp / 'ray'}", f"eval.output_dir={tmp / 'eval'}",
        f"registry.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", *extra])


def tiny_training(*extra: str, **over):
    """A config whose networks and batches are tiny (16 px, widths 4): a step takes milliseconds."""
    from gan_model.config import build_config
    sets = ["data.resolution=16", "model.z_dim=8", "model.g_width=4", "model.d_width=4", "train.batch_size=8"]
    return build_config({}, sets + list(extra) + [f"{k}={v}" for k, v in over.items()])


def write_dataset(folder: Path, images: np.ndarray, version: str = "testversion", shard_size: int = 50):
    """A processed data set version from uint8 (N, H, W) grey images, and its descriptor."""
    from gan_model.shards import ShardWriter
    from tasks.types import DatasetVersion
    r = images.shape[-1]
    writer = ShardWriter(folder, shard_size, 1, r)
    for img in images:
        writer.add(img[None])
    writer.close(version=version, skipped=[])
    return DatasetVersion(uri=str(folder), version=version, n_images=len(images), resolution=r, channels=1)


def train_with(cfg, data, **kwargs) -> dict:
    """The pure training loop with the model, recipe and cadence of `cfg`."""
    from gan_model.training import train
    return train(cfg.model, cfg.train.recipe(), data, log_every=cfg.train.log_every,
                 checkpoint_every=cfg.train.checkpoint_every, **kwargs)


def clean_env(home: Path, **extra: str) -> dict:
    """The environment of a new user: no AWS, Prefect, MLflow or Ray settings, an empty HOME
    (so no ~/.aws or Prefect profile), and this checkout on PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "PREFECT_", "MLFLOW_", "RAY_ADDRESS"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), **extra)
    return env


def fake_generator(path: Path, seed: int, z_dim: int = 8, resolution: int = 16) -> Path:
    """An untrained generator (seeded weights), saved the way the pipeline exports one."""
    import torch

    from gan_model.networks import Generator
    torch.manual_seed(seed)
    g = Generator(z_dim=z_dim, width=4, channels=1, resolution=resolution)
    with torch.no_grad():  # BatchNorm statistics of its own activations, and an output layer
        for _ in range(10):  # strong enough that images differ visibly with z
            g(torch.randn(64, z_dim))
        [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1].weight.mul_(100)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kwargs": g.kwargs, "state_dict": g.state_dict(), "step": 1}, path)
    return path


def register_fake(cfg, folder: Path, fid: float, *, key: str = "P1", seed: int = 0, dataset_version: str = "dsv1"):
    """Register a seeded untrained generator with a given FID under protocol `key`, through the
    pipeline's register step (its own MLflow run: the training recipe differs by `seed`)."""
    from gan_model.images import save_png
    from tasks.register import register_generator
    from tasks.types import DatasetVersion, EvalResult, TrainResult

    cfg = cfg.model_copy(deep=True)
    cfg.train.seed = seed
    out = folder / f"fake-{seed}"
    grid = save_png(np.zeros((8, 8, 1), np.uint8), out / "samples.png")
    evaluation = EvalResult(
        fid=fid, kid=fid / 100, kid_std=0.01, n_generated=10, n_reference=10, comparable=False,
        protocol={"key": key, "weights": "random", "weights_sha256": "0" * 64, "n_generated": "10",
                  "n_reference": "10"},
        sample_grid=str(grid), generator_path=str(fake_generator(out / "generator.pt", seed, cfg.model.z_dim)))
    dataset = DatasetVersion(uri=str(folder / "no-such-dataset"), version=dataset_version, n_images=10,
                             resolution=16, channels=1)
    return register_generator(cfg, dataset, TrainResult(checkpoint_uri="unused", run_name="fake", steps=1), evaluation)


def bomb_png(width: int, height: int, color_type: int = 0) -> bytes:
    """A real decompression bomb: a valid PNG of `width` x `height` zero pixels (grey, or RGBA
    with color_type=6), compressed about 1000:1 and built row by row, so writing it never holds
    the image in memory."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = bytes(1 + width * (4 if color_type == 6 else 1))  # filter byte 0, then zero samples
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def fake_program(folder: Path, name: str) -> Path:
    """An executable `name` in `folder` that only records that it ran (folder/<name>.called)."""
    folder.mkdir(parents=True, exist_ok=True)
    exe = folder / name
    exe.write_text(f"#!/bin/sh\ntouch '{folder / (name + '.called')}'\nexit 1\n")
    exe.chmod(0o755)
    return exe


def start_cli(args, cwd: Path, env: dict, marker: str, **popen_kwargs):
    """`ganflow ARGS` started in the background, its stderr read line by line on a thread:
    (process, the lines so far, an Event set once a line contains `marker`, the reading thread,
    to join before trusting the lines to be all)."""
    import subprocess
    import sys
    import threading
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, stderr=subprocess.PIPE,
                            text=True, **popen_kwargs)
    lines: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if marker in line:
                seen.set()
    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    return proc, lines, seen, reader
