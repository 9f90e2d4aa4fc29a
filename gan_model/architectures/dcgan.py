"""DCGAN generator and discriminator for any power-of-two resolution.

At 64x64 with width 64 these are exactly the networks of the PyTorch
examples' `dcgan/main.py` (Radford et al., 2015): transposed convolutions
doubling the resolution from 4x4, BatchNorm + ReLU in G, strided
convolutions with LeakyReLU(0.2) in D. Channel counts double towards 4x4.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gan_model.architectures import Architecture, register


def _n_doublings(resolution: int) -> int:
    n = int(math.log2(resolution)) - 2  # 4x4 -> resolution
    if 2 ** (n + 2) != resolution or n < 2:
        raise ValueError(f"resolution must be a power of two >= 16, got {resolution}")
    return n


def init_weights(m: nn.Module) -> None:
    """The DCGAN initialisation: N(0, 0.02) convolutions, N(1, 0.02) BatchNorm scales."""
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class Generator(nn.Module):
    def __init__(self, z_dim: int = 64, width: int = 32, channels: int = 1, resolution: int = 32):
        super().__init__()
        self.z_dim, self.channels, self.resolution = z_dim, channels, resolution
        self.kwargs = {"z_dim": z_dim, "width": width, "channels": channels, "resolution": resolution}
        n = _n_doublings(resolution)
        c = width * 2 ** (n - 1)
        layers: list[nn.Module] = [  # z (as a 1x1 map) -> 4x4
            nn.ConvTranspose2d(z_dim, c, 4, 1, 0, bias=False), nn.BatchNorm2d(c), nn.ReLU(True)]
        for _ in range(n - 1):  # each block doubles the resolution and halves the channels
            layers += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1, bias=False), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [nn.ConvTranspose2d(c, channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, z_dim) -> images (N, C, H, W) in [-1, 1]. A latent map (N, z_dim, h, w)
        gives a larger image, (h + 3) * R/4 on a side: the network is fully convolutional."""
        return self.main(z if z.dim() == 4 else z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, width: int = 32, channels: int = 1, resolution: int = 32, norm: str = "batch"):
        super().__init__()
        n = _n_doublings(resolution)
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)

        def block(cin: int, cout: int, normed: bool) -> list[nn.Module]:
            out: list[nn.Module] = [sn(nn.Conv2d(cin, cout, 4, 2, 1, bias=not normed or norm != "batch"))]
            if normed and norm == "batch":
                out.append(nn.BatchNorm2d(cout))
            return out + [nn.LeakyReLU(0.2, inplace=True)]

        layers = block(channels, width, normed=False)  # DCGAN: no norm on the first layer
        c = width
        for _ in range(n - 1):
            layers += block(c, c * 2, normed=True)
            c *= 2
        layers.append(sn(nn.Conv2d(c, 1, 4, 1, 0, bias=False)))  # 4x4 -> one logit
        self.main = nn.Sequential(*layers)
        self.apply(init_weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] -> logits (N,)."""
        return self.main(x).view(-1)


register(Architecture("dcgan", Generator, Discriminator, d_norm="batch", loss="non_saturating"))
