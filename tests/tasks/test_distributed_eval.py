"""Generation and feature extraction on Ray workers merge to the single-pass statistics. Slow."""

import numpy as np
import pytest
import torch

from gan_model.config import build_config
from gan_model.evaluation import stats_of
from gan_model.inception import InceptionFeatures, make_random_weights
from gan_model.networks import Generator
from gan_model.sampling import generate_batches
from tasks.distributed_eval import generated_stats_on_ray, shards
from tests.helpers import digits


def test_small_evaluations_stay_on_the_driver_unless_workers_are_asked_for():
    from tasks.evaluate import MIN_IMAGES_PER_EVAL_WORKER, eval_workers

    def workers(*sets: str) -> int:
        cfg = build_config({}, ["eval.kid_subset_size=2", *sets])
        return eval_workers(cfg.eval, cfg.train.num_workers)
    assert MIN_IMAGES_PER_EVAL_WORKER == 256
    assert workers("eval.n_generated=32", "train.num_workers=2") == 1  # the smoke run: not worth two workers
    assert workers("eval.n_generated=511", "train.num_workers=2") == 1
    assert workers("eval.n_generated=512", "train.num_workers=2") == 2
    assert workers("eval.n_generated=10000", "train.num_workers=4") == 4  # never more than training used
    assert workers("eval.n_generated=32", "eval.num_workers=3") == 3  # asked for: as asked
    assert workers("eval.n_generated=2", "eval.num_workers=3") == 2  # but never more than the images


def test_shards_cover_every_seed_once():
    assert shards(10, 3) == [(0, 4), (4, 3), (7, 3)]
    assert shards(2, 4) == [(0, 1), (1, 1)]


@pytest.mark.slow
def test_statistics_do_not_depend_on_the_number_of_workers(tmp_path):
    import ray
    g = Generator(z_dim=8, width=4, channels=1, resolution=16)
    torch.save({"kwargs": g.kwargs, "state_dict": g.state_dict(), "step": 0}, tmp_path / "generator.pt")
    net = InceptionFeatures(make_random_weights(tmp_path / "random.pth"), batch_size=8)
    net.calibrate_batchnorm([digits(16, size=16)[:, None]])
    weights = net.save_weights(tmp_path / "calibrated.pth")
    cfg = build_config({}, ["eval.n_generated=18", "eval.batch_size=8", "eval.kid_subset_size=10",
                            "eval.n_reference=18", "train.threads_per_worker=1"])
    single = stats_of(net, generate_batches(g.eval(), 18, cfg.eval.seed, 8), keep_features=18)
    try:
        for workers in (2, 3):
            merged = generated_stats_on_ray(cfg, tmp_path / "generator.pt", weights, 18, workers)
            assert merged.count == single.count == 18
            mu_m, cov_m = merged.mean_cov()
            mu_s, cov_s = single.mean_cov()
            # float32 convolutions over other batch sizes round differently: compare at the
            # scale of the features, not element by element.
            scale = np.abs(single.features).max()
            np.testing.assert_allclose(mu_m, mu_s, rtol=0, atol=1e-5 * scale)
            np.testing.assert_allclose(cov_m, cov_s, rtol=0, atol=1e-5 * scale ** 2)
            np.testing.assert_allclose(merged.features, single.features, rtol=0, atol=1e-5 * scale)
    finally:
        ray.shutdown()
