"""Waveform, compressed-STFT and log-mel codecs: round trips, shapes, and generation shapes from --seconds."""

import math

import pytest
import torch

from cm_media.errors import UserError
from cm_media.runs.config import config_from_dict
from modalities.audio import MODALITY
from modalities.audio.codec import AudioCodecConfig, STFTCodec, build_codec


def speech_like(rate=16000, seconds=1.0, channels=1, seed=0):
    """A gliding harmonic voice with band-limited noise bursts and silences: [1, C, T], peak 0.9."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(rate * seconds), dtype=torch.float64) / rate
    f0 = 120 + 60 * torch.sin(2 * math.pi * 1.5 * t)
    phase = 2 * math.pi * torch.cumsum(f0, 0) / rate
    voice = sum(torch.sin(k * phase) / k for k in range(1, 20) if k * 180 < rate / 2)
    syllables = (torch.sin(2 * math.pi * 3 * t) > 0).double()
    noise = torch.fft.rfft(torch.randn(t.shape, generator=g, dtype=torch.float64))
    freqs = torch.fft.rfftfreq(t.shape[0], 1 / rate)
    noise = torch.fft.irfft(noise * ((freqs > 1500) & (freqs < 0.4 * rate)), t.shape[0])  # fricative band
    noise = noise / noise.std() * (torch.sin(2 * math.pi * 3 * t) < -0.7)
    wav = torch.stack([voice * syllables * (0.6 + 0.4 * c) + 0.3 * noise for c in range(channels)])
    return (wav / wav.abs().max() * 0.9).float()[None]


def codec(**kw):
    return build_codec(AudioCodecConfig(**kw))


def test_waveform_round_trip_is_exact():
    wav = speech_like()
    for scale in (1.0, 2.0):
        c = codec(representation="waveform", wave_scale=scale)
        x = c.encode(wav)
        assert x.shape == wav.shape and c.dims == 1 and c.channels == 1
        assert torch.equal(c.decode(x), wav)


@pytest.mark.parametrize("drop_nyquist,max_err,min_snr", [(False, 1e-4, 90), (True, 5e-3, 50)])
def test_stft_round_trip_is_near_lossless(drop_nyquist, max_err, min_snr):
    wav = speech_like(channels=2)  # 16000 samples = 125 hops
    c = codec(representation="stft", channels=2, drop_nyquist=drop_nyquist)
    x = c.encode(wav)
    assert x.shape == (1, 4, 128 + (not drop_nyquist), 126) and c.dims == 2 and c.channels == 4
    back = c.decode(x)
    assert back.shape == wav.shape
    err = back - wav
    snr = 10 * torch.log10(wav.pow(2).sum() / err.pow(2).sum())
    assert err.abs().max() < max_err
    assert snr > min_snr  # dropping the Nyquist bin only loses what sits at the band edge


def test_stft_channels_are_compressed_real_and_imaginary_parts():
    wav = speech_like(rate=8000, seconds=0.512)  # 32 hops
    c = STFTCodec(AudioCodecConfig(representation="stft", compress=0.5, spec_scale=0.3, drop_nyquist=False))
    spec = torch.stft(wav[0], 256, 128, window=torch.hann_window(256), return_complex=True)[0]  # [F, T]
    x = c.encode(wav)[0]
    assert torch.allclose(torch.complex(x[0], x[1]).abs(), 0.3 * spec.abs().sqrt(), atol=1e-4)
    assert torch.allclose(torch.atan2(x[1], x[0])[spec.abs() > 1e-2], spec.angle()[spec.abs() > 1e-2], atol=1e-3)


def test_mel_codec_runs_and_keeps_shapes():
    wav = speech_like(rate=16000, seconds=0.5)  # 8000 samples
    c = codec(representation="mel", n_fft=512, hop=128, n_mels=40, griffin_lim_iters=8)
    x = c.encode(wav)
    assert x.shape == (1, 1, 40, 8000 // 128 + 2) and c.dims == 2
    assert -1.01 <= x.min() and x.max() <= 1.5
    back = c.decode(x)
    assert back.shape[:2] == (1, 1) and back.shape[-1] >= 8000 and torch.isfinite(back).all()
    # lossy, but the loudness envelope comes back: the re-encoded mel is close to the original
    assert (c.encode(back[..., :8000]) - x).abs().mean() < 0.15


@pytest.mark.parametrize("rep,shape", [("waveform", (2, 20000)), ("stft", (4, 128, 158)), ("mel", (2, 40, 158))])
def test_sample_shape_follows_seconds(rep, shape):
    cfg = config_from_dict({"modality": "audio", "codec": {"representation": rep, "channels": 2, "sample_rate": 16000},
                            "backbone": {"preset": "tiny"}})
    c = MODALITY.build_codec(cfg)
    assert MODALITY.sample_shape(cfg, c, seconds=1.25) == shape
    assert MODALITY.sample_shape(cfg, c)[-1] == c.frames(16000)  # default: the training crop (data.seconds = 1)
    with pytest.raises(UserError, match="--seconds"):
        MODALITY.sample_shape(cfg, c, seconds=0)


def test_bad_codec_options_are_user_errors():
    with pytest.raises(UserError, match="codec.representation"):
        codec(representation="cqt")
    with pytest.raises(UserError, match="codec.hop"):
        codec(representation="stft", n_fft=256, hop=300)
    with pytest.raises(UserError, match="codec.compress"):
        codec(representation="stft", compress=0)
