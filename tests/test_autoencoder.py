"""Learned-codec autoencoder (1D and 2D shapes, per-frame video, latent scale) and codec losses against formulas."""

import math

import pytest
import torch

from cm_media.nn import codec_losses as cl
from cm_media.nn.autoencoder import Autoencoder, AutoencoderConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_2d_autoencoder_codes_frames_and_video():
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(dims=2, in_channels=3, channels=8, channel_mult=[1, 2, 2], down=[2, 2],
                                       latent_channels=4))
    assert ae.factor == 4
    x = torch.rand(2, 3, 32, 32)
    z = ae.encode(x)
    assert z.shape == (2, 4, 8, 8) and ae.decode(z).shape == x.shape
    video = torch.rand(2, 3, 5, 16, 16)  # [B, C, T, H, W]: coded frame by frame
    zv = ae.encode(video)
    assert zv.shape == (2, 4, 5, 4, 4) and ae.decode(zv).shape == video.shape
    assert torch.allclose(zv[:, :, 3], ae.encode(video[:, :, 3]), atol=1e-5)
    with pytest.raises(ValueError, match="multiples"):
        ae.encode(torch.rand(1, 3, 30, 32))


def test_8x_downsampling_and_latent_scale():
    torch.manual_seed(0)
    ae = Autoencoder(dims=2, in_channels=1, channels=8, channel_mult=[1, 1, 2, 2], down=[2, 2, 2])
    x = torch.rand(4, 1, 64, 64)
    assert ae.encode(x).shape == (4, 4, 8, 8)
    scale = ae.fit_latent_scale(x)
    z = ae.encode(x)
    assert abs(z.std().item() - 1) < 1e-4 and scale > 0
    assert torch.allclose(ae.decode(z), ae(x)[0], atol=1e-5)
    restored = Autoencoder(ae.cfg)
    restored.load_state_dict(ae.state_dict())  # the scale travels with the weights
    assert restored.latent_scale.item() == pytest.approx(scale)


def test_1d_autoencoder_on_waveforms():
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(dims=1, in_channels=1, channels=8, channel_mult=[1, 2, 2, 4], down=[4, 4, 2],
                                       dilations=[1, 3, 9], num_res_blocks=2, latent_channels=8))
    assert ae.factor == 32
    x = torch.randn(2, 1, 1600)  # 0.1 s at 16 kHz
    z = ae.encode(x)
    assert z.shape == (2, 8, 50) and ae.decode(z).shape == x.shape
    loss = cl.l1(*ae(x)[:1], x).mean()
    loss.backward()
    assert all(p.grad is not None for p in ae.parameters())


def test_config_validation():
    with pytest.raises(ValueError, match="one factor per pair"):
        AutoencoderConfig(channel_mult=[1, 2], down=[2, 2])
    with pytest.raises(ValueError, match="even"):
        AutoencoderConfig(down=[3, 2])


def test_pixel_losses_and_psnr():
    y = torch.zeros(3, 1, 4, 4)
    x = y.clone()
    x[0] += 0.1
    x[1, 0, 0, 0] = 1.0
    assert torch.allclose(cl.l1(x, y), torch.tensor([0.1, 1 / 16, 0.0]))
    assert torch.allclose(cl.l2(x, y), torch.tensor([0.01, 1 / 16, 0.0]))
    p = cl.psnr(x, y)
    assert p.shape == (3,)
    assert p[0].item() == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    assert p[1].item() == pytest.approx(10 * math.log10(16), abs=1e-4)
    assert p[2].item() == pytest.approx(100.0)  # MSE floored at 1e-10
    assert cl.psnr(2 * x, 2 * y, data_range=2.0)[0].item() == pytest.approx(20.0, abs=1e-4)


def test_stft_losses():
    torch.manual_seed(0)
    t = torch.arange(4000) / 16000
    y = torch.stack([torch.sin(2 * math.pi * 440 * t) + 0.01 * torch.randn(4000), torch.randn(4000) * 0.1])  # [B, L]
    assert torch.allclose(cl.multi_resolution_stft_loss(y, y), torch.zeros(2), atol=1e-6)
    assert torch.allclose(cl.log_spectral_distance(y, y), torch.zeros(2))
    # scaling by g: SC = |1 - g|, log-magnitude L1 = |log g|, LSD = |log10 g^2| (away from the power floor)
    g = 0.5
    expect = abs(1 - g) + abs(math.log(g))
    assert torch.allclose(cl.stft_loss(g * y, y, 256), torch.full((2,), expect), atol=1e-3)
    assert torch.allclose(cl.log_spectral_distance(g * y, y), torch.full((2,), abs(math.log10(g ** 2))), atol=1e-3)
    mr = cl.multi_resolution_stft_loss(g * y, y, fft_sizes=(256, 512, 16384))  # 16384 > clip: skipped
    assert mr.shape == (2,) and torch.allclose(mr, torch.full((2,), expect), atol=1e-3)
    stereo = torch.stack([y, y.flip(0)], 1)  # [B, 2, L]: channels averaged per sample
    assert cl.multi_resolution_stft_loss(stereo * g, stereo).shape == (2,)
    noisy = y + 0.05 * torch.randn_like(y)
    assert (cl.multi_resolution_stft_loss(noisy, y) > 0.01).all()
    assert (cl.log_spectral_distance(noisy, y) > 0.01).all()
