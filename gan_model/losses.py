"""GAN losses on D's logits, and the R1 gradient penalty.

- non_saturating: Goodfellow et al. 2014's loss with G's non-saturating form (the DCGAN
  recipe's BCE), written with softplus for stability.
- hinge: Lim & Ye 2017 / Miyato et al. 2018; D only learns from samples inside the margin,
  which pairs with spectral normalisation (SNGAN, BigGAN).
- R1 (Mescheder et al. 2018): penalise the norm of D's gradient on real images, so D cannot
  keep sharpening around the data; applied lazily as in StyleGAN2 (Karras et al. 2020).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F


def d_loss_real(real_logits: torch.Tensor) -> torch.Tensor:
    """-log D(x), with softplus for stability."""
    return F.softplus(-real_logits).mean()


def d_loss_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log(1 - D(G(z)))."""
    return F.softplus(fake_logits).mean()


def g_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """-log D(G(z)): the non-saturating generator loss."""
    return F.softplus(-fake_logits).mean()


def hinge_d_real(real_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 - real_logits).mean()


def hinge_d_fake(fake_logits: torch.Tensor) -> torch.Tensor:
    return F.relu(1.0 + fake_logits).mean()


def hinge_g(fake_logits: torch.Tensor) -> torch.Tensor:
    """G raises D's score of its samples without a margin."""
    return -fake_logits.mean()


class Loss(NamedTuple):
    d_real: Callable[[torch.Tensor], torch.Tensor]
    d_fake: Callable[[torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor], torch.Tensor]


LOSSES = {"non_saturating": Loss(d_loss_real, d_loss_fake, g_loss), "hinge": Loss(hinge_d_real, hinge_d_fake, hinge_g)}


def r1_penalty(real_logits: torch.Tensor, reals: torch.Tensor) -> torch.Tensor:
    """E ||grad_x D(x)||^2 over the real batch; `reals` must require grad and be D's input (or
    come before a differentiable augmentation of it). The graph is kept so that the penalty
    trains D (a double backward)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), reals, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()
