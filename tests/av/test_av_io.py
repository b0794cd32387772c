"""Sounding video files (modalities/av/io.py): H.264 + AAC mp4 round trips, streams, atomic writes, the batch
writer's names, and one-line errors for bad files."""

import math

import av
import numpy as np
import pytest
import torch

from cm_media.errors import UserError
from modalities.av import io as avio

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

FPS, SR, T, N = 8.0, 16000, 16, 32000


def clip(channels: int = 1, size: int = 64) -> torch.Tensor:
    """A smooth moving picture [C, T, H, W] in [0, 1]: a gradient and a bright square walking across."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    frames = []
    for t in range(T):
        f = 0.2 + 0.3 * (yy + xx) / 2
        f[10:26, 4 + 2 * t: 20 + 2 * t] = 0.95
        frames.append(f)
    video = torch.stack(frames)[None].repeat(channels, 1, 1, 1)
    if channels == 3:
        video = video * torch.tensor([1.0, 0.7, 0.4]).view(3, 1, 1, 1) + 0.02 * torch.rand(1, generator=g)
    return video.clamp(0, 1)


def sound(channels: int = 1) -> torch.Tensor:
    """Two decaying notes [A, N] in [-1, 1]."""
    t = torch.arange(N) / SR
    wave = 0.5 * torch.sin(2 * math.pi * 330 * t) * torch.exp(-((t - 0.2).clamp(min=0)) / 0.3) * (t > 0.2)
    wave = wave + 0.4 * torch.sin(2 * math.pi * 523 * t) * torch.exp(-((t - 1.1).clamp(min=0)) / 0.2) * (t > 1.1)
    return torch.stack([wave, 0.8 * wave][:channels])


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / ((a - b) ** 2).mean().item())


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.numpy(), b.numpy())[0, 1])


def test_round_trip_grey_mono(tmp_path):
    video, audio = clip(), sound()
    path = avio.write_av(tmp_path / "x.mp4", video, audio, FPS, SR)
    assert path == tmp_path / "x.mp4"
    v, a, fps, rate = avio.read_av(path)
    assert v.shape == (1, T, 64, 64) and v.dtype == torch.float32 and fps == FPS and rate == SR
    assert abs(a.shape[1] - N) <= 1024  # within one AAC frame (write_av's files come back exactly)
    assert psnr(v, video) > 30
    n = min(N, a.shape[1])
    assert corr(a[0, :n], audio[0, :n]) > 0.99
    with av.open(str(path)) as c:
        assert [s.codec_context.name for s in c.streams] == ["h264", "aac"]
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
        assert c.streams.audio[0].codec_context.channels == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]  # no temporary file left


def test_round_trip_rgb_stereo_odd_size_and_silent(tmp_path):
    video, audio = clip(3)[:, :, :63, :61], sound(2)
    v, a, fps, rate = avio.read_av(avio.write_av(tmp_path / "c.mp4", video, audio, 12, 22050))
    assert v.shape == (1, T, 64, 62) and fps == 12 and rate == 22050  # yuv420p: one edge row/column added
    grey = video.mean(0, keepdim=True)
    assert psnr(v[..., :63, :61], grey) > 30  # colour read back as its luma, near the channels' mean
    assert corr(a[0, :20000], audio.mean(0)[:20000]) > 0.99
    with av.open(str(tmp_path / "c.mp4")) as c:
        assert c.streams.audio[0].codec_context.channels == 2
    v, a, fps, rate = avio.read_av(avio.write_av(tmp_path / "s.mp4", clip(), None, FPS, SR))
    assert a is None and rate == 0 and v.shape[1] == T


def test_write_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "x.mp4"
    target.write_bytes(b"old")

    def broken(*args):
        raise av.FFmpegError(22, "encoder exploded")

    monkeypatch.setattr(avio, "_encode", broken)
    with pytest.raises(UserError, match="x.mp4"):
        avio.write_av(target, clip(), sound(), FPS, SR)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.mp4"]
    monkeypatch.undo()
    avio.write_av(target, clip(), sound(), FPS, SR)
    assert avio.read_av(target)[0].shape[1] == T


def test_bad_files_and_values(tmp_path):
    for bad in (tmp_path / "missing.mp4", tmp_path):
        with pytest.raises(UserError, match=str(bad.name)) as err:
            avio.read_av(bad)
        assert "\n" not in str(err.value)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all")
    with pytest.raises(UserError, match="junk.mp4") as err:
        avio.read_av(junk)
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"\.mp4"):
        avio.write_av(tmp_path / "x.wav", clip(), sound(), FPS, SR)
    with pytest.raises(UserError, match="AAC"):
        avio.write_av(tmp_path / "x.mp4", clip(), sound(), FPS, 12345)
    with pytest.raises(UserError, match="fps"):
        avio.write_av(tmp_path / "x.mp4", clip(), sound(), 0, SR)
    with pytest.raises(ValueError):
        avio.write_av(tmp_path / "x.mp4", clip()[0], sound(), FPS, SR)
    with pytest.raises(ValueError):
        avio.write_av(tmp_path / "x.mp4", clip(), torch.zeros(3, N), FPS, SR)
    assert not (tmp_path / "x.mp4").exists()


def split(media):
    """A stand-in for the modality's split: media is (video, audio) already."""
    return media


def test_clip_writer_names_and_scale(tmp_path):
    video = clip()[None].repeat(3, 1, 1, 1, 1)[:, :, :4]  # [3, 1, 4, 64, 64]
    audio = sound()[None, :, :4000].repeat(3, 1, 1)  # [3, 1, 4000]
    with avio.AVClipWriter(tmp_path / "x.mp4", 3, FPS, SR, split=split) as writer:
        writer.add((video[:2], audio[:2]))
        writer.add((video[2:], audio[2:]))
        paths = writer.close()
    assert [p.name for p in paths] == ["x_000.mp4", "x_001.mp4", "x_002.mp4"]
    v, a, _, _ = avio.read_av(paths[2])
    assert v.shape == (1, 4, 64, 64) and a.shape == (1, 4000)  # the clip's own size and length
    assert psnr(v, video[2]) > 30 and corr(a[0], audio[2, 0]) > 0.99
    with avio.AVClipWriter(tmp_path / "one.mp4", 1, FPS, SR, split=split, scale=None) as writer:
        writer.add((video[:1], audio[:1]))
        assert [p.name for p in writer.close()] == ["one.mp4"]
    assert avio.read_av(tmp_path / "one.mp4")[0].shape[-2:] == (128, 128)  # enlarged to a 128 px short side
    with avio.AVClipWriter(tmp_path / "out", 2, FPS, SR, split=split) as writer:
        writer.add((video[:2], audio[:2]))
        assert writer.close() == [tmp_path / "out" / "000.mp4", tmp_path / "out" / "001.mp4"]
    with pytest.raises(UserError):
        avio.AVClipWriter(tmp_path / "x.gif", 2, FPS, SR, split=split)
    with pytest.raises(UserError):
        avio.AVClipWriter(tmp_path / "x.mp4", 2, FPS, 44000, split=split)
    with avio.AVClipWriter(tmp_path / "y.mp4", 2, FPS, SR, split=split) as writer, pytest.raises(ValueError):
        writer.add((video[0], audio[0]))
