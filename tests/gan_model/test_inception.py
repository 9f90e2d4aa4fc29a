"""Inception features: calibrated random weights separate data sets, and our FID/KID equal
torch-fidelity's own computation on the same images and weights file."""

import numpy as np
import pytest
import torch

from gan_model.evaluation import compare, stats_of
from gan_model.inception import InceptionFeatures, make_random_weights, sha256_file
from tests.helpers import digits

# Inception-v3 extracts about 9 images/s on a 2-core CPU: these tests take a minute, so they are `slow`.
pytestmark = pytest.mark.slow
N = 48


@pytest.fixture(scope="module")
def images():
    x = digits(3 * N, size=32)[:, None]  # real handwritten digits, uint8 (n, 1, 32, 32)
    return x[:N], x[N:2 * N], x[2 * N:]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, images):
    tmp = tmp_path_factory.mktemp("inception")
    base = make_random_weights(tmp / "random.pth", seed=0)
    (tmp / "again").mkdir()
    assert sha256_file(base) == sha256_file(make_random_weights(tmp / "again" / "random.pth", seed=0))
    net = InceptionFeatures(base, batch_size=16)
    net.calibrate_batchnorm([images[2]])
    return net.save_weights(tmp / "calibrated.pth")


def corrupt(x: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(0)
    noisy = x.astype(np.int16) + rng.integers(-90, 90, x.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def stats(net, x):
    return stats_of(net, [x], keep_features=len(x))


def fid(net, a, b):
    return compare(stats(net, a), stats(net, b), kid_subsets=1, kid_subset_size=min(len(a), len(b)))


def test_uncalibrated_random_weights_collapse_and_calibration_fixes_it(tmp_path, images, calibrated):
    a, b, _ = images
    dirty_b = corrupt(b)
    raw = InceptionFeatures(make_random_weights(tmp_path / "raw.pth", seed=0), batch_size=16)
    # The degenerate case the field notes measured: every image gets the same features, whatever
    # the images and however many (16 a side show it as well as 48).
    assert fid(raw, a[:16], dirty_b[:16])["fid"] < 1e-6
    net = InceptionFeatures(calibrated, batch_size=16)
    sa = stats(net, a)
    clean = compare(sa, stats(net, b), kid_subsets=1, kid_subset_size=N)["fid"]
    dirty = compare(sa, stats(net, dirty_b), kid_subsets=1, kid_subset_size=N)["fid"]
    assert dirty > 3 * clean > 0


def test_matches_torch_fidelity_on_the_same_weights(images, calibrated):
    import torch_fidelity

    a, b, _ = images

    class Images(torch.utils.data.Dataset):
        def __init__(self, x):
            self.x = torch.from_numpy(x).expand(-1, 3, -1, -1)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i]

    theirs = torch_fidelity.calculate_metrics(
        input1=Images(a), input2=Images(b), fid=True, kid=True, kid_subsets=1, kid_subset_size=N,
        feature_extractor="inception-v3-compat", feature_extractor_weights_path=str(calibrated),
        cuda=False, cache=False, verbose=False, batch_size=16)
    ours = fid(InceptionFeatures(calibrated, batch_size=16), a, b)
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-4)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
