"""The output module: images from a registered generator.

Only the generator's weights are loaded (`torch.load(weights_only=True)`), never Python code
that came from the registry. Image i uses seed `seed + i`, the same latent as the pyfunc model
and the pipeline's sample grid, so the same seeds always give the same images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from gan_model.checkpoint import load_generator
from gan_model.config import RegistryConfig
from gan_model.images import make_grid, save_png
from gan_model.sampling import generate, latents_for_seeds


def sample_images(model_uri: str, n: int, out: str | Path, seed: int = 0,
                  registry: RegistryConfig | None = None) -> dict:
    """n images from `model_uri` into `out`: a .png file holds a grid, a folder one PNG per image."""
    from tasks.registry import download_generator, mlflow_client, model_version

    client, _, uri = mlflow_client(registry or RegistryConfig())
    mv = model_version(client, model_uri, uri)
    with tempfile.TemporaryDirectory(prefix="ganflow-sample-") as tmp:
        g = load_generator(download_generator(model_uri, Path(tmp) / "generator.pt"))
    images = generate(g, latents_for_seeds(np.arange(seed, seed + n), g.z_dim))  # (N, C, H, W)
    out = Path(out)
    if out.suffix.lower() == ".png":
        files = [save_png(make_grid(images), out)]
    else:
        files = [save_png(img.transpose(1, 2, 0), out / f"seed{seed + i:06d}.png") for i, img in enumerate(images)]
    return {"model": model_uri, "model_name": mv.name, "model_version": str(mv.version), "n": int(len(images)),
            "out": str(out), "files": len(files)}
