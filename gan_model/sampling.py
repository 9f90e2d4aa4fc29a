"""Images from a generator: one latent per integer seed, so any image can be reproduced.

`ganflow sample`, the served pyfunc model and the pipeline's sample grids and latent walks all go
through these functions, so the same seed (and truncation) gives the same image everywhere.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from gan_model.images import make_grid

# A latent walk: a 5-second loop through KEYFRAMES latents per image, frames upscaled (nearest) to
# at least MIN_FRAME_SIDE pixels so that small images are visible in a player.
KEYFRAMES, FRAMES_PER_KEY, FPS, MIN_FRAME_SIDE = 4, 16, 12, 256


def latents_for_seeds(seeds: Iterable[int], z_dim: int) -> torch.Tensor:
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


def truncate(z: torch.Tensor, psi: float) -> torch.Tensor:
    """The truncation trick in z space: pull latents towards the mean of N(0, I), which is zero.
    psi=1 leaves them as they are; smaller psi trades variety for typical-looking images."""
    if not 0.0 <= psi <= 1.0:
        raise ValueError(f"truncation psi must be between 0 and 1, got {psi}")
    return z * psi


def latents_from_array(z, z_dim: int) -> torch.Tensor:
    """User-given latent vectors (N, z_dim) as float32, checked against the generator."""
    t = torch.as_tensor(np.asarray(z, dtype=np.float32))
    if t.ndim != 2 or t.shape[1] != z_dim or len(t) == 0:
        raise ValueError(f"latent vectors must have shape (N, {z_dim}), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("latent vectors must be finite numbers")
    return t


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation between rows of a and b: intermediate latents keep the norm
    Gaussian latents have, so the walk does not pass through washed-out images."""
    an, bn = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((an * bn).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    so = torch.sin(omega)
    return (torch.sin((1 - t) * omega) / so) * a + (torch.sin(t * omega) / so) * b


def latent_walk(keys: torch.Tensor, frames_per_key: int) -> torch.Tensor:
    """A looping walk through keyframe latents (K, N, z_dim) -> (K * frames_per_key, N, z_dim):
    N walks side by side, from each keyframe to the next and back to the first."""
    if keys.ndim != 3 or len(keys) < 2 or frames_per_key < 1:
        raise ValueError("a latent walk needs at least 2 keyframes of shape (N, z_dim) and 1 frame per key")
    frames = []
    for k in range(len(keys)):
        a, b = keys[k], keys[(k + 1) % len(keys)]
        frames += [slerp(a, b, i / frames_per_key) for i in range(frames_per_key)]
    return torch.stack(frames)


def walk_keyframes(seed: int, n: int, z_dim: int, keyframes: int = KEYFRAMES) -> torch.Tensor:
    """(keyframes, n, z_dim): walk i starts at image i's latent (seed + i, as in a grid), and its
    other keyframes are the seeds after all n images, so no two walks share a latent."""
    return torch.stack([latents_for_seeds(range(seed + k * n, seed + (k + 1) * n), z_dim) for k in range(keyframes)])


@torch.no_grad()
def walk_frames(g: nn.Module, keys: torch.Tensor, frames_per_key: int = FRAMES_PER_KEY, truncation: float = 1.0,
                min_side: int = MIN_FRAME_SIDE) -> list[np.ndarray]:
    """A looping latent walk through keyframes (K, N, z_dim) as K * frames_per_key uint8 grids
    (H, W, C) of the N walks side by side, upscaled to at least `min_side` pixels."""
    walk = truncate(latent_walk(keys, frames_per_key), truncation)
    n_frames, n = walk.shape[:2]
    images = generate(g, walk.reshape(n_frames * n, -1))
    frames = [make_grid(f) for f in images.reshape(n_frames, n, *images.shape[1:])]
    scale = max(1, -(-min_side // max(frames[0].shape[:2])))
    return [f.repeat(scale, 0).repeat(scale, 1) for f in frames]


def latent_map(seed: int, z_dim: int, height: int, width: int) -> torch.Tensor:
    """(1, z_dim, height, width) independent N(0, I) latents from one seed. The 1x1 map of a seed is
    its latent vector (the same random stream as `latents_for_seeds`), so a texture of the smallest
    size is that seed's image."""
    return torch.randn(1, z_dim, height, width, generator=torch.Generator().manual_seed(int(seed)))


@torch.no_grad()
def texture_latent_side(g: nn.Module, side: int) -> int:
    """The smallest latent map side whose image is at least `side` pixels. A fully convolutional
    generator's output side is affine in the map's side (transposed convolutions), so two probes
    find the slope and offset for any architecture."""
    device = next(g.parameters()).device
    s1, s2 = (g(torch.zeros(1, g.z_dim, n, n, device=device)).shape[-1] for n in (1, 2))
    if s2 <= s1:
        raise ValueError(f"this generator renders {s1}px whatever the latent map's size: it is not fully "
                         f"convolutional, so it cannot render a larger texture")
    return max(1, -(-(side - s1) // (s2 - s1)) + 1)


@torch.no_grad()
def render_texture(g: nn.Module, scale: int, seed: int, truncation: float = 1.0) -> np.ndarray:
    """A uint8 (C, S, S) texture with S = scale x the training resolution, from one seed.

    The generator is fully convolutional: a latent map of independent vectors (`latent_map`) grows
    the image where a single vector makes one training-sized image, and neighbouring latents blend
    through the overlapping transposed convolutions, so the texture is one seamless image, not a
    tiling of one. The centre is kept (borders see fewer latents). A generator trained on single
    vectors sums several latents per pixel here (DCGAN's first layer: up to 16), so its textures
    look best with `truncation` near 1/sqrt(that number)."""
    if scale < 1:
        raise ValueError(f"texture scale must be a whole number >= 1, got {scale}")
    side = scale * g.resolution
    n = texture_latent_side(g, side)
    image = generate(g, truncate(latent_map(seed, g.z_dim, n, n), truncation))[0]
    top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
    return np.ascontiguousarray(image[:, top:top + side, left:left + side])


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[-1, 1] float images -> uint8 (N, C, H, W)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu().numpy()


@torch.no_grad()
def generate(g: nn.Module, z: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    device = next(g.parameters()).device
    return np.concatenate([to_uint8(g(z[i:i + batch_size].to(device))) for i in range(0, len(z), batch_size)])


@torch.no_grad()
def generate_batches(g: nn.Module, n: int, seed: int, batch_size: int) -> Iterator[np.ndarray]:
    """uint8 batches of n images from seeds seed, seed+1, ... (memory bounded by one batch)."""
    z_dim = g.z_dim if hasattr(g, "z_dim") else g.module.z_dim
    for start in range(0, n, batch_size):
        seeds = range(seed + start, seed + min(n, start + batch_size))
        yield generate(g, latents_for_seeds(seeds, z_dim), batch_size)
