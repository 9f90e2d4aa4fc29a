import pytest
import torch

from gan_model.augment import (AUTO_BELOW_IMAGES, augment_generator, augmentation_on, cutout, diff_augment,
                               translation)

POLICY = "color,translation,cutout"


def images(n=4, c=3, r=16):
    return torch.rand(n, c, r, r, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_seeded_same_stream_same_images_other_stream_other_images():
    x = images()
    a = diff_augment(x, POLICY, augment_generator(0, 0, 5, 1))
    b = diff_augment(x, POLICY, augment_generator(0, 0, 5, 1))
    c = diff_augment(x, POLICY, augment_generator(0, 0, 5, 2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == x.shape


def test_differentiable_every_transform_passes_gradients_to_its_input():
    for policy in ("color", "translation", "cutout", POLICY):
        x = images().requires_grad_(True)
        y = diff_augment(x, policy, augment_generator(1, 0, 0, 0))
        (grad,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), x)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0, policy


def test_cutout_zeroes_one_square_of_half_the_side_and_translation_keeps_pixels():
    ones = torch.ones(64, 1, 16, 16)
    holes = (cutout(ones, augment_generator(0, 0, 0, 0)) == 0).sum(dim=(1, 2, 3))
    assert holes.max() == 64 and holes.min() > 0  # 8x8 inside, clipped at the border
    x = torch.arange(256.0).view(1, 1, 16, 16).expand(64, 1, 16, 16) + 1
    moved = translation(x, augment_generator(0, 0, 0, 0))
    for img, out in zip(x, moved):  # a shifted copy: the kept pixels are a block of the original
        kept = out[out > 0]
        assert set(kept.tolist()) <= set(img.flatten().tolist()) and len(kept) >= 14 * 14


def test_auto_turns_augmentation_on_for_small_data_sets_only():
    assert augmentation_on("auto", AUTO_BELOW_IMAGES - 1) and not augmentation_on("auto", AUTO_BELOW_IMAGES)
    assert augmentation_on("on", 10**6) and not augmentation_on("off", 10)


def test_policy_and_setting_are_validated():
    from gan_model.config import build_config
    from gan_model.errors import ConfigError
    assert build_config({}, ["train.augment=off"]).train.augment == "off"  # YAML's off is a boolean
    assert build_config({}, ["train.augment_policy=cutout, color"]).train.augment_policy == "cutout,color"
    with pytest.raises(ConfigError, match="augment_policy"):
        build_config({}, ["train.augment_policy=colour"])
