"""Helpers for tests: real small images, uploads, and the smoke config in a temp folder."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


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
    root = Path(__file__).resolve().parent.parent
    return load_config(root / "configs" / "smoke.yaml", [
        f"data.source={source}", f"data.endpoint_url={endpoint}", "data.embedded_server=never",
        f"data.processed_uri={tmp / 'datasets'}", f"data.cache_dir={tmp / 'cache'}",
        f"train.storage_path={tmp / 'ray'}", f"eval.output_dir={tmp / 'eval'}",
        f"registry.tracking_uri=sqlite:///{tmp / 'mlflow.db'}", *extra])
