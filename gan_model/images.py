"""Decode, validate and preprocess one image; tile images into a grid.

`decode_image` never trusts a file name or extension: it looks at the bytes.
Every rejection raises `InvalidImage` with a short reason that ends up in the
data set version's report.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class InvalidImage(ValueError):
    """The bytes are not a usable image; `str(err)` is the reason."""


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    # Palette and transparency: composite over black so transparent pixels
    # do not show whatever colour the palette happened to store.
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float greyscale: scale the full range to 8 bits.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)  # CMYK, YCbCr, 1-bit...


def decode_image(
    data: bytes,
    *,
    resolution: int,
    channels: int,
    max_pixels: int = 64_000_000,
    small_images: str = "upscale",
) -> np.ndarray:
    """Bytes -> uint8 array (channels, resolution, resolution), centre-cropped and resized."""
    if not data:
        raise InvalidImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise InvalidImage(f"too many pixels ({width}x{height} > data.max_pixels={max_pixels})")
            img.seek(0)  # animated GIF/PNG/WebP: the first frame
            img.load()
    except InvalidImage:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise InvalidImage("not a decodable image" if isinstance(err, UnidentifiedImageError)
                           else f"decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidImage(f"corrupt or truncated image ({type(err).__name__})") from None

    if min(img.size) < resolution and small_images == "skip":
        raise InvalidImage(f"smaller than the target ({img.size[0]}x{img.size[1]} < {resolution}); "
                           f"set data.small_images=upscale to keep it")
    try:
        img = _to_mode(ImageOps.exif_transpose(img), channels)  # phone photos store rotation in EXIF
    except Exception as err:  # exotic modes (LAB, multi-band TIFF...) PIL cannot convert
        raise InvalidImage(f"unsupported image mode {img.mode} ({type(err).__name__})") from None
    # Centre crop to a square, then one high-quality resize (Lanczos
    # antialiases when shrinking).
    side = min(img.size)
    left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def make_grid(images: np.ndarray, nrow: int | None = None, padding: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) -> one uint8 (H', W', C) image, row-major."""
    n, c, h, w = images.shape
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    ncol = int(np.ceil(n / nrow))
    grid = np.zeros((padding + ncol * (h + padding), padding + nrow * (w + padding), c), np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, nrow)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        grid[y:y + h, x:x + w] = img.transpose(1, 2, 0)
    return grid


def save_png(array_hwc: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array_hwc[:, :, 0] if array_hwc.shape[2] == 1 else array_hwc)
    img.save(path)
    return path


def png_bytes(array_hwc: np.ndarray) -> bytes:
    """One uint8 (H, W, C) image as PNG file bytes."""
    buf = io.BytesIO()
    Image.fromarray(array_hwc[:, :, 0] if array_hwc.shape[2] == 1 else array_hwc).save(buf, format="PNG")
    return buf.getvalue()


def save_gif(frames_hwc: list[np.ndarray], path: str | Path, fps: int = 12) -> Path:
    """uint8 (H, W, C) frames as a looping animated GIF."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(f[:, :, 0] if f.shape[2] == 1 else f) for f in frames_hwc]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0,
                   optimize=False)
    return path


def load_folder(folder: str | Path, channels: int = 3) -> list[np.ndarray]:
    """Every decodable image under `folder` as uint8 (C, H, W) at its own size, sorted by path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {str(folder)!r} does not exist")
    out = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            with Image.open(path) as img:
                img.seek(0)
                img = _to_mode(ImageOps.exif_transpose(img), channels)
                arr = np.asarray(img, dtype=np.uint8)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            continue
        out.append(np.ascontiguousarray((arr[:, :, None] if arr.ndim == 2 else arr).transpose(2, 0, 1)))
    return out
