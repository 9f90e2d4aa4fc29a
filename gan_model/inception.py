"""Inception-v3 pool features for FID/KID, through torch-fidelity.

torch-fidelity's `FeatureExtractorInceptionV3` is the TF-ported network with
the TF1-compatible bilinear resize to 299x299, i.e. the features behind
published FIDs; we use it rather than keep our own port. This module adds:

- resolving the standard 2015-12-05 weights (torch hub cache, else download), checked against
  their full sha256;
- loading any weights file as tensors only (`torch.load(weights_only=True)`): torch-fidelity
  itself calls `torch.load(path, weights_only=False)`, a full unpickle that runs whatever code
  the file carries, so its module is never given a user's file, only an empty one of ours;
- seeded random weights for smoke tests, with BatchNorm statistics
  re-estimated on reference images so the features do not collapse;
- the weights' sha256, which is part of every FID's protocol.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import tempfile
import uuid
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from gan_model.errors import GanflowError

log = logging.getLogger(__name__)

STANDARD_FILE = "weights-inception-2015-12-05-6726825d.pth"
STANDARD_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + STANDARD_FILE
# The whole sha256 of that file (95,628,359 bytes; the same file pytorch-fid ships as
# pt_inception-2015-12-05-6726825d.pth): the name's suffix is only its first 32 bits.
STANDARD_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
FEATURE_DIM = 2048


class WeightsUnavailable(GanflowError):
    """The requested Inception weights cannot be had; the message says how to provide them."""


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_sha256(path: str | Path, expected: str | None = None) -> str:
    """The sha256 of `path` when it is `expected` (default: the standard weights'), else a one-line
    WeightsUnavailable. A file named by a path or URI could be anything: only its hash says what."""
    expected = expected or STANDARD_SHA256
    actual = sha256_file(path)
    if actual != expected:
        which = "the standard 2015-12-05 weights'" if expected == STANDARD_SHA256 else "eval.fid_weights_sha256"
        raise WeightsUnavailable(
            f"{path} has sha256 {actual[:16]}..., not {which} {expected[:16]}...: use {STANDARD_FILE}, or set "
            f"eval.fid_weights_sha256={actual} to use this file on purpose")
    return actual


def standard_weights_path(download: bool = True) -> Path:
    """The TF-ported 2015-12-05 weights from the torch hub cache, downloading them if allowed."""
    target = Path(torch.hub.get_dir()) / "checkpoints" / STANDARD_FILE
    how = (f"put {STANDARD_FILE} into {target.parent} (or set TORCH_HOME), or set eval.fid_weights "
           f"to a path or s3:// URI of that file")
    if target.is_file():
        try:
            check_sha256(target)
        except WeightsUnavailable:
            raise WeightsUnavailable(f"{target} is not the standard Inception weights file (sha256 differs): "
                                     f"delete it, then {how}") from None
        return target
    if not download:
        raise WeightsUnavailable(f"standard Inception weights not found in the torch hub cache: {how}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(STANDARD_URL, str(target), hash_prefix=None, progress=False)
    except Exception as err:  # no network, proxy, TLS...: all end the same way
        target.unlink(missing_ok=True)
        raise WeightsUnavailable(
            f"cannot download the standard Inception weights ({type(err).__name__}): {how}") from None
    if sha256_file(target) != STANDARD_SHA256:
        target.unlink(missing_ok=True)
        raise WeightsUnavailable(f"the downloaded Inception weights failed their hash check: {how}")
    return target


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors in a weights file, read without unpickling anything else (no code runs)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, KeyError, EOFError, OSError, ValueError) as err:
        raise WeightsUnavailable(f"{path} is not a plain tensor file (refused to load it: {type(err).__name__}): "
                                 f"provide {STANDARD_FILE}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsUnavailable(f"{path} holds no Inception-v3 state dict: provide {STANDARD_FILE}")
    return state


def _extractor(state_dict: dict[str, torch.Tensor] | None) -> nn.Module:
    """torch-fidelity's Inception-v3 with `state_dict` loaded (None: its random init).

    Its constructor unpickles whatever file it is given, so it only ever gets an empty dict we
    wrote ourselves, and the tensors arrive through load_state_dict.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Preloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, ignored, strict=True, assign=False):
            if state_dict is not None:
                return super().load_state_dict(state_dict, strict, assign)

    with tempfile.TemporaryDirectory(prefix="ganflow-inception-") as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({}, empty)
        return Preloaded("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))


def make_random_weights(path: str | Path, seed: int = 0) -> Path:
    """Write seeded, randomly initialised Inception-v3 weights (smoke tests only)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = _extractor(None)
    tmp = path.with_suffix(".tmp")
    torch.save(net.state_dict(), tmp)
    tmp.replace(path)
    return path


class InceptionFeatures:
    """uint8 images (N, C, H, W), any size, 1 or 3 channels -> float32 (N, 2048) pool features."""

    def __init__(self, weights_path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32):
        self.weights_path = Path(weights_path)
        self.device, self.batch_size = torch.device(device), batch_size
        state = load_weights(self.weights_path)
        try:
            net = _extractor(state)
        except (RuntimeError, KeyError) as err:  # tensors, but not Inception-v3's
            raise WeightsUnavailable(
                f"{self.weights_path} is not a usable Inception-v3 weights file ({type(err).__name__}): "
                f"provide {STANDARD_FILE}") from None
        # channels_last lets oneDNN / cuDNN pick faster convolution kernels (1.4x on the
        # build machines' CPUs); the result differs from NCHW only by rounding.
        self.net: nn.Module = net.to(self.device, memory_format=torch.channels_last)

    @staticmethod
    def _rgb(images: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images)
        if x.dtype != torch.uint8 or x.dim() != 4:
            raise ValueError("expected uint8 images shaped (N, C, H, W)")
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    @torch.inference_mode()
    def __call__(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        x = self._rgb(images)
        out = [self.net(x[i:i + self.batch_size].to(self.device))[0].float().cpu()
               for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, FEATURE_DIM), np.float32)

    @torch.no_grad()
    def calibrate_batchnorm(self, batches: Iterable[np.ndarray]) -> None:
        """Re-estimate every BatchNorm's statistics as a cumulative average over `batches`.

        With random weights the activations drift layer by layer until the
        pool features are nearly constant (FID ~1e-14 between different
        sets); normalising with statistics of real images keeps them
        informative.
        """
        bns = [m for m in self.net.modules() if isinstance(m, nn.BatchNorm2d)]
        saved = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative moving average
            m.train()
        for batch in batches:
            x = self._rgb(batch)
            for i in range(0, len(x), self.batch_size):
                self.net(x[i:i + self.batch_size].to(self.device))
        for m, mom in zip(bns, saved):
            m.momentum = mom
        self.net.eval()

    def save_weights(self, path: str | Path) -> Path:
        path = Path(path)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # unique per writer
        torch.save(self.net.state_dict(), tmp)
        tmp.replace(path)
        return path

