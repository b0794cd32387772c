"""Per-stream noise levels (cm_media/math/streams.py): broadcasting, held streams in the consistency function, the
iCT loss and the given-streams sampler, the joint network's stream inputs, and fine-tuning with train.init_from."""

import math

import pytest
import torch

from cm_media.errors import UserError
from cm_media.math import losses, streams
from cm_media.math.parameterization import Preconditioned
from cm_media.math.samplers import given_streams_multistep
from cm_media.methods.consistency_training import ICTConfig
from modalities.av.joint_net import JointNet, JointNetConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_per_element_expands_each_streams_level_over_its_elements():
    like = torch.zeros(2, 1, 5)
    sigma = torch.tensor([[1.0, 7.0], [2.0, 3.0]])
    out = streams.per_element(sigma, like, [3, 2])
    assert out.shape == (2, 1, 5)
    assert out[0, 0].tolist() == [1, 1, 1, 7, 7] and out[1, 0].tolist() == [2, 2, 2, 3, 3]
    assert streams.per_element(torch.tensor([4.0, 5.0]), like, None).shape == (2, 1, 1)
    with pytest.raises(ValueError, match="does not fit streams"):
        streams.per_element(sigma, like, [3, 3])


def test_clean_stream_mask_holds_exactly_one_stream_with_probability_p():
    g = torch.Generator().manual_seed(0)
    held = streams.clean_stream_mask(4000, 2, 0.5, g)
    assert held.shape == (4000, 2) and held.sum(1).max() == 1  # never both
    assert abs(held.any(1).float().mean() - 0.5) < 0.03 and abs(held[:, 0].float().mean() - 0.25) < 0.03
    assert not streams.clean_stream_mask(100, 2, 0.0, g).any()
    assert (streams.clean_stream_mask(100, 3, 1.0, g).sum(1) == 1).all()
    sigma = streams.hold_streams(torch.tensor([5.0, 6.0]), torch.tensor([[True, False], [False, False]]), 0.002)
    assert torch.equal(sigma, torch.tensor([[0.002, 5.0], [6.0, 6.0]]))


def test_held_by_mask_accepts_only_whole_streams():
    sizes = [3, 2]
    audio = torch.tensor([[[0, 0, 0, 1, 1.0]]])
    assert streams.held_by_mask(audio, sizes).tolist() == [True, False]  # video kept, audio regenerated
    assert streams.held_by_mask(1 - audio, sizes).tolist() == [False, True]
    assert streams.held_by_mask(torch.tensor([[[0, 1, 0, 1, 1.0]]]), sizes) is None  # cuts the video stream
    assert streams.held_by_mask(torch.ones(1, 1, 5), sizes) is None  # regenerates everything
    assert streams.held_by_mask(torch.zeros(1, 1, 5), sizes) is None
    assert streams.held_by_mask(audio, None) is None


class TwoStreams(torch.nn.Module):
    """F(x, c_noise [B, S]) = x + the streams' c_noise, so outputs show which level each element was given."""

    stream_sizes = [3, 2]

    def forward(self, x, c_noise, cond=None):
        c = c_noise if c_noise.ndim == 2 else c_noise[:, None].expand(-1, 2)
        return x + streams.per_element(c, x, self.stream_sizes)


def test_a_held_stream_passes_through_the_consistency_function_exactly():
    f = Preconditioned(TwoStreams())
    x = torch.randn(2, 1, 5)
    y = f(x, torch.tensor([[0.002, 10.0], [10.0, 10.0]]))
    assert torch.equal(y[0, 0, :3], x[0, 0, :3])  # boundary condition on the held video stream
    assert not torch.allclose(y[0, 0, 3:], x[0, 0, 3:])
    assert torch.allclose(y[1], f(x, torch.tensor([10.0, 10.0]))[1])  # equal levels = the shared-sigma call


def test_ict_loss_with_equal_stream_levels_is_the_shared_loss_and_a_held_stream_costs_nothing():
    f = Preconditioned(TwoStreams())
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(3, 1, 5, generator=g), torch.randn(3, 1, 5, generator=g)
    hi, lo = torch.tensor([2.0, 1.0, 0.5]), torch.tensor([1.5, 0.7, 0.4])
    shared = losses.ict_loss(f, x0, noise, hi, lo, 0.01)
    split = losses.ict_loss(f, x0, noise, hi[:, None].expand(-1, 2), lo[:, None].expand(-1, 2), 0.01, [3, 2])
    assert torch.allclose(shared, split)
    held = torch.tensor([[True, False]] * 3)
    per_sample = losses.ict_loss(f, x0, noise, streams.hold_streams(hi, held, 0.002),
                                 streams.hold_streams(lo, held, 0.002), 0.01, [3, 2])
    # by hand: only the audio elements differ between the two passes; weight 1 / (hi - lo) of the noised pair
    y_hi = f(x0 + streams.per_element(streams.hold_streams(hi, held, 0.002), x0, [3, 2]) * noise,
             streams.hold_streams(hi, held, 0.002))
    y_lo = f(x0 + streams.per_element(streams.hold_streams(lo, held, 0.002), x0, [3, 2]) * noise,
             streams.hold_streams(lo, held, 0.002))
    assert torch.equal(y_hi[:, :, :3], y_lo[:, :, :3])
    d2 = (y_hi - y_lo).pow(2).reshape(3, -1).sum(1)
    expected = ((d2 + 0.01**2).sqrt() - 0.01) / (hi - lo)
    assert torch.allclose(per_sample, expected, rtol=1e-5)


def test_clean_stream_p_is_checked():
    with pytest.raises(UserError, match=r"method.clean_stream_p must be in \[0, 1\], got 1.5"):
        ICTConfig(clean_stream_p=1.5)


def test_given_streams_sampler_keeps_the_held_stream_and_shows_it_clean_at_every_step():
    seen = []

    def f(x, sigma):
        seen.append(sigma.clone())
        return torch.zeros_like(x) + 0.25

    known = torch.randn(2, 1, 5)
    held = torch.tensor([True, False])
    out = given_streams_multistep(f, known, held, [3, 2], [20.0, 2.0], 0.002, torch.Generator().manual_seed(0))
    assert torch.equal(out[:, :, :3], known[:, :, :3]) and torch.equal(out[:, :, 3:], torch.full((2, 1, 2), 0.25))
    assert len(seen) == 2
    assert torch.equal(seen[0], torch.tensor([[0.002, 20.0]] * 2)) and torch.equal(seen[1], torch.tensor([[0.002, 2.0]] * 2))


def joint(stream_noise: bool) -> JointNet:
    cfg = JointNetConfig(frames=4, size=16, bins=16, spec_frames=16, audio_patch=[2, 2], channels=8,
                         channel_mult=[1, 2], temporal_attn_levels=[1], stream_noise=stream_noise)
    torch.manual_seed(0)
    return JointNet(cfg).eval()


def test_stream_noise_starts_as_the_shared_network_and_then_hears_the_other_level():
    plain, split = joint(False), joint(True)
    assert split.load_state_dict(plain.state_dict(), strict=False).missing_keys == [
        "video_hears.weight", "video_hears.bias", "audio_sees.weight", "audio_sees.bias"]
    torch.manual_seed(2)
    with torch.no_grad():  # wake the zero-initialized output heads (the same values in both)
        for p, q in zip(plain.parameters(), [q for n, q in split.named_parameters()
                                             if not n.startswith(("video_hears", "audio_sees"))]):
            if p.abs().max() == 0 and p.ndim > 1:
                p.normal_(0, 0.05)
                q.copy_(p)
    assert split.stream_sizes == [4 * 16 * 16, 2 * 16 * 16] and not hasattr(plain, "stream_sizes")
    x, c = torch.randn(2, 1, 4 * 16 * 16 + 2 * 16 * 16), torch.tensor([0.3, -0.5])
    with torch.no_grad():
        assert torch.equal(plain(x, c), split(x, c))
        assert torch.equal(split(x, c), split(x, torch.stack([c, c], 1)))
        torch.nn.init.normal_(split.video_hears.weight, std=0.5)  # the video tower now hears the audio's level
        a = split(x, torch.stack([c, c], 1))
        b = split(x, torch.stack([c, c + 1], 1))
    v = 4 * 16 * 16
    assert not torch.allclose(a[..., :v], b[..., :v])


def test_clean_stream_training_needs_a_multistream_backbone():
    from cm_media.methods.consistency_training import ICT

    class OneStream(torch.nn.Module):
        def forward(self, x, c_noise, cond=None):
            return x * 0.5

    net = Preconditioned(OneStream())
    method = ICT(ICTConfig(clean_stream_p=0.5, s0=10, s1=10), net, 10)
    with pytest.raises(UserError, match="clean_stream_p needs a multi-stream backbone"):
        method.loss(net, torch.zeros(2, 1, 5), 0, torch.Generator().manual_seed(0))
    assert math.isfinite(float(ICT(ICTConfig(s0=10, s1=10), net, 10).loss(
        net, torch.zeros(2, 1, 5), 0, torch.Generator().manual_seed(0)).mean()))


class OneComplexStream(torch.nn.Module):
    """One stream of 3 complex values (re x3, im x3), as spec_unet declares for a complex STFT; f = x e^{i sigma}
    / (1 + sigma): the phase turns with sigma, so magnitudes and values differ between the two levels."""

    complex_streams = [True]

    def forward(self, x, sigma, cond=None):
        z = torch.complex(x[:, 0, :3], x[:, 0, 3:]) * torch.exp(1j * sigma[:, None]) / (1 + sigma[:, None])
        return torch.cat([z.real, z.imag], 1)[:, None]


def test_ict_magnitude_weight_adds_the_weighted_magnitude_distance_of_the_pair():
    from cm_media.methods.consistency_training import ICT

    net, x0 = OneComplexStream(), torch.randn(8, 1, 6)
    plain = ICT(ICTConfig(s0=10, s1=10), net, 10).loss(net, x0, 0, torch.Generator().manual_seed(3))
    more = ICT(ICTConfig(s0=10, s1=10, magnitude_weight=2.0), net, 10).loss(net, x0, 0, torch.Generator().manual_seed(3))
    # the same draws: sigma pair and noise come from the generator in the same order
    method, gen = ICT(ICTConfig(s0=10, s1=10), net, 10), torch.Generator().manual_seed(3)
    hi, lo = method._adjacent_sigmas(method.num_steps(0), 8, gen, True, x0.device)
    z = method._noise(x0, gen)
    a, b = net(x0 + hi[:, None, None] * z, hi), net(x0 + lo[:, None, None] * z, lo)
    mags = losses.magnitude_distance(a, b, [6], [True]) / (hi - lo)
    assert torch.allclose(more - plain, 2.0 * mags, atol=1e-5) and (mags > 0).all()
    with pytest.raises(UserError, match="method.magnitude_weight needs a backbone with a complex stream"):
        ICT(ICTConfig(magnitude_weight=1.0), torch.nn.Identity(), 10).loss(
            lambda x, s, cond=None: x, x0, 0, torch.Generator().manual_seed(3))
    with pytest.raises(UserError, match="method.magnitude_weight must be a number >= 0"):
        ICTConfig(magnitude_weight=-0.5)
