"""DiffAugment (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

With a few thousand images D memorises the training set and its feedback to G collapses.
Augmenting only the reals would teach G to produce augmented images, so every image D sees,
real or fake, in D's step and in G's step, goes through the same random family of
transforms; they are differentiable, so G's gradient flows back through them.

The transforms follow the reference implementation (mit-han-lab/data-efficient-gans): colour
(brightness, saturation, contrast), translation by up to 1/8 of the side with zero fill, and
cutout of a square half the side. The random parameters are drawn from a torch.Generator the
caller seeds, so a training step is a pure function of (seed, rank, step) and resumes exactly.
"""

from __future__ import annotations

import numpy as np
import torch

# `train.augment: auto` turns augmentation on for data sets smaller than this: Zhao et al.
# (and Karras et al. 2020, ADA) measure D overfitting well into tens of thousands of images;
# below a few thousand it is what decides whether training works at all.
AUTO_BELOW_IMAGES = 5_000


def augmentation_on(setting: str, n_images: int) -> bool:
    return setting == "on" or (setting == "auto" and n_images < AUTO_BELOW_IMAGES)


def augment_generator(seed: int, rank: int, step: int, which: int) -> torch.Generator:
    """The random stream of one augmentation call (`which` numbers the passes of a step)."""
    state = np.random.SeedSequence([seed, rank, step, which, 0xA06]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _uniform(gen: torch.Generator, n: int, x: torch.Tensor) -> torch.Tensor:
    # Drawn on the CPU (tiny: one number per image), so a stream gives the same draws on any
    # device, then moved without waiting for the device.
    u = torch.rand(n, 1, 1, 1, generator=gen)
    return u.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else u


def color(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5], per image."""
    n = x.shape[0]
    x = x + (_uniform(gen, n, x).to(x.dtype) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(gen, n, x).to(x.dtype) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(gen, n, x).to(x.dtype) + 0.5) + mean


def _offsets(gen: torch.Generator, n: int, low: int, high: int, x: torch.Tensor) -> torch.Tensor:
    t = torch.randint(low, high, (n, 1, 1), generator=gen)
    return t.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else t


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its side in x and y; uncovered pixels become 0."""
    n, c, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty, tx = _offsets(gen, n, -sy, sy + 1, x), _offsets(gen, n, -sx, sx + 1, x)
    ys = torch.arange(h, device=x.device).view(1, h, 1) + ty  # (n, h, 1): source row of each row
    xs = torch.arange(w, device=x.device).view(1, 1, w) + tx  # (n, 1, w)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)       # (n, h, w)
    index = (ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)).view(n, 1, h * w).expand(n, c, h * w)
    return x.flatten(2).gather(2, index).view(n, c, h, w) * inside.unsqueeze(1).to(x.dtype)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of `ratio` times the side per image, at a random centre."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = _offsets(gen, n, 0, h + (1 - ch % 2), x) - ch // 2  # top edge of the square
    cx = _offsets(gen, n, 0, w + (1 - cw % 2), x) - cw // 2
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    hole = (ys >= cy) & (ys < cy + ch) & (xs >= cx) & (xs < cx + cw)
    return x * (~hole).unsqueeze(1).to(x.dtype)


TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str, gen: torch.Generator) -> torch.Tensor:
    """Apply the comma-separated transforms of `policy`, in that order."""
    for name in policy.split(","):
        x = TRANSFORMS[name](x, gen)
    return x
