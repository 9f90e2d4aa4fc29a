"""The output module: images from a registered generator.

Only the generator's weights are loaded (`torch.load(weights_only=True)`), never Python code
that came from the registry: the registry's weights are trusted, its code is not. Image i uses
seed `seed + i`, the same latent as the served pyfunc model and the pipeline's sample grids, so
the same seeds (and truncation) always give the same images.

Outputs by `out`: `*.png` one grid (or one image alone); `*.gif` / `*.mp4` a looping latent walk;
anything without a suffix a folder with one PNG per image. With a texture scale, the images are
textures larger than the training images (fully convolutional generators only).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gan_model.checkpoint import load_generator
from gan_model.config import RegistryConfig
from gan_model.errors import UsageError
from gan_model.images import make_grid, save_gif, save_mp4, save_png
from gan_model.sampling import (FPS, generate, latents_for_seeds, latents_from_array, render_texture, truncate,
                                walk_frames, walk_keyframes)

ANIMATIONS = (".gif", ".mp4")


def sample_images(model_uri: str, n: int | None, out: str | Path, seed: int = 0, truncation: float = 1.0,
                  z_file: str | Path | None = None, registry: RegistryConfig | None = None,
                  texture_scale: int | None = None) -> dict:
    """Images from `model_uri` into `out` (see the module doc). Latents come from seeds seed..seed+n-1,
    or from `z_file` (a .npy array (N, z_dim)); truncation psi pulls them towards the mean.

    An animation walks from each image's latent through KEYFRAMES latents and back: n walks side
    by side from seeds, or one walk through the rows of `z_file`. With `texture_scale` K each seed
    gives one texture K times the training resolution per side (`render_texture`; n defaults to 1)."""
    from tasks.registry import download_generator, mlflow_client, model_version

    out = Path(out)
    kind = out.suffix.lower()
    if kind and kind not in (".png", *ANIMATIONS):
        raise UsageError(f"--out {str(out)!r}: use a .png file (a grid), a .gif or .mp4 file (a latent walk) "
                         f"or a folder name without a suffix (one PNG per image)")
    if not 0.0 <= truncation <= 1.0:
        raise UsageError(f"--truncation {truncation}: psi must be between 0 (the mean image) and 1 (no truncation)")
    if texture_scale is not None:
        if texture_scale < 1:
            raise UsageError(f"--texture-scale {texture_scale}: use a whole number >= 1 (times the training resolution)")
        if kind in ANIMATIONS or z_file is not None:
            raise UsageError("--texture-scale renders still textures from seeds: use --out texture.png (or a folder) "
                             "and leave out --z")
    client, _, uri = mlflow_client(registry or RegistryConfig())
    mv = model_version(client, model_uri, uri)
    with tempfile.TemporaryDirectory(prefix="ganflow-sample-") as tmp:
        g = load_generator(download_generator(model_uri, Path(tmp) / "generator.pt"))

    z = _latents(g.z_dim, n if n is not None or texture_scale is None else 1, seed, z_file)
    if kind in ANIMATIONS:
        keys = z[:, None, :] if z_file is not None else walk_keyframes(seed, len(z), g.z_dim)
        if len(keys) < 2:
            raise UsageError(f"{z_file}: an animation walks through at least 2 latent vectors")
        frames = walk_frames(g, keys, truncation=truncation)
        (save_mp4 if kind == ".mp4" else save_gif)(frames, out, fps=FPS)
        files, count = 1, len(frames)
    else:
        if texture_scale is not None:
            try:
                images = np.stack([render_texture(g, texture_scale, seed + i, truncation) for i in range(len(z))])
            except ValueError as err:  # a generator that is not fully convolutional
                raise UsageError(f"--texture-scale: {err}: leave --texture-scale out for this model") from None
        else:
            images = generate(g, truncate(z, truncation))  # (N, C, H, W) uint8
        if kind == ".png":
            one_texture = texture_scale is not None and len(images) == 1  # the texture itself, not a 1-image grid
            save_png(images[0].transpose(1, 2, 0) if one_texture else make_grid(images), out)
            files = 1
        else:
            names = [f"z{i:06d}.png" for i in range(len(images))] if z_file is not None else \
                [f"seed{seed + i:06d}.png" for i in range(len(images))]
            for name, img in zip(names, images):
                save_png(img.transpose(1, 2, 0), out / name)
            files = len(names)
        count = len(images)
    result = {"model": model_uri, "model_name": mv.name, "model_version": str(mv.version), "n": int(len(z)),
              "seed": None if z_file is not None else seed, "z_file": str(z_file) if z_file is not None else None,
              "truncation": truncation, "out": str(out), "files": files,
              ("frames" if kind in ANIMATIONS else "images"): int(count)}
    if texture_scale is not None:
        result.update(texture_scale=texture_scale, size=int(images.shape[-1]))
    return result


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
