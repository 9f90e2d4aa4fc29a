"""Images from a generator: one latent per integer seed, so any image can be reproduced.

`ganflow sample`, the served pyfunc model and the pipeline's sample grids all go through
these functions, so the same seed (and truncation) gives the same image everywhere.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn


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
