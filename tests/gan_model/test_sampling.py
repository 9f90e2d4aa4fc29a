import numpy as np
import pytest
import torch

from gan_model.sampling import latent_walk, latents_for_seeds, latents_from_array, slerp, truncate


def test_truncation_pulls_latents_towards_the_mean():
    z = latents_for_seeds(range(4), 16)
    assert torch.equal(truncate(z, 1.0), z) and torch.equal(truncate(z, 0.0), torch.zeros_like(z))
    assert torch.allclose(truncate(z, 0.5).norm(dim=1), z.norm(dim=1) / 2)
    with pytest.raises(ValueError, match="between 0 and 1"):
        truncate(z, 1.5)


def test_a_latent_walk_loops_through_its_keyframes_keeping_the_norm():
    keys = latents_for_seeds(range(6), 32).reshape(3, 2, 32)  # 3 keyframes, 2 walks side by side
    walk = latent_walk(keys, 4)
    assert walk.shape == (12, 2, 32)
    assert torch.allclose(walk[0], keys[0]) and torch.allclose(walk[4], keys[1]) and torch.allclose(walk[8], keys[2])
    mid = slerp(keys[0], keys[1], 0.5).norm(dim=-1)
    ends = (keys[0].norm(dim=-1) + keys[1].norm(dim=-1)) / 2
    assert torch.allclose(mid, ends, rtol=0.15)  # a straight line would shrink towards zero


def test_user_latents_are_checked_against_the_generator():
    assert latents_from_array(np.zeros((3, 8)), 8).dtype == torch.float32
    for bad in (np.zeros((3, 7)), np.zeros(8), np.full((1, 8), np.nan)):
        with pytest.raises(ValueError):
            latents_from_array(bad, 8)
