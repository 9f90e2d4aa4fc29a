"""ResNet generator and spectrally normalised ResNet discriminator (SNGAN).

Miyato et al. 2018, "Spectral Normalization for Generative Adversarial Networks", Appendix B
(the networks of pfnet-research/sngan_projection, re-implemented in Mimicry, Lee & Town 2020).
Residual blocks keep gradients healthy in deeper networks; spectral normalisation bounds D's
Lipschitz constant layer by layer, which is what lets the hinge loss train it without
BatchNorm in D.

- G: latents -> 4x4 -> residual up-blocks (BatchNorm, ReLU, nearest 2x upsampling, 3x3
  convolutions, a 1x1 learned shortcut) -> BatchNorm, ReLU, 3x3 conv, tanh.
- D: an "optimized" first block (no ReLU before its first conv: the input is an image), then
  down-blocks (ReLU, 3x3 convs, 2x2 average pooling) to 4x4, one block without pooling, ReLU,
  global sum pooling and a spectrally normalised linear layer.

Channels double towards 4x4 as in the paper's 128x128 networks (G: 16w at 4x4 and 8x8 down to w;
D: w up to 16w), so `width` means what DCGAN's ngf/ndf mean: channels at full resolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gan_model.architectures import Architecture, register


def _n_blocks(resolution: int) -> int:
    n = int(math.log2(resolution)) - 2  # 4x4 -> resolution
    if 2 ** (n + 2) != resolution or n < 2:
        raise ValueError(f"resolution must be a power of two >= 16, got {resolution}")
    return n


def _glorot(module: nn.Module, gain: float) -> nn.Module:
    # The reference code's initialisation: Glorot-uniform, gain sqrt(2) inside residual
    # branches (they are followed by ReLUs), 1 on shortcuts and the output layers.
    nn.init.xavier_uniform_(module.weight, gain)
    if module.bias is not None:
        nn.init.zeros_(module.bias)
    return module


class UpBlock(nn.Module):
    """BN -> ReLU -> up 2x -> conv3x3 -> BN -> ReLU -> conv3x3, plus up 2x -> conv1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = _glorot(nn.Conv2d(cin, cout, 3, 1, 1), math.sqrt(2))
        self.conv2 = _glorot(nn.Conv2d(cout, cout, 3, 1, 1), math.sqrt(2))
        self.shortcut = _glorot(nn.Conv2d(cin, cout, 1), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    def __init__(self, z_dim: int = 128, width: int = 32, channels: int = 3, resolution: int = 32):
        super().__init__()
        self.z_dim, self.channels, self.resolution = z_dim, channels, resolution
        self.kwargs = {"z_dim": z_dim, "width": width, "channels": channels, "resolution": resolution}
        n = _n_blocks(resolution)
        # 4x4 and after each up-block: the first keeps the width (16w, 16w, 8w, ..., w at 128x128).
        widths = [width * 2 ** (n - 1)] + [width * 2 ** (n - 1 - i) for i in range(n)]
        # The paper's Linear(z_dim, 4*4*c) written as a 4x4 transposed convolution with stride 4:
        # identical on a 1x1 latent, and on an h x w latent map it lays 4x4 tiles side by side, so
        # the image grows exactly in proportion (4h x 4w before the up-blocks).
        self.project = _glorot(nn.ConvTranspose2d(z_dim, widths[0], 4, 4, 0), 1.0)
        self.blocks = nn.Sequential(*[UpBlock(widths[i], widths[i + 1]) for i in range(n)])
        self.out_bn = nn.BatchNorm2d(widths[-1])
        self.out_conv = _glorot(nn.Conv2d(widths[-1], channels, 3, 1, 1), 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (N, z_dim) -> images (N, C, R, R) in [-1, 1]; a latent map (N, z_dim, h, w)
        -> images (N, C, h * R, w * R)."""
        h = self.project(z if z.dim() == 4 else z.view(z.shape[0], self.z_dim, 1, 1))
        return torch.tanh(self.out_conv(F.relu(self.out_bn(self.blocks(h)))))


class DownBlock(nn.Module):
    """(ReLU ->) conv3x3 -> ReLU -> conv3x3 (-> avgpool 2x2), plus conv1x1 (-> avgpool).

    `first` is the paper's optimized block: the image is not passed through a ReLU, and its
    shortcut pools before the 1x1 convolution (cheaper, same function class)."""

    def __init__(self, cin: int, cout: int, sn, downsample: bool, first: bool = False):
        super().__init__()
        self.downsample, self.first = downsample, first
        self.conv1 = sn(_glorot(nn.Conv2d(cin, cout, 3, 1, 1), math.sqrt(2)))
        self.conv2 = sn(_glorot(nn.Conv2d(cout, cout, 3, 1, 1), math.sqrt(2)))
        self.shortcut = sn(_glorot(nn.Conv2d(cin, cout, 1), 1.0)) if (cin != cout or downsample) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(x if self.first else F.relu(x))))
        if self.downsample:
            h = F.avg_pool2d(h, 2)
        s = x
        if self.first:
            s = self.shortcut(F.avg_pool2d(x, 2))
        elif self.shortcut is not None:
            s = self.shortcut(x)
            s = F.avg_pool2d(s, 2) if self.downsample else s
        return h + s


class Discriminator(nn.Module):
    def __init__(self, width: int = 32, channels: int = 3, resolution: int = 32, norm: str = "spectral"):
        super().__init__()
        n = _n_blocks(resolution)
        sn = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        widths = [width * 2 ** i for i in range(n)]  # after each down-block, full resolution / 2 first
        blocks = [DownBlock(channels, widths[0], sn, downsample=True, first=True)]
        blocks += [DownBlock(widths[i - 1], widths[i], sn, downsample=True) for i in range(1, n)]
        blocks.append(DownBlock(widths[-1], widths[-1], sn, downsample=False))  # at 4x4
        self.blocks = nn.Sequential(*blocks)
        self.linear = sn(_glorot(nn.Linear(widths[-1], 1), 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] -> logits (N,). Sum pooling (not mean) as in the paper:
        the logit's scale follows the feature map's size, which SN alone would keep small."""
        return self.linear(F.relu(self.blocks(x)).sum(dim=(2, 3))).view(-1)


register(Architecture("resnet_sngan", Generator, Discriminator, d_norm="spectral", loss="hinge",
                      d_norms=("spectral", "none")))
