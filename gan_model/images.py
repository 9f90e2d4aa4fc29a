"""Decode, validate and preprocess one image (or random crops of it); tile images into a grid;
write animations.

`decode_image` never trusts a file name or extension: it looks at the bytes, and only the
decoders in ALLOWED_FORMATS ever see them (Pillow's other plugins include EPS, which runs
Ghostscript). Every rejection raises `InvalidImage` with a short reason that ends up in the
data set version's report.

Memory: the pixel limit is checked from the header before anything is decoded, and
`decoded_pixels` says how many pixels a decode will hold, so callers can budget concurrent
decodes. JPEGs much larger than needed are decoded at 1/2, 1/4 or 1/8 scale (`draft`), and
other large images are box-reduced right after decoding, before any full-size copy.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The decoders ganflow lets near untrusted bytes: common photo and web formats, none of which
# shells out. Everything else (EPS, PSD, FITS, ...) is skipped as an unsupported format.
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
# Pillow's own advice for two-step resizing: within this factor of the target, the result is
# indistinguishable from a direct resize (Image.resize's reducing_gap; thumbnail uses 2 for draft).
REDUCING_GAP = 3
DRAFT_GAP = 2
# Modes whose pixels may be averaged: not palette indices or bilevel, and alpha only premultiplied
# (averaging colours under transparent pixels would bleed them into the visible ones).
_REDUCIBLE = {"L", "RGB", "CMYK", "YCbCr", "I", "F", "RGBa", "La"}


class InvalidImage(ValueError):
    """The bytes are not a usable image; `str(err)` is the reason."""


def _other_format(prefix: bytes) -> str | None:
    """The name of a format Pillow knows but ganflow does not allow, from its magic bytes only
    (each plugin's `accept` test; no decoder runs)."""
    Image.init()
    for name, (_, accept) in Image.OPEN.items():
        if name not in ALLOWED_FORMATS and accept is not None and accept(prefix):
            return name
    return None


def _open(data: bytes) -> Image.Image:
    """The image header, parsed by an allowed decoder only; nothing is decoded yet."""
    if not data:
        raise InvalidImage("empty file")
    try:
        return Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        other = _other_format(data[:64])
        raise InvalidImage(f"unsupported format {other} (allowed: {', '.join(ALLOWED_FORMATS)})" if other
                           else "not a decodable image") from None
    except Image.DecompressionBombError as err:  # Pillow's own limit, above data.max_pixels
        raise InvalidImage(f"decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidImage(f"corrupt or truncated image ({type(err).__name__})") from None


def _checked_header(data: bytes, max_pixels: int, resolution: int | None) -> tuple[Image.Image, tuple[int, int]]:
    """(image with its decode scale chosen, size in the header), or InvalidImage."""
    img = _open(data)
    size = img.size
    # Checked here, from the header, rather than through Pillow's DecompressionBombWarning: a
    # warnings filter is process-wide state that other threads can change under us.
    if size[0] * size[1] > max_pixels:
        raise InvalidImage(f"too many pixels ({size[0]}x{size[1]} > data.max_pixels={max_pixels})")
    if resolution and img.format == "JPEG":
        img.draft(None, (DRAFT_GAP * resolution, DRAFT_GAP * resolution))  # DCT scaling: decodes less
    return img, size


def decoded_pixels(data: bytes, *, resolution: int, max_pixels: int) -> int:
    """How many pixels `decode_image` will hold at full size for these bytes (header only).

    Raises InvalidImage for what `decode_image` would reject from the header alone.
    """
    img, _ = _checked_header(data, max_pixels, resolution)
    return img.size[0] * img.size[1]


def decoded_samples(data: bytes, *, resolution: int | None, max_pixels: int) -> int:
    """Pixels times bands (RGBA: 4) a decode will hold at full size: what a memory budget
    should count, since the copies a decode makes (premultiplied, converted) scale with it.
    `resolution=None` for a decode at the image's own scale (`decode_crops`)."""
    img, _ = _checked_header(data, max_pixels, resolution)
    return img.size[0] * img.size[1] * len(img.getbands())


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    if img.mode in ("RGBa", "La"):  # from _load: premultiplied colour is the image over black
        img = Image.merge(img.mode[:-1], img.split()[:-1])
    if img.mode in ("I", "F"):
        # 32-bit and float greyscale: values beyond 8 bits are taken as a 16-bit range.
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    target = "L" if channels == 1 else "RGB"
    return img if img.mode == target else img.convert(target)  # CMYK, YCbCr, 1-bit...


def _load(data: bytes, max_pixels: int, resolution: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(the first frame decoded and upright, its size in the header). With a target `resolution`,
    at reduced scale where that is invisible in the output."""
    img, size = _checked_header(data, max_pixels, resolution)
    try:
        img.seek(0)  # animated GIF/PNG/WebP: the first frame
        img.load()
        ImageOps.exif_transpose(img, in_place=True)  # phone photos store rotation in EXIF
        # Palette and transparency: transparent pixels become black, whatever colour the palette
        # stored. Premultiplied alpha is exactly "composited over black" (with alpha still there),
        # and averaging premultiplied pixels is correct, so the reduce below may follow.
        if img.mode == "P":
            img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        if img.mode.startswith("I;16"):  # 16-bit range to 8-bit, as 32-bit ints the reduce can average
            img = img.convert("I").point(lambda v: v * (255 / 65535) + 0.5)
        if img.mode == "PA":
            img = img.convert("RGBA")
        if img.mode in ("RGBA", "LA"):
            img = img.convert(img.mode[:-1] + "a")  # RGBa, La
    except Image.DecompressionBombError as err:
        raise InvalidImage(f"decompression bomb ({err})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise InvalidImage(f"corrupt or truncated image ({type(err).__name__})") from None
    factor = min(img.size) // (REDUCING_GAP * resolution) if resolution else 0
    if factor >= 2 and img.mode in _REDUCIBLE:
        img = img.reduce(factor)  # every later copy (mode conversion, crop) is factor^2 smaller
    return img, size


def _converted(img: Image.Image, channels: int) -> Image.Image:
    try:
        return _to_mode(img, channels)
    except Exception as err:  # exotic modes (LAB, multi-band TIFF...) PIL cannot convert
        raise InvalidImage(f"unsupported image mode {img.mode} ({type(err).__name__})") from None


def _array(img: Image.Image) -> np.ndarray:
    arr = np.asarray(img, dtype=np.uint8)
    return np.ascontiguousarray((arr[:, :, None] if arr.ndim == 2 else arr).transpose(2, 0, 1))


def decode_image(
    data: bytes,
    *,
    resolution: int,
    channels: int,
    max_pixels: int = 16_000_000,
    small_images: str = "upscale",
) -> np.ndarray:
    """Bytes -> uint8 array (channels, resolution, resolution), centre-cropped and resized."""
    img, size = _load(data, max_pixels, resolution)
    if min(size) < resolution and small_images == "skip":
        raise InvalidImage(f"smaller than the target ({size[0]}x{size[1]} < {resolution}); "
                           f"set data.small_images=upscale to keep it")
    img = _converted(img, channels)
    # Centre crop to a square, then one high-quality resize (Lanczos
    # antialiases when shrinking).
    side = min(img.size)
    left, top = (img.size[0] - side) // 2, (img.size[1] - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return _array(img)


def decode_crops(
    data: bytes,
    *,
    resolution: int,
    channels: int,
    size: int,
    count: int,
    seed: int = 0,
    max_pixels: int = 16_000_000,
) -> np.ndarray:
    """Bytes -> uint8 (count, channels, resolution, resolution): `count` random `size` x `size` crops
    of the image at its own scale, each resized to `resolution` (texture mode, `data.crops`).

    Positions come from `seed` and the bytes' sha256, not from the key or the listing order: the
    same image and settings give the same crops wherever and whenever they are ingested."""
    img, _ = _load(data, max_pixels)  # full scale: a crop's detail is what a texture GAN learns
    w, h = img.size
    if min(w, h) < size:
        raise InvalidImage(f"smaller than the crop ({w}x{h} < data.crops.size={size}); lower data.crops.size")
    img = _converted(img, channels)
    rng = np.random.default_rng([seed, int.from_bytes(hashlib.sha256(data).digest()[:8], "little")])
    xs, ys = rng.integers(0, w - size + 1, count), rng.integers(0, h - size + 1, count)
    out = np.empty((count, channels, resolution, resolution), np.uint8)
    for i, (x, y) in enumerate(zip(xs.tolist(), ys.tolist())):
        crop = img.crop((x, y, x + size, y + size))
        out[i] = _array(crop if size == resolution else crop.resize((resolution, resolution), Image.Resampling.LANCZOS))
    return out


def decode_full_size(data: bytes, *, channels: int = 3, max_pixels: int = 16_000_000) -> np.ndarray:
    """Bytes -> uint8 array (channels, H, W) at the image's own size, with the same format allowlist
    and limits as `decode_image` (FID between folders resizes inside the feature extractor)."""
    return _array(_converted(_load(data, max_pixels)[0], channels))


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


def save_mp4(frames_hwc: list[np.ndarray], path: str | Path, fps: int = 12) -> Path:
    """uint8 (H, W, C) frames as an H.264 MP4, through the ffmpeg binary that the imageio-ffmpeg
    wheel ships (works offline). Frames are padded with black to multiples of 16, never resized."""
    import imageio_ffmpeg

    path = Path(path)
    h, w, c = frames_hwc[0].shape
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (pw, ph), pix_fmt_in="gray" if c == 1 else "rgb24", fps=fps,
                                         macro_block_size=16)
    writer.send(None)  # start the encoder
    padded = np.zeros((ph, pw, c), np.uint8)
    try:
        for f in frames_hwc:
            padded[:h, :w] = f
            writer.send(padded)
    finally:
        writer.close()
    return path


def folder_files(folder: str | Path) -> list[Path]:
    """Every regular file under `folder`, sorted; symlinks that lead outside it are skipped (a
    folder of images must not read the rest of the disk)."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {str(root)!r} does not exist")
    real_root = root.resolve()
    out = []
    for dirpath, _, names in os.walk(root):  # does not descend into symlinked folders
        for name in names:
            path = Path(dirpath) / name
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                continue
            if path.is_file():
                out.append(path)
    return sorted(out)


def folder_batches(folder: str | Path, batch_size: int, *, channels: int = 3, max_pixels: int = 16_000_000,
                   max_bytes: int = 64 << 20) -> Iterator[np.ndarray]:
    """The decodable images under `folder` as uint8 (N, C, H, W) batches, streamed in path order:
    at most one batch is in memory. A batch holds images of one size (a size change starts a new one)."""
    batch: list[np.ndarray] = []
    for path in folder_files(folder):
        try:
            if path.stat().st_size > max_bytes:
                continue
            arr = decode_full_size(path.read_bytes(), channels=channels, max_pixels=max_pixels)
        except (InvalidImage, OSError):
            continue
        if batch and (len(batch) == batch_size or arr.shape != batch[0].shape):
            yield np.stack(batch)
            batch = []
        batch.append(arr)
    if batch:
        yield np.stack(batch)
