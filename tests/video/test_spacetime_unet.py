"""Factorized space-time UNet: shapes on [B, C, T, H, W] with odd sizes, temporal mixing, registry and presets."""

import pytest
import torch

from cm_media.errors import UserError
from cm_media.nn import ARCHS, build_backbone
from cm_media.nn.spacetime import SpaceTimeUNet, SpaceTimeUNetConfig, TemporalAttention
from modalities.video.presets import PRESETS


def randomize(model):
    """Replace the zero-initialised output layers so the network's output depends on its input."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def test_registered_and_built_from_presets():
    assert ARCHS["spacetime_unet"] == (SpaceTimeUNetConfig, SpaceTimeUNet)
    model = build_backbone({"preset": "tiny"}, PRESETS, dims=3, in_channels=1)
    assert isinstance(model, SpaceTimeUNet) and model.cfg.dims == 3
    conv3d = build_backbone({"preset": "conv3d-tiny"}, PRESETS, dims=3, in_channels=1)
    assert type(conv3d).__name__ == "UNet" and conv3d.stride == [1, 2, 2]


@pytest.mark.parametrize("preset", ["tiny", "conv3d-tiny"])
@pytest.mark.parametrize("shape", [(2, 1, 7, 12, 10), (1, 3, 1, 9, 9), (2, 1, 16, 8, 8)])
def test_shapes_with_odd_sizes(preset, shape):
    model = build_backbone({"preset": preset}, PRESETS, dims=3, in_channels=shape[1])
    out = model(torch.randn(shape), torch.randn(shape[0]))
    assert out.shape == shape and torch.isfinite(out).all()


def test_output_starts_at_zero_and_frames_interact():
    model = build_backbone({"preset": "tiny"}, PRESETS, dims=3, in_channels=1).eval()
    x, c = torch.randn(1, 1, 7, 8, 8), torch.zeros(1)
    assert model(x, c).abs().max() == 0  # zero-initialised output conv
    randomize(model)
    y = x.clone()
    y[:, :, 6] += 1.0  # change only the last frame
    diff = (model(y, c) - model(x, c)).abs().amax(dim=(0, 1, 3, 4))  # [T]
    assert diff[0] > 0  # temporal convs/attention carry it to the first frame


def test_temporal_attention_mixes_only_over_time():
    attn = randomize(TemporalAttention(8, num_heads=2, max_frames=16)).eval()
    attn.norm = torch.nn.Identity()  # GroupNorm statistics span all pixels; without them mixing must be per pixel
    x = torch.randn(1, 8, 5, 4, 4)
    y = x.clone()
    y[..., 0, 0] += 1.0  # change one pixel's time series
    diff = (attn(y) - attn(x)).abs().amax(dim=(0, 1, 2))  # [H, W]
    assert diff[0, 0] > 0 and diff.flatten()[1:].max() == 0


def test_config_errors_are_user_errors():
    with pytest.raises(UserError, match="dims 3"):
        build_backbone({"arch": "spacetime_unet"}, {}, dims=2, in_channels=1)
    with pytest.raises(UserError, match="temporal_kernel"):
        build_backbone({"arch": "spacetime_unet", "temporal_kernel": 2}, {}, dims=3, in_channels=1)
    with pytest.raises(UserError, match="backbone.bogus"):
        build_backbone({"arch": "spacetime_unet", "bogus": 1}, {}, dims=3, in_channels=1)


def test_patch_size_folds_pixels_and_keeps_odd_shapes():
    model = build_backbone({"arch": "spacetime_unet", "channels": 8, "channel_mult": [1, 2], "patch_size": 2,
                            "num_heads": 2}, {}, dims=3, in_channels=1)
    assert model.total_stride == [1, 4, 4] and model.inp.in_channels == 4
    x = torch.randn(1, 1, 5, 9, 11)
    assert randomize(model)(x, torch.zeros(1)).shape == x.shape
    with pytest.raises(UserError, match="patch_size"):
        build_backbone({"arch": "spacetime_unet", "patch_size": 0}, {}, dims=3, in_channels=1)
