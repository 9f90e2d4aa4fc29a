import numpy as np
import pytest
from scipy import linalg

from gan_model.fid import FeatureStats, fid_from_stats, kid_from_features


def scipy_fid(mu1, s1, mu2, s2):
    """The pytorch-fid formula with scipy's sqrtm (the reference implementation)."""
    covmean, _ = linalg.sqrtm(s1.dot(s2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * 1e-6
        covmean = linalg.sqrtm((s1 + offset).dot(s2 + offset))
    covmean = covmean.real
    diff = mu1 - mu2
    return diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)


def random_stats(rng, d, n):
    x = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    return x.mean(0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d,n", [(8, 100), (32, 200), (64, 40)])  # the last one is rank-deficient
def test_frechet_distance_matches_scipy(d, n):
    rng = np.random.default_rng(d)
    mu1, s1 = random_stats(rng, d, n)
    mu2, s2 = random_stats(rng, d, n)
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(scipy_fid(mu1, s1, mu2, s2), rel=1e-6, abs=1e-8)


def test_near_singular_covariances_stay_real_and_non_negative():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(10, 64))  # rank 9 in 64 dimensions
    mu, s = x.mean(0), np.cov(x, rowvar=False)
    same = fid_from_stats(mu, s, mu, s)
    assert isinstance(same, float) and 0.0 <= same < 1e-6
    y = x + 1e-3 * rng.normal(size=x.shape)
    val = fid_from_stats(mu, s, y.mean(0), np.cov(y, rowvar=False))
    assert np.isfinite(val) and val >= 0
    assert val == pytest.approx(max(scipy_fid(mu, s, y.mean(0), np.cov(y, rowvar=False)), 0), abs=1e-4)


@pytest.mark.parametrize("shards", [1, 2, 3])
def test_merged_statistics_equal_single_pass(shards):
    rng = np.random.default_rng(1)
    f = rng.normal(size=(300, 16)).astype(np.float32)
    single = FeatureStats(16, keep_features=300)
    single.update(f)
    parts = [FeatureStats(16, keep_features=300) for _ in range(shards)]
    for part, chunk in zip(parts, np.array_split(f, shards)):
        part.update(chunk)
    merged = parts[0]
    for p in parts[1:]:
        merged = merged.merge(p)
    assert merged.count == 300
    np.testing.assert_allclose(merged.mean_cov()[0], single.mean_cov()[0], rtol=1e-12)
    np.testing.assert_allclose(merged.mean_cov()[1], single.mean_cov()[1], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(merged.mean_cov()[1], np.cov(f.astype(np.float64), rowvar=False), rtol=1e-9)
    np.testing.assert_array_equal(merged.features, single.features)


def test_stats_round_trip_through_a_file(tmp_path):
    s = FeatureStats(4, keep_features=3)
    s.update(np.arange(20, dtype=np.float32).reshape(5, 4))
    s.save(tmp_path / "s.npz")
    t = FeatureStats.load(tmp_path / "s.npz")
    assert t.count == 5 and np.array_equal(t.outer, s.outer) and len(t.features) == 3


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))
    c = rng.normal(loc=0.5, size=(400, 32))
    same, same_std = kid_from_features(a, b, subsets=20, subset_size=200)
    diff, _ = kid_from_features(a, c, subsets=20, subset_size=200)
    assert abs(same) < 3 * same_std + 1e-3
    assert diff > 10 * max(abs(same), same_std)
