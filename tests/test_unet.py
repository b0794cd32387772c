import pytest
import torch

from cm_media.errors import UserError
from cm_media.nn import UNet, UNetConfig, build_backbone


@pytest.mark.parametrize(
    "dims,shape,stride",
    [(1, (2, 2, 37), 4), (2, (2, 1, 8, 8), 2), (2, (2, 2, 9, 13), 2), (3, (2, 3, 5, 8, 8), [1, 2, 2])],
)
def test_unet_any_axes_and_odd_sizes(dims, shape, stride):
    cfg = UNetConfig(dims=dims, in_channels=shape[1], channels=16, channel_mult=[1, 2], num_res_blocks=1,
                     attn_levels=[1], down_stride=stride, dropout=0.1)
    net = UNet(cfg)
    y = net(torch.randn(shape), torch.zeros(shape[0]))
    assert y.shape == shape


def test_unet_output_layer_zero_initialised():
    net = UNet(UNetConfig(dims=2, in_channels=1, channels=16, channel_mult=[1, 2], num_res_blocks=1))
    y = net(torch.randn(3, 1, 8, 8), torch.randn(3))
    assert torch.equal(y, torch.zeros_like(y))


def test_unet_conditioning_matters_after_training_step():
    torch.manual_seed(0)
    net = UNet(UNetConfig(dims=1, in_channels=1, channels=16, channel_mult=[1, 2], num_res_blocks=1))
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(1, 1, 16)
    a = net(x, torch.tensor([0.0]))
    b = net(x, torch.tensor([1.0]))
    assert not torch.allclose(a, b)


def test_build_backbone_presets_and_errors():
    presets = {"mini": {"channels": 16, "channel_mult": [1], "num_res_blocks": 1}}
    net = build_backbone({"preset": "mini"}, presets, dims=2, in_channels=3)
    assert net.cfg.in_channels == 3 and net.cfg.dims == 2 and net.cfg.channels == 16
    net = build_backbone({"preset": "mini", "channels": 8}, presets, dims=1, in_channels=1)
    assert net.cfg.channels == 8
    with pytest.raises(UserError, match="unknown backbone preset 'nope'"):
        build_backbone({"preset": "nope"}, presets, 2, 1)
    with pytest.raises(UserError, match="backbone.widht"):
        build_backbone({"widht": 3}, presets, 2, 1)
    with pytest.raises(UserError, match="backbone.arch"):
        build_backbone({"arch": "lstm"}, presets, 2, 1)


def test_patchify_round_trip_and_layout():
    from cm_media.nn.layers import patchify, unpatchify

    x = torch.arange(2 * 3 * 8 * 12, dtype=torch.float32).reshape(2, 3, 8, 12)
    y = patchify(x, [2, 4])  # [2, 3*2*4, 4, 3]
    assert y.shape == (2, 24, 4, 3)
    # channel (c, i, j) of patch (a, b) holds pixel (2a + i, 4b + j) of channel c
    assert y[1, 2 * 8 + 1 * 4 + 3, 2, 1] == x[1, 2, 2 * 2 + 1, 4 * 1 + 3]
    assert torch.equal(unpatchify(y, [2, 4]), x)


@pytest.mark.parametrize("dims,shape,patch", [(1, (2, 1, 4001), 16), (2, (2, 2, 9, 30), [1, 4])])
def test_unet_patch_stem_keeps_any_length(dims, shape, patch):
    cfg = UNetConfig(dims=dims, in_channels=shape[1], channels=8, channel_mult=[1, 2], num_res_blocks=1,
                     down_stride=2, patch=patch)
    net = UNet(cfg)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    y = net(torch.randn(shape), torch.zeros(shape[0]))
    assert y.shape == shape
    assert net.inp.in_channels == shape[1] * (16 if dims == 1 else 4)


def test_unet_bad_patch_is_a_user_error():
    with pytest.raises(UserError, match="patch"):
        build_backbone({"channels": 8, "channel_mult": [1], "patch": [2, 2]}, {}, dims=1, in_channels=1)
