"""Sounding video: the data's wall hits and notes, the flat codec, the joint network's cross-stream exchange,
edit masks and config checks."""

import numpy as np
import pytest
import torch

from cm_media.errors import UserError
from modalities.av.codec import AVCodecConfig, build_codec, layout_of, pack_media, split_media, split_model
from modalities.av.joint_net import JointNet, JointNetConfig
from modalities.av.sounding_digits import DIGIT_MIDI, SAMPLE_RATE, midi_hz, mix_notes, pluck, wall_hits

pytestmark = pytest.mark.usefixtures("one_thread")


def test_wall_hits_are_the_exact_crossing_times():
    # y from 10 at 3.6 px/frame reaches the wall at 36 at t = 26 / 3.6; x from 30 at -5 reaches 0 at t = 6 and
    # then -36 (the far wall, unfolded) at t = 13.2; nothing after the last frame (15) counts
    hits = wall_hits(np.array([10.0, 30.0]), np.array([3.6, -5.0]), 36.0, 15.0)
    np.testing.assert_allclose(hits, sorted([6.0, 26 / 3.6, 13.2]), atol=1e-9)
    assert len(wall_hits(np.array([0.0, 18.0]), np.array([0.0, 1.0]), 36.0, 15.0)) == 0  # still on y, x never arrives


def test_notes_start_at_the_hits_at_the_digits_pitch():
    track = mix_notes(np.array([0.5, 1.25]), DIGIT_MIDI[7], 32000)
    nonzero = np.flatnonzero(np.abs(track) > 1e-6)
    assert nonzero[0] == 8000 + 1 or nonzero[0] == 8000  # the attack starts at 0 on the hit sample
    assert np.abs(track[:7999]).max() == 0
    assert np.abs(track[20000:20010]).max() > 0  # the second note, 1.25 s in
    note = pluck(DIGIT_MIDI[3])
    spectrum = np.abs(np.fft.rfft(note, 1 << 16))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (1 << 16)
    assert abs(12 * np.log2(peak_hz / midi_hz(DIGIT_MIDI[3]))) < 0.1  # the fundamental is the loudest partial
    assert abs(np.abs(note).max() - 0.5) < 1e-6


def test_codec_round_trip_and_layout():
    cfg = AVCodecConfig()
    codec = build_codec(cfg)
    lay = codec.layout
    assert (lay.samples, lay.bins, lay.spec_frames) == (32000, 256, 128)
    g = torch.Generator().manual_seed(0)
    video = torch.rand(2, 1, 16, 64, 64, generator=g)
    t = torch.arange(32000) / 16000
    freqs = 100 + 7000 * torch.rand(2, 8, 1, generator=g)  # band-limited: the codec drops the Nyquist bin
    audio = 0.1 * torch.sin(2 * torch.pi * freqs * t).sum(1, keepdim=True)  # [2, 1, 32000]
    x = codec.encode(pack_media(video, audio))
    assert x.shape == (2, 1, 16 * 64 * 64 + 2 * 256 * 128)
    pixels, spec = split_model(x, lay)
    assert torch.allclose(pixels, video * 2 - 1) and spec.shape == (2, 2, 256, 128)
    v2, a2 = split_media(codec.decode(x), lay)
    assert torch.allclose(v2, video, atol=1e-6)
    # exact away from the ends: the first half window (reflect padding, no Nyquist bin) and the last frame the
    # codec drops
    assert torch.allclose(a2[..., 256 : 32000 - 512], audio[..., 256 : 32000 - 512], atol=1e-4)


def test_hop_must_tile_a_video_frame():
    with pytest.raises(UserError, match="codec.hop 256 must divide the 2000 audio samples"):
        layout_of(AVCodecConfig(hop=256))


def tiny_net(exchange: bool) -> JointNet:
    cfg = JointNetConfig(frames=4, size=16, bins=16, spec_frames=16, audio_patch=[2, 2], channels=8,
                         channel_mult=[1, 2], temporal_attn_levels=[1], exchange=exchange)
    net = JointNet(cfg)
    torch.manual_seed(1)
    with torch.no_grad():  # wake the zero-initialized output convs and exchange transfers
        for p in net.parameters():
            if p.abs().max() == 0 and p.ndim > 1:
                p.normal_(0, 0.05)
    return net.eval()


@pytest.mark.parametrize("exchange", [True, False])
def test_video_output_sees_the_audio_only_through_the_exchange(exchange):
    net = tiny_net(exchange)
    numel_v = 4 * 16 * 16
    x = torch.randn(2, 1, numel_v + 2 * 16 * 16)
    y = x.clone()
    y[..., numel_v:] += torch.randn_like(y[..., numel_v:])  # a different soundtrack, same picture
    with torch.no_grad():
        out_x, out_y = net(x, torch.zeros(2)), net(y, torch.zeros(2))
    assert out_x.shape == x.shape
    video_changed = not torch.allclose(out_x[..., :numel_v], out_y[..., :numel_v], atol=1e-6)
    assert video_changed == exchange
    assert not torch.allclose(out_x[..., numel_v:], out_y[..., numel_v:])  # the audio output always does


def test_joint_net_rejects_a_deepest_audio_level_off_the_frame_grid():
    with pytest.raises(ValueError, match="not a multiple of the 4 video frames"):
        JointNet(JointNetConfig(frames=4, size=16, bins=16, spec_frames=8, audio_patch=[2, 2], channels=8,
                                channel_mult=[1, 2]))


def test_edit_masks_cover_exactly_one_stream():
    from cm_media.runs.config import load_config
    from modalities.av import MODALITY

    cfg = load_config("configs/av/sounding_digits_ict.yaml", [])
    lay = layout_of(cfg.codec)
    audio = MODALITY.edit_mask("audio", (1, 1, lay.numel), cfg)
    video = MODALITY.edit_mask("video", (1, 1, lay.numel), cfg)
    assert audio.shape == (1, 1, lay.numel)
    assert audio[..., : lay.video_numel].sum() == 0 and audio[..., lay.video_numel:].min() == 1
    assert torch.equal(audio + video, torch.ones_like(audio))
    with pytest.raises(UserError, match="--mask for sounding video is 'audio'"):
        MODALITY.edit_mask("0:4", (1, 1, lay.numel), cfg)


def test_backbone_layout_must_match_the_codec():
    from cm_media.runs.config import load_config

    with pytest.raises(UserError, match="backbone.frames is 8 but the codec makes 16"):
        load_config("configs/av/sounding_digits_ict.yaml", ["backbone.frames=8"])


def test_the_codec_layout_is_recorded_in_the_backbone_section():
    import torch

    from cm_media.runs.config import load_config
    from cm_media.runs.model import build_model

    cfg = load_config("configs/av/sounding_digits_ict.yaml", ["codec.frames=4", "codec.size=16",
                                                                "backbone.preset=tiny"])
    assert {k: cfg.backbone[k] for k in ("frames", "size", "bins", "spec_frames")} == \
        {"frames": 4, "size": 16, "bins": 256, "spec_frames": 32}
    _, codec, model = build_model(cfg)
    x = torch.randn(2, 1, codec.layout.numel)
    assert model(x, torch.full((2,), 1.0)).shape == x.shape
