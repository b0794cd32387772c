"""Sounding video files: an mp4 holding an H.264 picture and an AAC soundtrack, which browsers play.

Everything is encoded by PyAV (FFmpeg's libx264 and native AAC encoder). The picture goes through the video
modality's `VideoWriter` (H.264 yuv420p, +faststart, an odd height or width padded by one edge row/column);
the soundtrack is a second stream of the same container, interleaved frame by frame. A file appears whole or
not at all: it is written to a hidden temporary file in the same folder and renamed over the target.

Shapes: a clip's video is [C, T, H, W] in [0, 1] (C = 1 grey or 3 RGB), its audio [A, N] in [-1, 1] (A = 1 mono
or 2 stereo). `AVClipWriter` writes batches (video [B, 1, T, H, W], audio [B, 1, N]) as numbered files.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from cm_media import checks, files
from cm_media.errors import UserError
from cm_media.modality import MediaWriter
from modalities.video.io import VideoWriter, _open, _upscale, check_fps, frame_scale, to_uint8

AV_SUFFIXES = {".mp4", ".m4v", ".mov"}  # containers that hold H.264 + AAC and that browsers play (mp4, m4v)
# the sampling rates AAC (MPEG-4 audio) can signal
AAC_RATES = (7350, 8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)
AAC_BITRATE_PER_CHANNEL = 64000  # bits/s: transparent enough for 16 kHz notes (round trip correlation > 0.99)
_LAYOUTS = {1: "mono", 2: "stereo"}


def check_sample_rate(sample_rate: int) -> int:
    """An AAC sampling rate (AAC_RATES), else a UserError."""
    rate = checks.integer(sample_rate, "--sample-rate", 1, 96000)
    if rate not in AAC_RATES:
        raise UserError(f"AAC cannot store audio at {rate} Hz; use one of {', '.join(map(str, AAC_RATES))}")
    return rate


def _as_tensor(x, name: str, dims: int) -> torch.Tensor:
    t = torch.as_tensor(x).detach().float().cpu()
    if t.ndim != dims:
        raise ValueError(f"{name} must have {dims} axes, got shape {tuple(t.shape)}")
    return t


def write_av(path: str | Path, video, audio, fps: float, sample_rate: int, crf: int = 18) -> Path:
    """Write one clip as an mp4: video [C, T, H, W] in [0, 1] (C = 1 or 3) as H.264 yuv420p at `fps` (crf
    `crf`), audio [A, N] in [-1, 1] (A = 1 or 2; values beyond are clipped) as AAC at `sample_rate` Hz
    (AAC_BITRATE_PER_CHANNEL per channel), or no audio stream when `audio` is None. Atomic: a temporary file
    in the same folder, renamed over `path` once complete. Returns `path`."""
    path = Path(path)
    if path.suffix.lower() not in AV_SUFFIXES:
        raise UserError(f"cannot write {path}: video with sound is written as {', '.join(sorted(AV_SUFFIXES))}")
    fps = check_fps(fps, path.suffix.lower())
    v = _as_tensor(video, "video", 4)
    if v.shape[0] not in (1, 3) or v.shape[1] < 1:
        raise ValueError(f"video must be [C, T, H, W] with C = 1 or 3 and T >= 1, got {tuple(v.shape)}")
    a = None
    if audio is not None:
        sample_rate = check_sample_rate(sample_rate)
        a = _as_tensor(audio, "audio", 2)
        if a.shape[0] not in _LAYOUTS:
            raise ValueError(f"audio must be [A, N] with A = 1 or 2 channels, got {tuple(a.shape)}")
        a = np.ascontiguousarray(a.clamp(-1, 1).numpy().astype(np.float32))
    files.output_file(path)
    with files.writing(path):
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            _encode(tmp, v, a, fps, sample_rate, crf)
            os.replace(tmp, path)
        except (av.FFmpegError, ValueError) as exc:
            raise UserError(f"cannot write {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
        finally:
            tmp.unlink(missing_ok=True)
    return path


def _encode(path: Path, video: torch.Tensor, audio: np.ndarray | None, fps: float, sample_rate: int,
            crf: int) -> None:
    """Encode into `path` (which must not be the target: see write_av)."""
    c, t, h, w = video.shape
    writer = VideoWriter(path, fps, h, w, channels=c, crf=crf)
    try:
        stream = None
        if audio is not None:
            stream = writer.container.add_stream("aac", rate=sample_rate, layout=_LAYOUTS[audio.shape[0]])
            stream.bit_rate = AAC_BITRATE_PER_CHANNEL * audio.shape[0]
            stream.time_base = Fraction(1, sample_rate)
        sent = 0
        for k in range(t):
            writer.write(to_uint8(video[:, k]))
            if stream is not None:  # the sound up to the end of this frame, so the streams interleave
                end = audio.shape[1] if k == t - 1 else min(audio.shape[1], round((k + 1) / fps * sample_rate))
                if end > sent:
                    _encode_audio(writer.container, stream, audio[:, sent:end], sent, sample_rate)
                    sent = end
        if stream is not None:
            for packet in stream.encode(None):
                writer.container.mux(packet)
    finally:
        writer.close()


def _encode_audio(container, stream, chunk: np.ndarray, start: int, sample_rate: int) -> None:
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout=_LAYOUTS[chunk.shape[0]])
    frame.sample_rate = sample_rate
    frame.pts = start
    frame.time_base = Fraction(1, sample_rate)
    for packet in stream.encode(frame):
        container.mux(packet)


def read_av(path: str | Path) -> tuple[torch.Tensor, torch.Tensor | None, float, int]:
    """Read a sounding video: (video [1, T, H, W] grey in [0, 1] float32, audio [1, N] float32 (channels
    averaged; None when the file has no audio stream), fps, sample_rate (0 without audio)). The audio is cut to
    the length the container states, so a clip written by write_av comes back with its own length. A missing
    or unreadable file is a UserError naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"cannot read {path}: no such file")
    try:
        container = _open(path)
    except UserError as exc:
        raise UserError(str(exc).splitlines()[0]) from None
    try:
        vs = container.streams.video[0]
        ss = container.streams.audio[0] if container.streams.audio else None
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        fps = float(rate) if rate else 0.0
        frames, chunks = [], []
        for packet in container.demux([s for s in (vs, ss) if s is not None]):
            for frame in packet.decode():
                if packet.stream is vs:
                    frames.append(frame.to_ndarray(format="gray"))
                else:
                    chunks.append(_planar(frame))
        if not frames:
            raise UserError(f"cannot read {path}: no video frames decoded")
        video = torch.from_numpy(np.stack(frames)).float().div_(255.0).unsqueeze(0)  # [1, T, H, W]
        audio, sample_rate = None, 0
        if ss is not None:
            sample_rate = int(ss.rate or ss.codec_context.sample_rate or 0)
            wave = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
            if ss.duration is not None and ss.time_base is not None and sample_rate:
                wave = wave[:, : round(float(ss.duration * ss.time_base) * sample_rate)]
            audio = torch.from_numpy(wave.mean(axis=0, keepdims=True).astype(np.float32))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UserError(f"cannot read {path}: {str(exc).splitlines()[0] if str(exc) else exc!r}") from None
    finally:
        container.close()
    return video, audio, fps, sample_rate


def _planar(frame: av.AudioFrame) -> np.ndarray:
    """A decoded audio frame as float32 [channels, samples] (integer samples scaled to [-1, 1])."""
    x = frame.to_ndarray()
    if not frame.format.is_planar:  # packed: [1, samples * channels], interleaved
        x = x.reshape(-1, len(frame.layout.channels)).T
    if np.issubdtype(x.dtype, np.integer):
        info = np.iinfo(x.dtype)
        return ((x.astype(np.float32) - (info.max + info.min + 1) / 2) / ((info.max - info.min + 1) / 2))
    return x.astype(np.float32)


class AVClipWriter(MediaWriter):
    """`total` sounding clips arriving in batches, one mp4 each: `x.mp4` for one clip, `x_000.mp4 ...` for
    several (the width from `total`), or `000.mp4 ...` in a folder when `path` has no suffix (the audio
    modality's ClipWriter naming). `add(media)` takes whatever the model decodes; `split(media)` turns it into
    (video [B, C, T, H, W] in [0, 1], audio [B, A, N] in [-1, 1]). Pictures keep their size by default, so a
    written clip reads back (and edits) at the model's size; `scale` enlarges them by whole pixels (None: the
    video modality's rule, short side at least 128 pixels, crisp in a browser). Each file is written
    atomically as its batch arrives."""

    def __init__(self, path: str | Path, total: int, fps: float, sample_rate: int,
                 split: Callable[[object], tuple[torch.Tensor, torch.Tensor]], scale: int | None = 1):
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in AV_SUFFIXES | {""}:
            raise UserError(f"video with sound is written as {', '.join(sorted(AV_SUFFIXES))} files or into a "
                            f"folder, got {path}")
        self.fps = check_fps(fps, suffix or ".mp4")
        self.rate = check_sample_rate(sample_rate)
        self.scale = None if scale is None else checks.integer(scale, "--scale", 1, 4096)
        self.path, self.total, self.split = path, int(total), split
        self.index, self.paths = 0, []
        if suffix == "":
            files.output_folder(path)
        elif self.total == 1:
            files.output_file(path)
        else:
            files.output_folder(path.parent if str(path.parent) else Path("."))
        self.width = max(3, int(math.log10(self.total - 1)) + 1) if self.total > 1 else 3

    def _name(self, i: int) -> Path:
        if self.path.suffix == "":
            return self.path / f"{i:0{self.width}d}.mp4"
        if self.total == 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}_{i:0{self.width}d}{self.path.suffix}")

    def add(self, media) -> None:
        video, audio = self.split(media)
        video, audio = torch.as_tensor(video).detach().cpu(), torch.as_tensor(audio).detach().cpu()
        if video.ndim != 5 or audio.ndim != 3 or video.shape[0] != audio.shape[0]:
            raise ValueError(f"split must give video [B, C, T, H, W] and audio [B, A, N] of the same B, got "
                             f"{tuple(video.shape)} and {tuple(audio.shape)}")
        scale = frame_scale(video.shape[-2], video.shape[-1], self.scale)
        for clip, sound in zip(video, audio):
            if scale > 1:
                clip = torch.stack([_upscale(f, scale) for f in clip.unbind(1)], 1)
            self.paths.append(write_av(self._name(self.index), clip, sound, self.fps, self.rate))
            self.index += 1

    def close(self) -> list[Path]:
        return self.paths


__all__ = ["AAC_RATES", "AVClipWriter", "AV_SUFFIXES", "check_sample_rate", "read_av", "write_av"]
