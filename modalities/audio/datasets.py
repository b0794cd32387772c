"""Audio datasets of model tensors: built-in `tones` (notes synthesized in code) and a folder of audio files.

Both keep waveforms (or file windows) and encode a batch on access, so any representation trains from them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from cm_media.errors import UserError

from .codec import AUDIO_SUFFIXES, audio_info, fit_channels, fit_length, normalize, read_window, resample

log = logging.getLogger(__name__)


@dataclass
class AudioDataConfig:
    dataset: str = "tones"  # tones | folder
    root: str | None = None  # the folder, for dataset: folder
    seconds: float = 1.0  # clip (crop) length in training
    crop: str = "random"  # folder: random (a new window each time) | fixed (consecutive windows)
    holdout: float = 0.1  # share kept out of training for evaluation (the last items)
    tones: int = 2048  # tones: number of notes made
    midi_low: int = 48  # tones: lowest MIDI note (48 = C3, 130.8 Hz)
    midi_high: int = 72  # tones: highest MIDI note (72 = C5, 523.3 Hz)
    seed: int = 0  # tones: synthesis seed


def midi_to_hz(midi: torch.Tensor) -> torch.Tensor:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def adsr(t: torch.Tensor, onset, attack, decay, sustain, off, release) -> torch.Tensor:
    """Attack-decay-sustain-release envelope: [N] parameters (seconds, level) x times t [T] -> [N, T] in [0, 1]."""
    col = [p[:, None] for p in (onset, attack, decay, sustain, off, release)]
    onset, attack, decay, sustain, off, release = col
    u = t[None] - onset  # time since the note started
    rise = (u / attack).clamp(0, 1)
    fall = 1 - (1 - sustain) * ((u - attack) / decay).clamp(0, 1)
    level = torch.where(u < attack, rise, fall)
    after = ((t[None] - off) / release).clamp(0, 1)  # release from note-off
    return level * (1 - after) * (u >= 0)


def make_tones(n: int, sample_rate: int, seconds: float, channels: int = 1, midi_low: int = 48,
               midi_high: int = 72, seed: int = 0, chunk: int = 256, start: int = 0,
               stop: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n pitched notes ([N, C, T] waveforms in [-1, 1], MIDI numbers [N]): harmonic spectra with random tilt,
    odd/even balance and per-harmonic damping (timbre), ADSR envelopes, random loudness and stereo pan.

    Only notes start..stop are synthesized (the same notes as in the full set): an eval split costs its share."""
    if midi_low > midi_high:
        raise UserError(f"data.midi_low ({midi_low}) must not exceed data.midi_high ({midi_high})")
    gen = torch.Generator().manual_seed(seed)
    length = max(1, round(seconds * sample_rate))
    midi = torch.randint(midi_low, midi_high + 1, (n,), generator=gen).double()
    f0 = midi_to_hz(midi)
    tilt = _uniform(gen, n, 0.6, 2.0)  # harmonic k has amplitude k^-tilt
    even = _uniform(gen, n, 0.15, 1.0)  # even harmonics scaled by this (hollow, clarinet-like when small)
    damp = _uniform(gen, n, 0.0, 3.0)  # harmonic k decays as exp(-damp * (k - 1) * t)
    count = torch.randint(3, 13, (n,), generator=gen)
    onset = _uniform(gen, n, 0.0, 0.08) * seconds
    attack = _uniform(gen, n, 0.005, 0.06)
    decay = _uniform(gen, n, 0.05, 0.3)
    sustain = _uniform(gen, n, 0.35, 0.9)
    off = onset + _uniform(gen, n, 0.6, 0.85) * seconds
    release = _uniform(gen, n, 0.03, 0.15) * seconds
    loud = _uniform(gen, n, 0.25, 0.9)  # peak level
    pan = _uniform(gen, n, 0.2, 0.8)
    kmax = 12
    phase0 = 2 * math.pi * torch.rand(n, kmax, generator=gen, dtype=torch.float64)
    t = torch.arange(length, dtype=torch.float64) / sample_rate  # [T]
    k = torch.arange(1, kmax + 1, dtype=torch.float64)  # [K]
    stop = n if stop is None else stop
    out = torch.empty(stop - start, channels, length)
    for s in range(start, stop, chunk):
        sl = slice(s, min(stop, s + chunk))
        o = slice(sl.start - start, sl.stop - start)
        freq = f0[sl, None] * k[None]  # [n, K]
        amp = k[None] ** -tilt[sl, None] * torch.where(k[None] % 2 == 0, even[sl, None], torch.ones_like(freq))
        amp = amp * (k[None] <= count[sl, None]) * (freq < 0.45 * sample_rate)  # no aliasing
        damping = torch.exp(-damp[sl, None, None] * (k[None, :, None] - 1) * t[None, None])  # [n, K, T]
        partials = torch.sin(2 * math.pi * freq[..., None] * t[None, None] + phase0[sl, :, None])
        wave = (amp[..., None] * damping * partials).sum(1)  # [n, T]
        wave = wave * adsr(t, onset[sl], attack[sl], decay[sl], sustain[sl], off[sl], release[sl])
        wave = wave / wave.abs().amax(-1, keepdim=True).clamp_min(1e-9) * loud[sl, None]
        if channels == 1:
            out[o] = wave[:, None].float()
        else:
            gains = torch.stack([1 - pan[sl], pan[sl]], 1).sqrt() * math.sqrt(2)  # equal-power pan, [n, 2]
            gains = fit_channels(gains.T, channels).T  # [n, C]
            out[o] = (gains[..., None] * wave[:, None]).clamp(-1, 1).float()
    return out, midi[start:stop].float()


def split(n: int, holdout: float, part: str) -> slice:
    """Deterministic split: the last `holdout` share is the eval part (at least one item each unless holdout is 0)."""
    if part not in ("train", "eval"):
        raise ValueError(f"split part must be 'train' or 'eval', got {part!r}")
    if n == 1:  # one item serves both parts
        return slice(0, 1)
    cut = min(max(n - round(n * holdout), 1), n - 1) if holdout > 0 else n
    return slice(0, cut) if part == "train" else slice(cut, n)


class ClipDataset:
    """Waveforms held in memory [N, C, T]; items are encoded to model tensors on access."""

    def __init__(self, media: torch.Tensor, codec, labels: torch.Tensor | None = None):
        self.media, self.codec, self.labels = media, codec, labels

    def __len__(self):
        return self.media.shape[0]

    def __getitem__(self, i):
        return self.codec.encode(self.media[i : i + 1])[0]

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(self.media[indices])  # [B, C, *axes]


class FolderDataset:
    """Windows of the audio files in a folder, read from disk on access (never whole files).

    `random` crops pick a new start inside the window's file on every access (torch's global RNG, which the
    training loop seeds and checkpoints); `fixed` crops are consecutive windows from the start of each file.
    """

    def __init__(self, infos, windows: list[tuple[int, int]], codec, codec_cfg, seconds: float, crop: str):
        self.infos, self.windows, self.codec, self.ccfg = infos, windows, codec, codec_cfg
        self.length = max(1, round(seconds * codec_cfg.sample_rate))
        self.seconds, self.crop = seconds, crop

    def __len__(self):
        return len(self.windows)

    def clip(self, i: int) -> torch.Tensor:
        """Window i as a normalized waveform [C, T] at the codec's rate and channel count."""
        file_idx, start = self.windows[i]
        info = self.infos[file_idx]
        src_len = math.ceil(self.seconds * info.sample_rate)
        if self.crop == "random":
            start = torch.randint(0, max(1, info.frames - src_len + 1), ()).item()
        wav, rate = read_window(info.path, start, src_len)  # [C_in, n]
        wav = resample(fit_channels(wav, self.ccfg.channels), rate, self.ccfg.sample_rate)
        wav = fit_length(wav, self.length)
        return normalize(wav, self.ccfg.normalize, self.ccfg.peak, self.ccfg.loudness_db)

    def __getitem__(self, i):
        return self.codec.encode(self.clip(int(i))[None])[0]

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(torch.stack([self.clip(int(i)) for i in indices]))  # [B, C, *axes]


def scan_folder(root: Path) -> list:
    """AudioInfo of every usable audio file under `root`; unreadable or empty files are logged by name and skipped."""
    if not root.is_dir():
        raise UserError(f"data.root is not a folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    infos, skipped = [], 0
    for p in files:
        try:
            info = audio_info(p)
            if info.frames == 0:
                raise UserError(f"empty audio file {p}")
            read_window(p, 0, min(info.frames, 2048))  # catch files whose header reads but whose data does not
        except UserError as exc:
            log.warning("skipping %s", exc)
            skipped += 1
            continue
        infos.append(info)
    if not infos:
        found = f"{len(files)} audio file(s), none usable" if files else "no audio files"
        raise UserError(f"no usable audio in {root}: {found} (looked for {', '.join(sorted(AUDIO_SUFFIXES))})")
    if skipped:
        log.warning("using %d of %d audio files in %s", len(infos), len(files), root)
    return infos


def folder_windows(infos, seconds: float) -> list[tuple[int, int]]:
    """(file index, start frame) of consecutive `seconds` windows; a file shorter than one window gives one."""
    windows = []
    for i, info in enumerate(infos):
        src_len = max(1, math.ceil(seconds * info.sample_rate))
        windows += [(i, j * src_len) for j in range(max(1, info.frames // src_len))]
    return windows


@lru_cache(maxsize=2)
def cached_tones(*args) -> tuple[torch.Tensor, torch.Tensor]:
    """make_tones(*args), reusing the last syntheses (a config's train and eval splits)."""
    return make_tones(*args)


def build_dataset(cfg, codec, part: str = "train"):
    d: AudioDataConfig = cfg.data
    if d.seconds <= 0:
        raise UserError(f"data.seconds must be > 0, got {d.seconds}")
    if not 0 <= d.holdout < 1:
        raise UserError(f"data.holdout must be in [0, 1), got {d.holdout}")
    if d.dataset == "tones":
        if d.tones < 1:
            raise UserError(f"data.tones must be >= 1, got {d.tones}")
        s = split(d.tones, d.holdout, part)
        media, midi = cached_tones(d.tones, cfg.codec.sample_rate, d.seconds, cfg.codec.channels, d.midi_low,
                                   d.midi_high, d.seed, 256, s.start, s.stop)
        return ClipDataset(media, codec, midi)
    if d.dataset == "folder":
        if not d.root:
            raise UserError("data.root must name a folder when data.dataset is 'folder'")
        if d.crop not in ("random", "fixed"):
            raise UserError(f"unknown data.crop {d.crop!r} (random or fixed)")
        infos = scan_folder(Path(d.root).expanduser())
        windows = folder_windows(infos, d.seconds)
        return FolderDataset(infos, windows[split(len(windows), d.holdout, part)], codec, cfg.codec, d.seconds,
                             d.crop)
    raise UserError(f"unknown data.dataset {d.dataset!r} for audio (tones or folder)")
