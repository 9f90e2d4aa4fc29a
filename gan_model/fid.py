"""FID and KID math, split as in NVlabs' edm `fid.py`.

- `FeatureStats`: mergeable statistics (count, sum, sum of outer products,
  float64) plus a bounded sample of raw features for KID.
- `fid_from_stats(mu1, s1, mu2, s2)`: the Frechet distance in float64 with a
  symmetric matrix square root, so rounding can never make it complex or
  negative.
- `kid_from_features(f1, f2)`: unbiased polynomial-kernel MMD over subsets.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import numpy as np


class FeatureStats:
    def __init__(self, dim: int, keep_features: int = 0):
        self.dim, self.keep = dim, keep_features
        self.count = 0
        self.sum = np.zeros(dim, np.float64)
        self.outer = np.zeros((dim, dim), np.float64)
        self._kept: list[np.ndarray] = []
        self.meta: dict[str, str] = {}  # provenance saved with the statistics (e.g. the weights' hash)

    def update(self, features: np.ndarray) -> None:
        f = np.asarray(features, np.float64)
        self.count += len(f)
        self.sum += f.sum(0)
        self.outer += f.T @ f
        have = sum(len(k) for k in self._kept)
        if have < self.keep:
            self._kept.append(np.asarray(features[: self.keep - have], np.float32))

    def merge(self, other: "FeatureStats") -> "FeatureStats":
        """Exact: statistics of the union of both sets of features."""
        out = FeatureStats(self.dim, self.keep)
        out.count, out.sum, out.outer = self.count + other.count, self.sum + other.sum, self.outer + other.outer
        out._kept = [f for f in (self.features, other.features) if len(f)]
        if out.keep:
            out._kept = [np.concatenate(out._kept)[: out.keep]] if out._kept else []
        return out

    @property
    def features(self) -> np.ndarray:
        return np.concatenate(self._kept) if self._kept else np.zeros((0, self.dim), np.float32)

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        if self.count < 2:
            raise ValueError("need at least two feature vectors for a covariance")
        mu = self.sum / self.count
        cov = (self.outer - self.count * np.outer(mu, mu)) / (self.count - 1)
        return mu, cov

    def save(self, path: str | Path, **meta: str) -> None:
        path = Path(path)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp.npz")  # unique per writer
        np.savez(tmp, count=self.count, sum=self.sum, outer=self.outer, features=self.features, keep=self.keep,
                 **{f"meta_{k}": np.str_(v) for k, v in {**self.meta, **meta}.items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "FeatureStats":
        with np.load(path, allow_pickle=False) as z:  # numbers and strings only: no code in a stats file
            out = cls(int(z["sum"].shape[0]), int(z["keep"]))
            out.count, out.sum, out.outer = int(z["count"]), z["sum"], z["outer"]
            out._kept = [z["features"]] if len(z["features"]) else []
            out.meta = {k[len("meta_"):]: str(z[k]) for k in z.files if k.startswith("meta_")}
        return out


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def fid_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), in float64.

    Tr((S1 S2)^1/2) equals Tr((S1^1/2 S2 S1^1/2)^1/2), whose argument is
    symmetric positive semi-definite: its eigenvalues are real and clipped at
    zero, so the result is real and, up to rounding, non-negative.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    r1 = _sqrt_psd(s1)
    eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
    tr_covmean = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean, 0.0))


def kid_from_features(f1: np.ndarray, f2: np.ndarray, subsets: int = 50, subset_size: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): mean and std over subsets.

    Kernel k(x, y) = (x.y / d + 1)^3, unbiased MMD^2 estimate per subset, as in
    torch-fidelity and the original implementation.
    """
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m = min(len(f1), len(f2), subset_size)
    if m < 2:
        raise ValueError("KID needs at least two features on each side")
    d = f1.shape[1]
    rng = np.random.default_rng(seed)
    scores = np.empty(subsets)
    for i in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        scores[i] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1))
                     + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                     - 2 * kxy.mean())
    return float(scores.mean()), float(scores.std())  # ddof=0, as torch-fidelity
