"""The architecture registry: a network family is one module in this package.

Each module defines a generator and a discriminator and calls `register()` at import;
importing this package imports every module in it, so adding `architectures/stylegan_lite.py`
(and its name in `ModelConfig.architecture`, which keeps config validation free of torch) is
the whole change. Everything else (the training loop, checkpoints, sampling, the served model)
only goes through `build_networks` and `build_generator`.

The contract every generator keeps:
- `Generator(z_dim, width, channels, resolution)`, with `.z_dim` and `.kwargs` (its constructor
  arguments, which checkpoints store to rebuild it for sampling);
- `forward(z)` takes latents (N, z_dim) -> images (N, C, R, R) in [-1, 1], and also a spatial
  latent map (N, z_dim, h, w) -> a larger image: texture mode renders textures larger than
  the crops it trained on (Jetchev et al. 2016, "Texture Synthesis with Spatial GANs").
Every discriminator is `Discriminator(width, channels, resolution, norm)` mapping images to
logits (N,).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable

from torch import nn


@dataclass(frozen=True)
class Architecture:
    name: str
    generator: Callable[..., nn.Module]      # (z_dim, width, channels, resolution)
    discriminator: Callable[..., nn.Module]  # (width, channels, resolution, norm)
    # What `model.d_norm: auto` and `train.loss: auto` mean for this family: the recipe
    # its paper trained it with.
    d_norm: str
    loss: str
    d_norms: tuple[str, ...] = ("batch", "spectral", "none")


REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    if arch.name in REGISTRY:
        raise ValueError(f"architecture {arch.name!r} is registered twice")
    REGISTRY[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}: choose from {sorted(REGISTRY)}") from None


def resolved_d_norm(model_cfg) -> str:
    arch = architecture(model_cfg.architecture)
    norm = arch.d_norm if model_cfg.d_norm == "auto" else model_cfg.d_norm
    if norm not in arch.d_norms:
        raise ValueError(f"model.d_norm={norm} does not apply to {arch.name}: choose from {arch.d_norms}")
    return norm


def build_networks(model_cfg, channels: int, resolution: int) -> tuple[nn.Module, nn.Module]:
    """G and D of the configured family for images of `channels` x `resolution` x `resolution`."""
    arch = architecture(model_cfg.architecture)
    g = arch.generator(model_cfg.z_dim, model_cfg.g_width, channels, resolution)
    d = arch.discriminator(model_cfg.d_width, channels, resolution, resolved_d_norm(model_cfg))
    return g, d


def generator_kwargs(model_cfg, g: nn.Module) -> dict:
    """What a checkpoint stores to rebuild `g`: its family and its constructor arguments."""
    return {"architecture": model_cfg.architecture, **g.kwargs}


def build_generator(kwargs: dict) -> nn.Module:
    """A generator from stored `generator_kwargs`; files written before the registry existed
    carry no architecture and are DCGAN."""
    kwargs = dict(kwargs)
    return architecture(kwargs.pop("architecture", "dcgan")).generator(**kwargs)


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
