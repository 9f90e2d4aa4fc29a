"""Texture mode without servers: random colour crops of one large image -> a few training steps
of an RGB GAN -> a texture larger than the crops from its EMA generator."""

import numpy as np

from gan_model.images import decode_crops
from gan_model.training import Hooks, RankData
from tests.helpers import png, tiny_training, train_with


def test_colour_crops_train_an_rgb_generator_that_renders_a_larger_texture():
    from gan_model.checkpoint import ema_generator
    from gan_model.sampling import render_texture

    # A large colour "photograph": smooth colour gradients with stripes, so crops differ.
    y, x = np.mgrid[0:160, 0:200]
    image = np.stack([(x * 255 // 199), (y * 255 // 159), 128 + 100 * np.sign(np.sin(x / 5 + y / 9))], -1)
    crops = decode_crops(png(image.astype(np.uint8)), resolution=16, channels=3, size=32, count=48, seed=0)
    assert crops.shape == (48, 3, 16, 16)
    assert np.abs(crops[:, 0].astype(int) - crops[:, 1]).mean() > 10  # colour: the channels differ

    cfg = tiny_training("data.channels=3", "train.steps=3", "train.checkpoint_every=3", "train.log_every=1")
    trained = []  # the checkpoint folder lives only while its report is handled
    train_with(cfg, RankData(crops, seed=0, batch_size=8),
               hooks=Hooks(report=lambda m, ckpt: trained.append(ema_generator(ckpt)) if ckpt else None))
    g = trained[-1]
    assert g.channels == 3
    texture = render_texture(g, 2, seed=0)
    assert texture.shape == (3, 32, 32) and texture.dtype == np.uint8
