import io
import os

import numpy as np
import pytest
from PIL import Image

from gan_model.images import InvalidImage, decode_image, decoded_pixels, make_grid
from tests.helpers import png


def decode(data, **kw):
    return decode_image(data, **{"resolution": 16, "channels": 1, **kw})


def gradient(w=40, h=30):
    return (np.add.outer(np.arange(h), np.arange(w)) * 3 % 256).astype(np.uint8)


def test_grey_png_is_cropped_and_resized():
    out = decode(png(gradient()))
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8


def test_rgb_to_grey_and_grey_to_rgb():
    rgb = np.stack([gradient()] * 3, -1)
    assert decode(png(rgb)).shape == (1, 16, 16)
    assert decode(png(gradient()), channels=3).shape == (3, 16, 16)


@pytest.mark.parametrize("data,reason", [
    (b"", "empty"),
    (b"this is not an image at all", "not a decodable image"),
])
def test_garbage_is_rejected_with_a_reason(data, reason):
    with pytest.raises(InvalidImage, match=reason):
        decode(data)


def test_truncated_png_is_rejected():
    data = png(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    with pytest.raises(InvalidImage, match="corrupt or truncated|not a decodable"):
        decode(data[: len(data) // 2])


def test_decompression_bomb_is_rejected_before_decoding():
    with pytest.raises(InvalidImage, match="too many pixels"):
        decode(png(np.zeros((200, 200), np.uint8)), max_pixels=10_000)


def test_small_image_policy():
    small = png(np.full((8, 8), 200, np.uint8))
    assert decode(small).shape == (1, 16, 16)
    with pytest.raises(InvalidImage, match="smaller than the target"):
        decode(small, small_images="skip")


def test_sixteen_bit_cmyk_palette_and_animation():
    sixteen = Image.fromarray(gradient().astype(np.uint16) * 257)
    assert sixteen.mode.startswith("I;16")
    buf = io.BytesIO(); sixteen.save(buf, format="PNG")
    # The full 16-bit range maps onto 8 bits: the same picture as its 8-bit version.
    np.testing.assert_allclose(decode(buf.getvalue()).astype(int), decode(png(gradient())).astype(int), atol=1)

    cmyk = Image.new("CMYK", (20, 20), (0, 255, 255, 0))  # red
    buf = io.BytesIO(); cmyk.save(buf, format="JPEG")
    red = decode(buf.getvalue(), channels=3)
    assert red[0].mean() > 200 and red[1].mean() < 60

    pal = Image.new("P", (20, 20), 1)
    pal.putpalette([255, 255, 255, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 1  # fully transparent green -> composited over black
    buf = io.BytesIO(); pal.save(buf, format="PNG", transparency=1)
    assert decode(buf.getvalue(), channels=3).max() == 0

    frames = [Image.fromarray(np.full((20, 20), v, np.uint8)) for v in (10, 250)]
    buf = io.BytesIO(); frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert decode(buf.getvalue()).mean() < 50  # the first frame


def test_exif_orientation_is_applied():
    arr = np.zeros((20, 40), np.uint8)
    arr[:, :20] = 255  # left half white
    img = Image.fromarray(arr)
    exif = img.getexif(); exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO(); img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    out = decode(buf.getvalue(), resolution=16)[0]
    assert out[:8].mean() > 180 and out[8:].mean() < 80  # white ends up on top


def test_grid_tiles_images():
    imgs = np.zeros((5, 1, 4, 4), np.uint8); imgs[3] = 255
    grid = make_grid(imgs, nrow=3, padding=1)
    assert grid.shape == (1 + 2 * 5, 1 + 3 * 5, 1)
    assert grid[6:10, 1:5].min() == 255 and grid[1:5, 1:5].max() == 0


def test_formats_outside_the_allowlist_never_reach_their_decoder(tmp_path, monkeypatch):
    """EPS would make Pillow run Ghostscript: it is skipped from its magic bytes, and a `gs` on PATH
    never runs."""
    from PIL import EpsImagePlugin

    from tests.helpers import fake_program
    gs = fake_program(tmp_path / "bin", "gs")
    monkeypatch.setenv("PATH", f"{gs.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # let Pillow look for gs again
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n0 0 moveto 64 64 lineto stroke\nshowpage\n"
    with pytest.raises(InvalidImage, match="unsupported format EPS"):
        decode(eps)
    with pytest.raises(InvalidImage, match="unsupported format EPS"):
        decoded_pixels(eps, resolution=16, max_pixels=10**6)
    assert not (gs.parent / "gs.called").exists()


def test_a_real_bomb_is_rejected_from_its_header_whatever_the_warnings_filter():
    import warnings

    from tests.helpers import bomb_png
    bomb = bomb_png(6000, 6000)  # 36 megapixels in about 36 KB
    assert len(bomb) < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # what another thread may do at any time
        with pytest.raises(InvalidImage, match="too many pixels"):
            decode(bomb, max_pixels=16_000_000)
        with pytest.raises(InvalidImage, match="too many pixels"):
            decoded_pixels(bomb, resolution=16, max_pixels=16_000_000)
    # Past twice Pillow's own limit, Pillow refuses to even open it.
    with pytest.raises(InvalidImage, match="decompression bomb"):
        decode(bomb_png(14000, 14000), max_pixels=10**9)


def test_large_jpegs_decode_at_reduced_scale_with_the_same_result():
    rng = np.random.default_rng(0)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8)).resize(
        (1600, 1200), Image.Resampling.BICUBIC))
    buf = io.BytesIO(); Image.fromarray(smooth).save(buf, format="JPEG", quality=95)
    pixels = decoded_pixels(buf.getvalue(), resolution=32, max_pixels=10**8)
    assert pixels == 200 * 150  # draft: 1/8 scale still leaves more than twice the target side
    reference = np.asarray(Image.fromarray(smooth).crop((200, 0, 1400, 1200)).resize((32, 32), Image.Resampling.LANCZOS))
    out = decode(buf.getvalue(), resolution=32)[0]
    assert np.abs(out.astype(int) - reference).mean() < 2


def test_large_pngs_are_reduced_before_conversion_with_the_same_result():
    rng = np.random.default_rng(1)
    smooth = np.asarray(Image.fromarray(rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)).resize(
        (1200, 1200), Image.Resampling.BICUBIC))
    reference = np.asarray(Image.fromarray(smooth).convert("L").resize((32, 32), Image.Resampling.LANCZOS))
    out = decode(png(smooth), resolution=32)[0]
    assert np.abs(out.astype(int) - reference).mean() < 1


def test_folders_are_streamed_with_the_ingest_limits_and_never_left_through_symlinks(tmp_path):
    from gan_model.images import folder_batches, folder_files
    from tests.helpers import bomb_png
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(png(gradient()))
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i in range(5):
        (folder / f"{i}.png").write_bytes(png(gradient(40 + i % 2, 30)))
    (folder / "sub" / "deep.png").write_bytes(png(gradient()))
    (folder / "inside-link.png").symlink_to(folder / "0.png")  # stays inside: used
    (folder / "escape.png").symlink_to(outside / "secret.png")  # leads out: skipped
    (folder / "escape-dir").symlink_to(outside, target_is_directory=True)  # not descended into
    (folder / "bomb.png").write_bytes(bomb_png(6000, 6000))
    (folder / "big.png").write_bytes(png(np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)))
    (folder / "figure.eps").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n")
    names = {p.name for p in folder_files(folder)}
    assert "escape.png" not in names and "secret.png" not in names and {"inside-link.png", "deep.png"} <= names
    batches = list(folder_batches(folder, 3, max_pixels=16_000_000, max_bytes=50_000))
    assert sum(len(b) for b in batches) == 7  # 5 + deep + inside-link; no bomb, big file, EPS or escape
    assert all(b.dtype == np.uint8 and b.shape[1] == 3 and len(b) <= 3 for b in batches)


def colour_texture(h=96, w=80, seed=0) -> np.ndarray:
    """A colour image whose every window is different (noise), (H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_texture_crops_are_seeded_windows_of_the_image_and_reproducible():
    from gan_model.images import decode_crops
    image = colour_texture()
    data = png(image)
    crops = decode_crops(data, resolution=16, channels=3, size=16, count=12, seed=0)
    assert crops.shape == (12, 3, 16, 16) and crops.dtype == np.uint8
    windows = np.lib.stride_tricks.sliding_window_view(image, (16, 16, 3))[:, :, 0]  # (y, x, 16, 16, 3)
    for crop in crops:  # size == resolution: every crop is an exact 16x16 window of the image
        hits = np.argwhere((windows == crop.transpose(1, 2, 0)).all(axis=(2, 3, 4)))
        assert len(hits) == 1
    positions = {tuple(np.argwhere((windows == c.transpose(1, 2, 0)).all(axis=(2, 3, 4)))[0]) for c in crops}
    assert len(positions) > 6  # spread over the image, not one place
    assert np.array_equal(decode_crops(data, resolution=16, channels=3, size=16, count=12, seed=0), crops)
    assert not np.array_equal(decode_crops(data, resolution=16, channels=3, size=16, count=12, seed=1), crops)
    # Larger crops are resized to the resolution; grey output from a colour image.
    big = decode_crops(data, resolution=16, channels=1, size=64, count=3, seed=0)
    assert big.shape == (3, 1, 16, 16)


def test_crops_larger_than_the_image_name_the_setting():
    from gan_model.images import decode_crops
    with pytest.raises(InvalidImage, match=r"smaller than the crop \(80x96 < data.crops.size=128\); lower data.crops.size"):
        decode_crops(png(colour_texture()), resolution=16, channels=3, size=128, count=2)
