"""Images from a generator: one latent per integer seed, so any image can be reproduced."""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn


def latents_for_seeds(seeds: Iterable[int], z_dim: int) -> torch.Tensor:
    return torch.stack([torch.randn(z_dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds])


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
