import typing

import pytest
import torch

from gan_model.architectures import REGISTRY, architecture, build_generator, build_networks, generator_kwargs
from gan_model.config import ModelConfig, build_config
from gan_model.errors import ConfigError

CASES = [(a, r, c) for a in ("dcgan", "resnet_sngan") for r in (32, 64, 128) for c in (1, 3)] + [
    ("dcgan", 16, 1), ("dcgan", 16, 3)]


def model(arch: str, **over) -> ModelConfig:
    return ModelConfig(architecture=arch, z_dim=8, g_width=4, d_width=4, **over)


def test_the_config_lists_exactly_the_registered_architectures():
    assert set(typing.get_args(ModelConfig.model_fields["architecture"].annotation)) == set(REGISTRY)


@pytest.mark.parametrize("arch,resolution,channels", CASES)
def test_shapes_for_every_architecture_resolution_and_channels(arch, resolution, channels):
    torch.manual_seed(0)
    g, d = build_networks(model(arch), channels, resolution)
    x = g(torch.randn(2, 8))
    assert x.shape == (2, channels, resolution, resolution)
    assert x.min() >= -1 and x.max() <= 1
    assert d(x).shape == (2,)


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_a_spatial_latent_map_renders_a_larger_image(arch):
    """Texture mode: G is fully convolutional, a (N, z, h, w) map gives a bigger canvas."""
    torch.manual_seed(0)
    g, d = build_networks(model(arch), 3, 32)
    g.eval()
    x = g(torch.randn(2, 8, 2, 3))
    expected = {"resnet_sngan": (64, 96), "dcgan": (5 * 8, 6 * 8)}[arch]  # dcgan: (h + 3) * R/4
    assert x.shape == (2, 3, *expected)
    if arch == "resnet_sngan":  # sum pooling: its D scores any size (DCGAN's D is for R x R only)
        assert d(x).shape == (2,)
    # A 1x1 map is the same as a latent vector.
    z = torch.randn(2, 8)
    torch.testing.assert_close(g(z[:, :, None, None]), g(z))


def test_resnet_sngan_is_the_paper_layout():
    torch.manual_seed(0)
    g, d = build_networks(model("resnet_sngan"), 3, 128)
    assert len(g.blocks) == 5 and g.project.out_channels == 4 * 16  # 16w at 4x4, w at 128x128
    assert g.out_conv.in_channels == 4
    # Every weight of D is spectrally normalised; D has no BatchNorm; G has.
    weighted = [m for m in d.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert weighted and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in weighted)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())
    assert d.blocks[0].first and not d.blocks[-1].downsample
    _, d_plain = build_networks(model("resnet_sngan", d_norm="none"), 3, 32)
    assert not any(torch.nn.utils.parametrize.is_parametrized(m) for m in d_plain.modules())


def test_d_norm_auto_is_each_familys_own_and_batch_is_refused_for_resnet():
    assert architecture("dcgan").d_norm == "batch" and architecture("resnet_sngan").d_norm == "spectral"
    _, d = build_networks(model("dcgan"), 1, 16)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    with pytest.raises(ConfigError, match="d_norm=batch does not apply to resnet_sngan"):
        build_config({}, ["model.architecture=resnet_sngan", "model.d_norm=batch"])


@pytest.mark.parametrize("arch", sorted(REGISTRY))
def test_a_generator_rebuilds_from_its_stored_kwargs(arch):
    torch.manual_seed(0)
    cfg = model(arch)
    g, _ = build_networks(cfg, 3, 32)
    kwargs = generator_kwargs(cfg, g)
    assert kwargs["architecture"] == arch
    rebuilt = build_generator(kwargs)
    rebuilt.load_state_dict(g.state_dict())
    z = torch.randn(3, 8)
    torch.testing.assert_close(rebuilt.eval()(z), g.eval()(z))


def test_files_from_before_the_registry_rebuild_as_dcgan():
    from gan_model.networks import Generator
    g = build_generator({"z_dim": 8, "width": 4, "channels": 1, "resolution": 16})
    assert type(g) is Generator
