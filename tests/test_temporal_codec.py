"""A codec with time in it: temporal blocks before a per-frame decoder (identity at initialization, shapes, a
single frame), codec runs that train only a part (frozen encoder keeps the latent space and its scale) with
noise-augmented latents, and generation that keeps given frames exactly."""

import pytest
import torch

from cm_media.conditions import Condition, keep_known_frames
from cm_media.errors import UserError
from cm_media.math.parameterization import CodecNet
from cm_media.methods.autoencoder import AutoencoderMethodConfig, AutoencoderTraining
from cm_media.nn import codec_losses as cl
from cm_media.nn.autoencoder import Autoencoder, AutoencoderConfig
from cm_media.nn.temporal_refiner import TemporalRefiner

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ARCH = dict(dims=2, in_channels=3, channels=8, channel_mult=[1, 2], down=[2], latent_channels=4)


def _pair():
    """A per-frame codec and the same codec with temporal blocks, sharing its weights."""
    torch.manual_seed(0)
    plain = Autoencoder(AutoencoderConfig(**ARCH))
    timed = Autoencoder(AutoencoderConfig(**ARCH, temporal_blocks=2, temporal_width=8))
    missing, unexpected = timed.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("temporal.") for k in missing)
    return plain, timed


def test_temporal_blocks_start_as_the_identity_and_keep_shapes():
    plain, timed = _pair()
    z = torch.randn(2, 4, 5, 8, 8)  # [B, C, T, h, w]
    assert torch.equal(timed.temporal(z), z)  # zero-initialized output convolution
    assert torch.allclose(timed.decode(z), plain.decode(z), atol=1e-6)
    assert timed.decode(z).shape == (2, 3, 5, 16, 16)
    assert timed.decode(z[:, :, :1]).shape == (2, 3, 1, 16, 16)  # one frame: edges repeated
    assert timed.decode(z[:, :, 0]).shape == (2, 3, 16, 16)  # a picture does not pass the temporal blocks
    x = torch.rand(1, 3, 2, 16, 16)
    assert torch.equal(timed.encode(x), plain.encode(x))


def test_trained_temporal_blocks_keep_a_still_clip_still():
    torch.manual_seed(0)
    ref = TemporalRefiner(4, width=8, blocks=1)
    torch.nn.init.normal_(ref.conv_out.weight, std=0.1)
    still = torch.randn(1, 4, 1, 6, 6).expand(1, 4, 7, 6, 6)  # the same frame 7 times
    out = ref(still)
    assert not torch.allclose(out, still)  # it does refine
    assert torch.allclose(out, out[:, :, :1].expand_as(out), atol=1e-6)  # edges repeated: no frame differs
    moving = still.clone()
    moving[:, :, 3] += 1.0
    assert not torch.allclose(ref(moving)[:, :, 2], out[:, :, 2])  # a frame sees its neighbours


def test_temporal_config_errors():
    with pytest.raises(ValueError, match="2D"):
        AutoencoderConfig(dims=1, temporal_blocks=1)
    with pytest.raises(ValueError, match="temporal_width"):
        AutoencoderConfig(dims=2, temporal_blocks=1, temporal_width=0)


def _method(ae, **options):
    return AutoencoderTraining(AutoencoderMethodConfig(frames_per_clip=0, **options), CodecNet(ae), 10)


def test_train_part_freezes_what_must_not_change():
    _, timed = _pair()
    _method(timed, train_part="temporal")
    trainable = {n.split(".")[0] for n, p in timed.named_parameters() if p.requires_grad}
    assert trainable == {"temporal"}
    _, timed = _pair()
    _method(timed, train_part="decoder")
    assert {n.split(".")[0] for n, p in timed.named_parameters() if p.requires_grad} == {"decoder", "temporal"}
    plain, _ = _pair()
    with pytest.raises(UserError, match="temporal_blocks"):
        _method(plain, train_part="temporal")
    with pytest.raises(UserError, match="train_part must be one of"):
        _method(plain, train_part="encoder")
    with pytest.raises(UserError, match="latent_noise"):
        _method(plain, latent_noise=-0.1)


def test_a_frozen_encoder_keeps_its_scale_and_noise_reaches_only_the_decoder():
    _, timed = _pair()
    timed.latent_scale.fill_(2.0)
    x = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    clean = _method(timed, train_part="decoder").loss(CodecNet(timed), x, 0, torch.Generator().manual_seed(0))
    assert timed.latent_scale.item() == 2.0  # step 0 would set it if the encoder trained
    rec, _ = timed(x)
    expected = cl.l2(rec, x) + 0.1 * cl.l1(rec, x) + 1e-4 * timed.encode_raw(x).square().flatten(1).mean(1)
    assert torch.allclose(clean, expected, atol=1e-6)  # latent_noise 0: the plain reconstruction loss, per sample
    noisy = _method(timed, train_part="decoder", latent_noise=0.5).loss(CodecNet(timed), x, 0,
                                                                        torch.Generator().manual_seed(0))
    assert noisy.shape == (2,) and not torch.allclose(noisy, clean)
    noisy.sum().backward()
    assert all(p.grad is None for p in timed.encoder.parameters())
    assert all(p.grad is not None for p in timed.temporal.parameters())
    _method(timed, train_part="all").loss(CodecNet(timed), x, 0, torch.Generator().manual_seed(0))
    assert timed.latent_scale.item() != 2.0  # a codec run training its encoder fits the scale


def test_keep_known_frames_replaces_only_given_frames():
    c = Condition("first_frame", kind="frames", dim=2, frames=1)
    known = torch.randn(3, 2, 1, 4, 4)
    mask = torch.tensor([1.0, 0.0, 1.0]).view(3, 1, 1, 1, 1).expand(3, 1, 1, 4, 4)
    value = torch.cat([known, mask], 1)  # row 1: "no condition"
    f = keep_known_frames(lambda x, s: x * 2, [c], {"first_frame": value})
    x = torch.randn(3, 2, 5, 4, 4)
    out = f(x, torch.ones(3))
    assert torch.equal(out[[0, 2], :, :1], known[[0, 2]])
    assert torch.equal(out[1], x[1] * 2) and torch.equal(out[:, :, 1:], x[:, :, 1:] * 2)
    g = lambda x, s: x  # noqa: E731
    assert keep_known_frames(g, [c], {}) is g  # nothing given: the network as it is
