"""The non-saturating GAN loss of Goodfellow et al. (the DCGAN recipe's BCE)."""

from __future__ import annotations

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
