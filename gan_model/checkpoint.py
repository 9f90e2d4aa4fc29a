"""Training checkpoints and the exported generator.

A checkpoint holds everything needed to continue bit-for-bit: G, D, the EMA
generator, both optimisers and the step, and `generator_kwargs` (the
architecture and its constructor arguments) to rebuild the generator alone. Random streams are a pure function
of (seed, rank, step) in the training loop, so the step restores them too.
"""

from __future__ import annotations

from pathlib import Path

import torch

from torch import nn

from gan_model.architectures import build_generator

CHECKPOINT_FILE = "checkpoint.pt"
GENERATOR_FILE = "generator.pt"


def save_checkpoint(folder: str | Path, state: dict) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    tmp = folder / (CHECKPOINT_FILE + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


def load_checkpoint(folder: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(Path(folder) / CHECKPOINT_FILE, map_location=map_location, weights_only=True)


def export_generator(checkpoint_dir: str | Path, out_path: str | Path) -> Path:
    """Write the EMA generator alone (weights + constructor arguments)."""
    state = load_checkpoint(checkpoint_dir)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"kwargs": state["generator_kwargs"], "state_dict": state["G_ema"], "step": state["step"]}, out_path)
    return out_path


def ema_generator(checkpoint_dir: str | Path) -> nn.Module:
    """The EMA generator of a training checkpoint, ready to sample (weights only)."""
    state = load_checkpoint(checkpoint_dir)
    g = build_generator(state["generator_kwargs"])
    g.load_state_dict(state["G_ema"])
    return g.eval().requires_grad_(False)


def load_generator(path: str | Path, map_location: str | torch.device = "cpu") -> nn.Module:
    """An exported generator, of whichever registered architecture its kwargs name."""
    blob = torch.load(path, map_location=map_location, weights_only=True)
    g = build_generator(blob["kwargs"])
    g.load_state_dict(blob["state_dict"])
    return g.eval().requires_grad_(False)
