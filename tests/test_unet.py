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


@pytest.mark.parametrize("shape,groups", [((3, 64, 8, 6), 32), ((2, 16, 5, 7, 2), 8), ((2, 48, 4, 4), 16), ((2, 1, 4, 4), 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_group_norm_channels_last_fast_path_matches_the_native_kernel(shape, groups, dtype):
    from cm_media.nn.layers import GroupNorm, _channels_last

    torch.manual_seed(0)
    norm = GroupNorm(groups, shape[1])
    norm.weight.data.normal_()
    norm.bias.data.normal_()
    x = (torch.randn(shape) * 3 + 1).to(dtype)
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    xcl = x.contiguous(memory_format=fmt)
    assert _channels_last(xcl) == (shape[1] > 1) and not _channels_last(x)
    scale, shift = torch.randn(shape[0], shape[1]), torch.randn(shape[0], shape[1])
    ref_scale, ref_shift = (t.view(*t.shape, *[1] * (len(shape) - 2)) for t in (scale, shift))
    with torch.no_grad():
        ref = torch.nn.functional.group_norm(x.float(), groups, norm.weight, norm.bias)
        cases = [(norm(xcl), ref),
                 (norm.modulated(xcl, scale, shift, silu=True), torch.nn.functional.silu(ref * (1 + ref_scale) + ref_shift)),
                 (norm.modulated(x, scale, shift, silu=True), torch.nn.functional.silu(ref * (1 + ref_scale) + ref_shift))]
    tol = 1e-4 if dtype == torch.float32 else 0.1
    for i, (out, expected) in enumerate(cases):
        fast = i < 2 and shape[1] > 1
        assert out.shape == x.shape and (out.dtype == dtype or not fast)  # the fast path keeps the input dtype
        assert (out.float() - expected).abs().max() < tol
    assert norm(xcl).is_contiguous(memory_format=fmt)  # the layout the next conv wants is kept


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dims,shape", [(2, (2, 1, 8, 8)), (3, (2, 1, 4, 8, 8))])
def test_unet_channels_last_weights_keep_every_activation_channels_last(dims, shape, threads, monkeypatch, request):
    """A grey (1-channel) input leaves the stem's output in plain layout; the net must move it to channels-last,
    or every GroupNorm and conv after it falls off its fast path. Same outputs as the plain-layout net. On one
    thread a float32 1x1x1 Conv3d returns plain layout by itself (layers.Conv3d restores it)."""
    from cm_media.nn import layers
    from cm_media.runs.generator import apply_speed_options

    before = torch.get_num_threads()
    request.addfinalizer(lambda: torch.set_num_threads(before))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = UNet(UNetConfig(dims=dims, in_channels=1, channels=16, channel_mult=[1, 2], num_res_blocks=1,
                          attn_levels=[1], down_stride=[1, 2, 2][-dims:])).eval()
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x, c_noise = torch.randn(shape), torch.randn(shape[0])
    with torch.no_grad():
        ref = net(x, c_noise)
        assert net._weight_format() is None
        holder = torch.nn.Module()
        holder.backbone = net
        apply_speed_options(holder, channels_last=True, compile=False)
        fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
        assert net._weight_format() == fmt
        seen, modulated = [], layers.GroupNorm.modulated

        def spy(self, h, *args, **kwargs):
            seen.append(layers._channels_last(h))
            return modulated(self, h, *args, **kwargs)

        monkeypatch.setattr(layers.GroupNorm, "modulated", spy)
        out = net(x, c_noise)
    assert len(seen) == sum(isinstance(m, layers.GroupNorm) for m in net.modules()) and all(seen)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
