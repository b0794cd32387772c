"""The `stft_unet` waveform backbone (modalities/audio/stft_unet.py): waveform in, waveform out, any length."""

import pytest
import torch

from cm_media.errors import UserError
from cm_media.nn import build_backbone
from modalities.audio import MODALITY
from modalities.audio.stft_unet import STFTUNet, STFTUNetConfig


def small(**kw):
    args = dict(dims=1, in_channels=2, channels=8, channel_mult=[1, 2], num_res_blocks=1, n_fft=64, hop=32)
    return STFTUNet(STFTUNetConfig(**{**args, **kw}))


@pytest.mark.parametrize("length", [1024, 1000, 333])
def test_waveform_shapes_any_length_and_zero_start(length):
    net = small()
    x = torch.randn(3, 2, length)
    y = net(x, torch.zeros(3))
    assert y.shape == x.shape and torch.equal(y, torch.zeros_like(y))  # the UNet's output layer starts at zero


def test_output_is_the_istft_of_the_unet_output_and_gradients_reach_the_input():
    torch.manual_seed(0)
    net = small(in_channels=1)
    for p in net.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 1, 512, requires_grad=True)
    y = net(x, torch.full((2,), 0.3))
    assert y.abs().mean() > 0
    y.pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # whatever the UNet outputs, the result is a waveform the STFT round trip leaves unchanged: it lies in the
    # range of the iSTFT (no Nyquist content, consistent overlapping frames)
    win = torch.hann_window(64)
    spec = torch.stft(y.detach()[:, 0], 64, 32, window=win, center=True, normalized=True, return_complex=True)
    back = torch.istft(spec, 64, 32, window=win, center=True, normalized=True, length=512)
    assert torch.allclose(back, y.detach()[:, 0], atol=1e-5)


def test_preset_builds_for_waveforms_only():
    net = build_backbone({"preset": "wave-stft"}, MODALITY.backbone_presets, dims=1, in_channels=1)
    assert isinstance(net, STFTUNet) and net(torch.randn(1, 1, 3968), torch.zeros(1)).shape == (1, 1, 3968)
    with pytest.raises(UserError, match="waveforms"):
        build_backbone({"preset": "wave-stft"}, MODALITY.backbone_presets, dims=2, in_channels=2)
    with pytest.raises(UserError, match="n_fft"):
        build_backbone({"preset": "wave-stft", "hop": 200}, MODALITY.backbone_presets, dims=1, in_channels=1)
