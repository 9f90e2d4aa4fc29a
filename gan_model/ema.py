"""Exponential moving average of the generator's weights (Karras et al. style)."""

from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(step: int, decay: float) -> float:
    # Ramp the decay up so the average does not remember the random init for
    # thousands of steps in short runs.
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p.detach(), 1.0 - decay)
    # BatchNorm running statistics are copied, not averaged.
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)
