"""Audio file reading and writing: info, windows, resampling, channel and level fitting, wav/flac output.

Media tensors are waveforms [C, T] (one clip) or [B, C, T] (a batch) in [-1, 1] at the config's sample rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from cm_media import files
from cm_media.errors import UserError
from cm_media.modality import MediaWriter

# suffixes the folder dataset looks at; soundfile (libsndfile >= 1.1) decodes all of them
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".caf", ".w64"}
# output subtypes by suffix and `--format`
WRITE_SUBTYPES = {(".wav", "pcm16"): "PCM_16", (".wav", "float"): "FLOAT", (".flac", "pcm16"): "PCM_16",
                  (".flac", "pcm24"): "PCM_24", (".wav", "pcm24"): "PCM_24"}


@dataclass
class AudioInfo:
    """What soundfile says about a file without decoding it."""

    path: Path
    frames: int
    sample_rate: int
    channels: int

    @property
    def seconds(self) -> float:
        return self.frames / self.sample_rate


def audio_info(path: Path) -> AudioInfo:
    """Frames, rate and channels of an audio file; UserError naming the file when soundfile cannot open it."""
    try:
        info = sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise UserError(f"cannot read audio file {path}: {exc}") from None
    frames = info.frames
    if frames <= 0 or frames >= 2**62:  # some mp3/ogg headers do not say: count by reading
        frames = _count_frames(path)
    return AudioInfo(Path(path), int(frames), int(info.samplerate), int(info.channels))


def _count_frames(path: Path, block: int = 1 << 16) -> int:
    try:
        with sf.SoundFile(str(path)) as f:
            return sum(len(b) for b in f.blocks(blocksize=block, always_2d=True))
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise UserError(f"cannot read audio file {path}: {exc}") from None


def read_window(path: Path, start: int = 0, frames: int = -1) -> tuple[torch.Tensor, int]:
    """Frames [start, start+frames) of a file at its own rate -> ([C, n] float32, rate); only that window is read."""
    try:
        with sf.SoundFile(str(path)) as f:
            if start:
                f.seek(start)
            data = f.read(frames, dtype="float32", always_2d=True)  # [n, C]
            rate = f.samplerate
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise UserError(f"cannot read audio file {path}: {exc}") from None
    return torch.from_numpy(np.ascontiguousarray(data.T)), rate


def resample(wav: torch.Tensor, orig_rate: int, new_rate: int) -> torch.Tensor:
    """[..., T] at orig_rate -> [..., T * new_rate / orig_rate] (torchaudio's windowed-sinc resampler)."""
    if orig_rate == new_rate:
        return wav
    return AF.resample(wav, orig_rate, new_rate)


def fit_channels(wav: torch.Tensor, channels: int) -> torch.Tensor:
    """[C_in, T] -> [channels, T]: average to mono, copy mono to every channel, or keep the first channels."""
    c = wav.shape[0]
    if c == channels:
        return wav
    if channels == 1:
        return wav.mean(0, keepdim=True)
    if c == 1:
        return wav.expand(channels, -1).clone()
    if c > channels:
        return wav[:channels]
    return torch.cat([wav, wav[-1:].expand(channels - c, -1)])


def fit_length(wav: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad the last axis to `length` samples."""
    n = wav.shape[-1]
    if n >= length:
        return wav[..., :length]
    return torch.nn.functional.pad(wav, (0, length - n))


def normalize(wav: torch.Tensor, mode: str = "peak", peak: float = 0.9, loudness_db: float = -20.0,
              max_gain_db: float = 30.0) -> torch.Tensor:
    """Scale one clip [C, T]: 'peak' to the given peak, 'loudness' to an RMS level in dBFS (then peak-limited),
    'none' unchanged. The gain never exceeds max_gain_db, so near-silent crops are not blown up into noise."""
    if mode == "none":
        return wav
    cur_peak = wav.abs().max()
    if cur_peak < 1e-8:
        return wav
    limit = min(float(peak / cur_peak), 10 ** (max_gain_db / 20))
    if mode == "peak":
        return wav * limit
    if mode == "loudness":
        rms = wav.pow(2).mean().sqrt().clamp_min(1e-8)
        return wav * min(float(10 ** (loudness_db / 20) / rms), limit)
    raise UserError(f"unknown codec.normalize {mode!r} (peak, loudness or none)")


def peak_limit(wav: torch.Tensor, limit: float = 1.0) -> torch.Tensor:
    """Scale each clip of [..., C, T] down so its peak is at most `limit`: no clipping, louder clips only get quieter."""
    peak = wav.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(limit)
    return wav * (limit / peak)


def write_audio(wav: torch.Tensor, path: Path, sample_rate: int, fmt: str = "pcm16") -> Path:
    """Write one clip [C, T] as wav or flac (by suffix); `fmt` is pcm16, pcm24 or float (wav only)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".wav", ".flac"):
        raise UserError(f"audio output must end in .wav or .flac, got {path.name}")
    subtype = WRITE_SUBTYPES.get((suffix, fmt))
    if subtype is None:
        raise UserError(f"--audio-format {fmt} is not available for {suffix} (wav: pcm16, pcm24, float; flac: pcm16, pcm24)")
    # PCM full scale is 1 - 2^-15 on the positive side: stay just under it so nothing wraps or clips
    data = peak_limit(wav.detach().float().cpu(), 1.0 - 2.0**-15).numpy().T  # [T, C]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), data, sample_rate, subtype=subtype)
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise UserError(f"cannot write audio file {path}: {str(exc).splitlines()[0]}") from None
    return path


class ClipWriter(MediaWriter):
    """`total` clips [B, C, T] arriving in batches: `x.wav` for one clip, `x_000.wav ...` for several (the width
    from `total`), or numbered files in a folder when `path` has no suffix; each batch is written as it comes.
    `length` crops each clip to that many samples; `peak` scales each clip to that peak first, `limit` scales
    down clips that would clip."""

    def __init__(self, path: Path, total: int, sample_rate: int, fmt: str = "pcm16", length: int | None = None,
                 peak: float | None = None, limit: bool = False):
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in ("", ".wav", ".flac"):
            raise UserError(f"audio output must be a .wav or .flac file or a folder, got {path}")
        if WRITE_SUBTYPES.get((suffix or ".wav", fmt)) is None:
            raise UserError(f"--audio-format {fmt} is not available for {suffix or '.wav'} "
                            "(wav: pcm16, pcm24, float; flac: pcm16, pcm24)")
        self.path, self.total, self.rate, self.fmt, self.length = path, total, sample_rate, fmt, length
        self.peak, self.limit = peak, limit
        self.index, self.paths = 0, []
        if suffix == "":
            files.output_folder(path)
        elif total == 1:
            files.output_file(path)
        else:
            files.output_folder(path.parent if str(path.parent) else Path("."))
        self.width = max(3, int(math.log10(total - 1)) + 1) if total > 1 else 3

    def _name(self, i: int) -> Path:
        if self.path.suffix == "":
            return self.path / f"{i:03d}.wav"
        if self.total == 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}_{i:0{self.width}d}{self.path.suffix}")

    def add(self, media):
        if self.peak is not None:
            media = media / media.abs().amax(dim=(-2, -1), keepdim=True).clamp_min(1e-9) * self.peak
        if self.limit:
            media = peak_limit(media)
        if self.length is not None:
            media = media[..., : self.length]
        for clip in media:
            self.paths.append(write_audio(clip, self._name(self.index), self.rate, self.fmt))
            self.index += 1

    def close(self):
        return self.paths


def save_clips(media: torch.Tensor, path: Path, sample_rate: int, fmt: str = "pcm16",
               length: int | None = None) -> list[Path]:
    """Write [B, C, T] clips: `x.wav` for one clip, `x_000.wav ...` for several, or numbered files in a folder
    when `path` has no suffix. `length` crops each clip to that many samples."""
    with ClipWriter(path, media.shape[0], sample_rate, fmt, length) as writer:
        writer.add(media)
        return writer.close()
