"""The output module: images from a registered generator.

Only the generator's weights are loaded (`torch.load(weights_only=True)`), never Python code
that came from the registry: the registry's weights are trusted, its code is not. Image i uses
seed `seed + i`, the same latent as the served pyfunc model and the pipeline's sample grids, so
the same seeds (and truncation) always give the same images.

Outputs by `out`: `*.png` one grid; `*.gif` / `*.mp4` a looping latent walk; anything without a
suffix a folder with one PNG per image.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gan_model.checkpoint import load_generator
from gan_model.config import RegistryConfig
from gan_model.errors import UsageError
from gan_model.images import make_grid, save_gif, save_png
from gan_model.sampling import generate, latent_walk, latents_for_seeds, latents_from_array, truncate

ANIMATIONS = (".gif", ".mp4")
KEYFRAMES, FRAMES_PER_KEY, FPS = 4, 16, 12  # a 5-second loop through 4 latents per walk
MIN_FRAME_SIDE = 256  # animations are upscaled (nearest) to at least this many pixels


def sample_images(model_uri: str, n: int | None, out: str | Path, seed: int = 0, truncation: float = 1.0,
                  z_file: str | Path | None = None, registry: RegistryConfig | None = None) -> dict:
    """Images from `model_uri` into `out` (see the module doc). Latents come from seeds seed..seed+n-1,
    or from `z_file` (a .npy array (N, z_dim)); truncation psi pulls them towards the mean.

    An animation walks from each image's latent through KEYFRAMES latents and back: n walks side
    by side from seeds, or one walk through the rows of `z_file`."""
    from tasks.registry import download_generator, mlflow_client, model_version

    out = Path(out)
    kind = out.suffix.lower()
    if kind and kind not in (".png", *ANIMATIONS):
        raise UsageError(f"--out {str(out)!r}: use a .png file (a grid), a .gif or .mp4 file (a latent walk) "
                         f"or a folder name without a suffix (one PNG per image)")
    if not 0.0 <= truncation <= 1.0:
        raise UsageError(f"--truncation {truncation}: psi must be between 0 (the mean image) and 1 (no truncation)")
    client, _, uri = mlflow_client(registry or RegistryConfig())
    mv = model_version(client, model_uri, uri)
    with tempfile.TemporaryDirectory(prefix="ganflow-sample-") as tmp:
        g = load_generator(download_generator(model_uri, Path(tmp) / "generator.pt"))

    z = _latents(g.z_dim, n, seed, z_file)
    if kind in ANIMATIONS:
        import torch

        # Walk i starts at image i's latent; its other keyframes are the seeds after all n images.
        keys = (z[:, None, :] if z_file is not None else
                torch.stack([latents_for_seeds(range(seed + k * len(z), seed + (k + 1) * len(z)), g.z_dim)
                             for k in range(KEYFRAMES)]))
        if len(keys) < 2:
            raise UsageError(f"{z_file}: an animation walks through at least 2 latent vectors")
        frames = _walk_frames(g, truncate(latent_walk(keys, FRAMES_PER_KEY), truncation))
        (_write_mp4 if kind == ".mp4" else save_gif)(frames, out, fps=FPS)
        files, count = 1, len(frames)
    else:
        images = generate(g, truncate(z, truncation))  # (N, C, H, W) uint8
        if kind == ".png":
            save_png(make_grid(images), out)
            files = 1
        else:
            names = [f"z{i:06d}.png" for i in range(len(images))] if z_file is not None else \
                [f"seed{seed + i:06d}.png" for i in range(len(images))]
            for name, img in zip(names, images):
                save_png(img.transpose(1, 2, 0), out / name)
            files = len(names)
        count = len(images)
    return {"model": model_uri, "model_name": mv.name, "model_version": str(mv.version), "n": int(len(z)),
            "seed": None if z_file is not None else seed, "z_file": str(z_file) if z_file is not None else None,
            "truncation": truncation, "out": str(out), "files": files,
            ("frames" if kind in ANIMATIONS else "images"): int(count)}


def _latents(z_dim: int, n: int | None, seed: int, z_file):
    if z_file is None:
        return latents_for_seeds(range(seed, seed + (n or 64)), z_dim)
    try:
        z = latents_from_array(np.load(z_file, allow_pickle=False), z_dim)  # never unpickle a user's file
    except (OSError, ValueError) as err:
        raise UsageError(f"--z {str(z_file)!r}: {err}: pass a .npy file holding an (N, {z_dim}) float array") from None
    if n is not None and n != len(z):
        raise UsageError(f"-n {n} but {z_file} holds {len(z)} latent vectors: leave -n out with --z")
    return z


def _walk_frames(g, walk) -> list[np.ndarray]:
    """(F, N, z_dim) latents -> F grids (H, W, C), upscaled so a frame is big enough to see."""
    n_frames, n = walk.shape[:2]
    images = generate(g, walk.reshape(n_frames * n, -1)).reshape(n_frames, n, g.channels, g.resolution, g.resolution)
    frames = [make_grid(f) for f in images]
    scale = max(1, -(-MIN_FRAME_SIDE // max(frames[0].shape[:2])))
    return [f.repeat(scale, 0).repeat(scale, 1) for f in frames]


def _write_mp4(frames: list[np.ndarray], path: Path, fps: int) -> Path:
    """H.264 through the ffmpeg binary that the imageio-ffmpeg wheel ships (works offline)."""
    import imageio_ffmpeg

    h, w, c = frames[0].shape
    ph, pw = -(-h // 16) * 16, -(-w // 16) * 16  # the encoder wants multiples of 16: pad, never resize
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio_ffmpeg.write_frames(str(path), (pw, ph), pix_fmt_in="gray" if c == 1 else "rgb24", fps=fps,
                                         macro_block_size=16)
    writer.send(None)
    for f in frames:
        padded = np.zeros((ph, pw, c), np.uint8)
        padded[:h, :w] = f
        writer.send(np.ascontiguousarray(padded))
    writer.close()
    return path
