"""Feature statistics of image streams and the FID/KID comparison between two of them."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from gan_model.fid import FeatureStats, fid_from_stats, kid_from_features
from gan_model.inception import FEATURE_DIM

# Below this many samples the 2048x2048 covariance is rank-deficient and FID
# is biased upwards; it is still reported, with a warning and KID beside it.
FID_FULL_RANK = FEATURE_DIM


def stats_of(extract, batches: Iterable[np.ndarray], keep_features: int) -> FeatureStats:
    stats = FeatureStats(FEATURE_DIM, keep_features)
    for batch in batches:
        stats.update(extract(batch))
    return stats


def compare(generated: FeatureStats, reference: FeatureStats, *, kid_subsets: int, kid_subset_size: int,
            seed: int = 0) -> dict:
    mu1, s1 = generated.mean_cov()
    mu2, s2 = reference.mean_cov()
    kid, kid_std = kid_from_features(generated.features, reference.features, kid_subsets, kid_subset_size, seed)
    return {"fid": fid_from_stats(mu1, s1, mu2, s2), "kid": kid, "kid_std": kid_std,
            "n_generated": generated.count, "n_reference": reference.count}
