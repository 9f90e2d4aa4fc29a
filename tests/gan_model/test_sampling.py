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


def colour_generator(seed: int = 0, resolution: int = 16):
    """An untrained RGB generator whose images vary visibly (and smoothly) with the latent."""
    from gan_model.networks import Generator
    torch.manual_seed(seed)
    g = Generator(z_dim=8, width=8, channels=3, resolution=resolution)
    with torch.no_grad():
        for _ in range(5):  # BatchNorm statistics of its own activations
            g(torch.randn(64, 8))
        [m for m in g.modules() if isinstance(m, torch.nn.ConvTranspose2d)][-1].weight.mul_(100)
    return g.eval().requires_grad_(False)


def test_a_texture_is_larger_than_a_training_image_and_not_a_tiling_of_one():
    from gan_model.sampling import generate, render_texture
    g = colour_generator()
    texture = render_texture(g, 3, seed=5)
    assert texture.shape == (3, 48, 48) and texture.dtype == np.uint8
    tiles = [texture[:, y:y + 16, x:x + 16].astype(int) for y in (0, 16, 32) for x in (0, 16, 32)]
    assert min(np.abs(a - b).mean() for i, a in enumerate(tiles) for b in tiles[i + 1:]) > 2  # no repeats
    assert np.array_equal(render_texture(g, 3, seed=5), texture)  # seeded
    assert not np.array_equal(render_texture(g, 3, seed=6), texture)
    # Scale 1 is the seed's own image: a texture and a sample of the same seed agree.
    assert np.array_equal(render_texture(g, 1, seed=5), generate(g, latents_for_seeds([5], 8))[0])


def test_a_generator_that_is_not_fully_convolutional_cannot_render_a_texture():
    from gan_model.sampling import render_texture

    class Fixed(torch.nn.Module):  # one image whatever the latent's shape
        z_dim, resolution, channels = 8, 16, 1

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, z):
            return torch.zeros(len(z), 1, 16, 16) + self.w
    with pytest.raises(ValueError, match="not fully convolutional"):
        render_texture(Fixed(), 2, seed=0)


def test_the_rendered_latent_walk_is_smooth_and_loops_back_to_its_start():
    from gan_model.sampling import FRAMES_PER_KEY, KEYFRAMES, walk_frames, walk_keyframes
    g = colour_generator()
    frames = np.stack(walk_frames(g, walk_keyframes(seed=3, n=4, z_dim=8))).astype(int)
    assert len(frames) == KEYFRAMES * FRAMES_PER_KEY and frames.shape[1] >= 256 and frames.shape[3] == 3
    step = np.abs(np.diff(frames, axis=0)).mean()  # consecutive frames
    back = np.abs(frames[-1] - frames[0]).mean()  # the loop closes: after the last frame comes the first
    i, j = np.random.default_rng(0).integers(0, len(frames), (2, 200))
    far = np.abs(frames[i] - frames[j]).mean()  # random pairs of frames
    assert step < far / 3 and back < far / 3, (step, back, far)
    assert step > 0  # it moves


def test_a_walk_written_as_mp4_is_a_video_with_every_frame(tmp_path):
    import imageio_ffmpeg

    from gan_model.images import save_mp4
    from gan_model.sampling import walk_frames, walk_keyframes
    frames = walk_frames(colour_generator(), walk_keyframes(seed=0, n=4, z_dim=8), frames_per_key=5)
    path = save_mp4(frames, tmp_path / "walk.mp4", fps=12)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    decoded = [np.frombuffer(f, np.uint8).reshape(meta["size"][1], meta["size"][0], 3) for f in reader]
    h, w = frames[0].shape[:2]
    assert len(decoded) == len(frames) == 20 and meta["size"] == (-(-w // 16) * 16, -(-h // 16) * 16)
    assert np.abs(decoded[7][:h, :w].astype(int) - frames[7]).mean() < 12  # H.264 is lossy, not wrong
