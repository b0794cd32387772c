"""Audio file I/O: windowed reads, resampling, channel mixing, normalization, writing without clipping."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from cm_media.errors import UserError
from modalities.audio.io import (
    audio_info,
    fit_channels,
    normalize,
    peak_limit,
    read_window,
    resample,
    save_clips,
    write_audio,
)


def sine(freq, rate, seconds, amp=0.5):
    t = torch.arange(round(rate * seconds)) / rate
    return amp * torch.sin(2 * math.pi * freq * t)


def test_wav_pcm16_and_float_round_trip(tmp_path):
    wav = torch.stack([sine(440, 8000, 0.3), sine(660, 8000, 0.3, 0.3)])  # [2, T]
    write_audio(wav, tmp_path / "a.wav", 8000)
    write_audio(wav, tmp_path / "b.wav", 8000, "float")
    write_audio(wav, tmp_path / "c.flac", 8000)
    pcm, rate = read_window(tmp_path / "a.wav")
    flt, _ = read_window(tmp_path / "b.wav")
    flac, _ = read_window(tmp_path / "c.flac")
    assert rate == 8000 and pcm.shape == wav.shape
    assert sf.info(str(tmp_path / "a.wav")).subtype == "PCM_16"
    assert sf.info(str(tmp_path / "b.wav")).subtype == "FLOAT"
    assert (pcm - wav).abs().max() <= 1 / 32768 + 1e-7
    assert torch.equal(flt, wav)
    assert (flac - wav).abs().max() <= 1 / 32768 + 1e-7


def test_read_window_reads_only_the_window(tmp_path):
    data = np.random.default_rng(0).uniform(-0.5, 0.5, (50000, 2)).astype(np.float32)
    sf.write(str(tmp_path / "long.wav"), data, 16000, subtype="FLOAT")
    info = audio_info(tmp_path / "long.wav")
    assert (info.frames, info.sample_rate, info.channels) == (50000, 16000, 2)
    win, rate = read_window(tmp_path / "long.wav", 31000, 123)
    assert win.shape == (2, 123) and rate == 16000
    assert np.array_equal(win.numpy(), data[31000:31123].T)


def test_resample_keeps_pitch_and_duration():
    src = sine(440, 44100, 1.0)
    out = resample(src[None], 44100, 8000)[0]
    assert out.shape[-1] == 8000
    spectrum = torch.fft.rfft(out * torch.hann_window(8000)).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 Hz bins
    assert out.abs().max() == pytest.approx(0.5, abs=0.02)


def test_channel_mixing():
    left, right = torch.ones(1, 5), -torch.ones(1, 5) * 0.5
    stereo = torch.cat([left, right])
    assert torch.allclose(fit_channels(stereo, 1), torch.full((1, 5), 0.25))
    assert torch.equal(fit_channels(left, 2), torch.cat([left, left]))
    assert torch.equal(fit_channels(stereo, 2), stereo)
    assert fit_channels(torch.randn(6, 4), 2).shape == (2, 4)


def test_normalize_peak_loudness_and_silence():
    wav = sine(300, 8000, 0.5, 0.1)[None]
    assert normalize(wav, "peak", 0.9).abs().max() == pytest.approx(0.9, rel=1e-5)
    loud = normalize(wav, "loudness", 0.99, loudness_db=-20)
    assert 20 * math.log10(loud.pow(2).mean().sqrt()) == pytest.approx(-20, abs=0.01)
    assert torch.equal(normalize(torch.zeros(1, 100), "peak"), torch.zeros(1, 100))
    assert normalize(wav * 1e-4, "peak", 0.9).abs().max() < 0.1  # gain capped at 30 dB
    with pytest.raises(UserError, match="codec.normalize"):
        normalize(wav, "bogus")


def test_peak_limit_scales_instead_of_clipping(tmp_path):
    loud = torch.stack([sine(200, 8000, 0.2, 2.0)[None], sine(200, 8000, 0.2, 0.5)[None]])  # [2, 1, T]
    limited = peak_limit(loud)
    assert limited[0].abs().max() == pytest.approx(1.0) and torch.equal(limited[1], loud[1])
    (path,) = save_clips(loud[:1], tmp_path / "x.wav", 8000)
    back, _ = read_window(path)
    assert back.abs().max() < 1.0
    # the shape is kept (a clipped sine would not correlate this well with the original)
    assert torch.corrcoef(torch.stack([back[0], loud[0, 0]]))[0, 1] > 0.9999


def test_save_clips_names_and_formats(tmp_path):
    clips = torch.zeros(3, 1, 100)
    paths = save_clips(clips, tmp_path / "out.wav", 8000)
    assert [p.name for p in paths] == ["out_000.wav", "out_001.wav", "out_002.wav"]
    paths = save_clips(clips, tmp_path / "folder", 8000, length=40)
    assert [p.name for p in paths] == ["000.wav", "001.wav", "002.wav"]
    assert sf.info(str(paths[0])).frames == 40
    assert save_clips(clips[:1], tmp_path / "one.flac", 8000)[0].name == "one.flac"
    with pytest.raises(UserError, match="out.mp4"):
        save_clips(clips, tmp_path / "out.mp4", 8000)
    with pytest.raises(UserError, match="float"):
        save_clips(clips[:1], tmp_path / "f.flac", 8000, "float")


@pytest.mark.parametrize("suffix,fmt,subtype", [(".ogg", "OGG", "VORBIS"), (".mp3", "MP3", "MPEG_LAYER_III")])
def test_compressed_formats_read(tmp_path, suffix, fmt, subtype):
    if fmt not in sf.available_formats():
        pytest.skip(f"this libsndfile has no {fmt}")
    wav = sine(440, 16000, 1.0).numpy()
    sf.write(str(tmp_path / f"a{suffix}"), wav, 16000, format=fmt, subtype=subtype)
    info = audio_info(tmp_path / f"a{suffix}")
    assert info.sample_rate == 16000 and abs(info.frames - 16000) < 2000
    win, _ = read_window(tmp_path / f"a{suffix}", 4000, 4000)
    spectrum = torch.fft.rfft(win[0] * torch.hann_window(win.shape[1])).abs()
    assert abs(int(spectrum.argmax()) * 16000 / win.shape[1] - 440) < 8


def test_unreadable_file_error_names_it(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF0000WAVEjunkjunkjunk")
    with pytest.raises(UserError, match="broken.wav"):
        audio_info(bad)
    with pytest.raises(UserError, match="missing.flac"):
        read_window(tmp_path / "missing.flac")
