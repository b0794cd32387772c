"""Audio datasets of model tensors: built-in `tones` (notes synthesized in code), the rendered `spoken_digits`
and `notes` sets (spoken_digits.py, notes.py: 16 kHz, 1.0 s, cached renders) and a folder of audio files.

All keep waveforms (or file windows) and encode a batch on access, so any representation trains from them.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace

import torch

from cm_media.conditions import Condition, Labelled
from cm_media.errors import UserError

from .io import AUDIO_SUFFIXES, audio_info, fit_channels, fit_length, normalize, read_window, resample
from .notes import Notes
from .spoken_digits import SpokenDigits, default_cache

log = logging.getLogger(__name__)


@dataclass
class AudioDataConfig:
    dataset: str = "tones"  # tones | spoken_digits | notes | folder
    root: str | None = None  # folder: the folder; spoken_digits / notes: a rendered set (default: the cache)
    seconds: float = 1.0  # clip (crop) length in training
    crop: str = "random"  # folder: random (a new window each time) | fixed (consecutive windows)
    holdout: float = 0.1  # tones / folder: share kept out of training for evaluation (the last items); the rendered
    # sets keep their own held-out part: spoken_digits whole voices, notes ~10% of each (instrument, pitch)
    tones: int = 2048  # tones: number of notes made
    midi_low: int = 48  # tones: lowest MIDI note (48 = C3, 130.8 Hz)
    midi_high: int = 72  # tones: highest MIDI note (72 = C5, 523.3 Hz)
    seed: int = 0  # tones: synthesis seed; spoken_digits / notes: render seed (word onsets, the notes' split)
    small: bool = False  # spoken_digits / notes: the small test render (seconds to make; tests only)
    # labels to condition on: tones "pitch" (MIDI note numbers); spoken_digits "class" (zero..nine);
    # notes "pitch" ("36".."96") and "instrument" (family names)
    cond: list = field(default_factory=list)


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


@dataclass
class ToneParams:
    """Random parameters of n notes (cheap to draw for all); `synth_tones` renders any subset of them."""

    sample_rate: int
    seconds: float
    channels: int
    midi: torch.Tensor  # [N] MIDI numbers
    values: dict  # name -> [N] (or [N, K] phases) tensors


def tone_params(n: int, sample_rate: int, seconds: float, channels: int = 1, midi_low: int = 48,
                midi_high: int = 72, seed: int = 0) -> ToneParams:
    """Harmonic spectra with random tilt, odd/even balance and per-harmonic damping (timbre), ADSR envelopes,
    random loudness and stereo pan, drawn in a fixed order from `seed`."""
    if midi_low > midi_high:
        raise UserError(f"data.midi_low ({midi_low}) must not exceed data.midi_high ({midi_high})")
    gen = torch.Generator().manual_seed(seed)
    v = {"midi": torch.randint(midi_low, midi_high + 1, (n,), generator=gen).double()}
    v["tilt"] = _uniform(gen, n, 0.6, 2.0)  # harmonic k has amplitude k^-tilt
    v["even"] = _uniform(gen, n, 0.15, 1.0)  # even harmonics scaled by this (hollow, clarinet-like when small)
    v["damp"] = _uniform(gen, n, 0.0, 3.0)  # harmonic k decays as exp(-damp * (k - 1) * t)
    v["count"] = torch.randint(3, 13, (n,), generator=gen)
    v["onset"] = _uniform(gen, n, 0.0, 0.08) * seconds
    v["attack"] = _uniform(gen, n, 0.005, 0.06)
    v["decay"] = _uniform(gen, n, 0.05, 0.3)
    v["sustain"] = _uniform(gen, n, 0.35, 0.9)
    v["off"] = v["onset"] + _uniform(gen, n, 0.6, 0.85) * seconds
    v["release"] = _uniform(gen, n, 0.03, 0.15) * seconds
    v["loud"] = _uniform(gen, n, 0.25, 0.9)  # peak level
    v["pan"] = _uniform(gen, n, 0.2, 0.8)
    v["phase0"] = 2 * math.pi * torch.rand(n, 12, generator=gen, dtype=torch.float64)
    return ToneParams(sample_rate, seconds, channels, v["midi"].float(), v)


def synth_tones(p: ToneParams, indices: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Waveforms [len(indices), C, T] in [-1, 1] of the chosen notes (float64 synthesis, float32 out)."""
    v = {k: t[indices] for k, t in p.values.items()}
    n, sample_rate, channels = len(indices), p.sample_rate, p.channels
    length = max(1, round(p.seconds * sample_rate))
    f0 = midi_to_hz(v["midi"])
    t = torch.arange(length, dtype=torch.float64) / sample_rate  # [T]
    k = torch.arange(1, 13, dtype=torch.float64)  # [K]
    out = torch.empty(n, channels, length)
    for s in range(0, n, chunk):
        sl = slice(s, min(n, s + chunk))
        freq = f0[sl, None] * k[None]  # [n, K]
        amp = k[None] ** -v["tilt"][sl, None] * torch.where(k[None] % 2 == 0, v["even"][sl, None], torch.ones_like(freq))
        amp = amp * (k[None] <= v["count"][sl, None]) * (freq < 0.45 * sample_rate)  # no aliasing
        damping = torch.exp(-v["damp"][sl, None, None] * (k[None, :, None] - 1) * t[None, None])  # [n, K, T]
        partials = torch.sin(2 * math.pi * freq[..., None] * t[None, None] + v["phase0"][sl, :, None])
        wave = (amp[..., None] * damping * partials).sum(1)  # [n, T]
        env = [v[name][sl] for name in ("onset", "attack", "decay", "sustain", "off", "release")]
        wave = wave * adsr(t, *env)
        wave = wave / wave.abs().amax(-1, keepdim=True).clamp_min(1e-9) * v["loud"][sl, None]
        if channels == 1:
            out[sl] = wave[:, None].float()
        else:
            pan = v["pan"][sl]
            gains = torch.stack([1 - pan, pan], 1).sqrt() * math.sqrt(2)  # equal-power pan, [n, 2]
            gains = fit_channels(gains.T, channels).T  # [n, C]
            out[sl] = (gains[..., None] * wave[:, None]).clamp(-1, 1).float()
    return out


def make_tones(n: int, sample_rate: int, seconds: float, channels: int = 1, midi_low: int = 48,
               midi_high: int = 72, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n pitched notes: waveforms [N, C, T] in [-1, 1] and MIDI numbers [N] (see tone_params)."""
    p = tone_params(n, sample_rate, seconds, channels, midi_low, midi_high, seed)
    return synth_tones(p, torch.arange(n)), p.midi


def split(n: int, holdout: float, part: str) -> slice:
    """Deterministic split: the last `holdout` share is the eval part (at least one item each unless holdout is 0)."""
    if part not in ("train", "eval"):
        raise ValueError(f"split part must be 'train' or 'eval', got {part!r}")
    if n == 1:  # one item serves both parts
        return slice(0, 1)
    cut = min(max(n - round(n * holdout), 1), n - 1) if holdout > 0 else n
    return slice(0, cut) if part == "train" else slice(cut, n)


class ClipDataset(Labelled):
    """Waveforms held in memory [N, C, T]; items are encoded to model tensors on access."""

    def __init__(self, media: torch.Tensor, codec, labels: torch.Tensor | None = None):
        self.media, self.codec, self.labels = media, codec, labels

    def __len__(self):
        return self.media.shape[0]

    def __getitem__(self, i):
        return self.codec.encode(self.media[i : i + 1])[0]

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(self.media[indices])  # [B, C, *axes]


class ToneDataset(ClipDataset):
    """The notes start..stop of a tones set, synthesized on first access and kept: a benchmark that reads a few
    hundred notes of a large split pays for those only; training fills the cache batch by batch."""

    def __init__(self, params: ToneParams, start: int, stop: int, codec):
        self.params, self.start = params, start
        length = max(1, round(params.seconds * params.sample_rate))
        super().__init__(torch.empty(stop - start, params.channels, length), codec, params.midi[start:stop])
        self.ready = torch.zeros(stop - start, dtype=torch.bool)

    def _fill(self, indices: torch.Tensor) -> None:
        missing = indices[~self.ready[indices]].unique()
        if len(missing):
            self.media[missing] = synth_tones(self.params, missing + self.start)
            self.ready[missing] = True

    def __getitem__(self, i):
        self._fill(torch.tensor([int(i)]))
        return super().__getitem__(i)

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        self._fill(torch.as_tensor(indices).long())
        return super().get_batch(indices)


class RenderedDataset(ClipDataset):
    """One split of a rendered set (`SpokenDigits` or `Notes`): clips read from the cache on first access (fitted to
    the codec's channels and to data.seconds, normalized as codec.normalize says) and kept in memory."""

    def __init__(self, source, codec, codec_cfg, seconds: float):
        self.source, self.ccfg = source, codec_cfg
        length = max(1, round(seconds * codec_cfg.sample_rate))
        super().__init__(torch.empty(len(source), codec_cfg.channels, length), codec)
        self.ready = torch.zeros(len(source), dtype=torch.bool)

    def _fill(self, indices: torch.Tensor) -> None:
        missing = indices[~self.ready[indices]].unique()
        for part in missing.split(256) if len(missing) else ():
            wav = self.source.get_waveforms(part)  # [b, 1, T] at the codec's rate
            for i, w in zip(part.tolist(), wav):
                w = fit_length(fit_channels(w, self.ccfg.channels), self.media.shape[-1])
                self.media[i] = normalize(w, self.ccfg.normalize, self.ccfg.peak, self.ccfg.loudness_db)
            self.ready[part] = True

    def waveforms(self, indices) -> torch.Tensor:
        """Media [B, C, T] of the chosen clips (what the model is trained to make)."""
        indices = torch.as_tensor(indices).long()
        self._fill(indices)
        return self.media[indices]

    def __getitem__(self, i):
        self._fill(torch.tensor([int(i)]))
        return super().__getitem__(i)

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(self.waveforms(indices))


RENDERED = ("spoken_digits", "notes")


@lru_cache(maxsize=4)
def cached_rendered(name: str, codec, codec_cfg_key: tuple, root: str | None, small: bool, seed: int,
                    seconds: float, part: str) -> RenderedDataset:
    """The RenderedDataset of one split (train: the render's train part, eval: its test part), reused by later
    builds with the same arguments (a benchmark's reference and baseline rows)."""
    sample_rate, channels, norm, peak, loudness_db = codec_cfg_key
    ccfg = SimpleNamespace(sample_rate=sample_rate, channels=channels, normalize=norm, peak=peak,
                           loudness_db=loudness_db)
    split = "train" if part == "train" else "test"
    make = SpokenDigits if name == "spoken_digits" else Notes
    source = make(root, split=split, sample_rate=sample_rate, small=small, seed=seed)
    return RenderedDataset(source, codec, ccfg, seconds)


def rendered_dataset(cfg, codec, part: str):
    """spoken_digits (condition `class`: zero..nine) or notes (`pitch`: "36".."96", `instrument`: families)."""
    d, c = cfg.data, cfg.codec
    if part not in ("train", "eval"):
        raise ValueError(f"split part must be 'train' or 'eval', got {part!r}")
    root = str(Path(d.root).expanduser()) if d.root else None
    ds = cached_rendered(d.dataset, codec, (c.sample_rate, c.channels, c.normalize, c.peak, c.loudness_db), root,
                         bool(d.small), d.seed, float(d.seconds), part)
    src = ds.source
    if d.dataset == "spoken_digits":
        word = Condition("class", classes=list(src.class_names))
        return ds.use_conditions(list(d.cond), {"class": (word, src.labels)})
    pitch = Condition("pitch", classes=list(src.pitch_names))
    instrument = Condition("instrument", classes=list(src.instrument_names))
    return ds.use_conditions(list(d.cond), {"pitch": (pitch, src.pitch_index),
                                            "instrument": (instrument, src.instruments)})


def rendered_note(cfg) -> str | None:
    """For spoken_digits / notes: a note when the set is not rendered yet (reading it would render it first: a few
    minutes, and the Debian packages); else None."""
    d = cfg.data
    if d.dataset not in RENDERED:
        return None
    root = Path(d.root).expanduser() if d.root else default_cache(d.dataset, bool(d.small))
    if (root / "manifest.json").is_file():
        return None
    return (f"the {d.dataset} clips are not rendered yet ({root}); they are rendered on first use, e.g. by "
            f"`cm-media bench` or training")


class FolderDataset(Labelled):
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
def cached_tones(codec, n: int, sample_rate: int, seconds: float, channels: int, midi_low: int, midi_high: int,
                 seed: int, start: int, stop: int) -> ToneDataset:
    """The ToneDataset of notes start..stop, reused (with the notes it has rendered) by later builds (a config's
    train and eval splits)."""
    return ToneDataset(tone_params(n, sample_rate, seconds, channels, midi_low, midi_high, seed), start, stop, codec)


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
        tones = cached_tones(codec, d.tones, cfg.codec.sample_rate, d.seconds, cfg.codec.channels, d.midi_low,
                             d.midi_high, d.seed, s.start, s.stop)
        pitch = Condition("pitch", classes=[str(m) for m in range(d.midi_low, d.midi_high + 1)])
        return tones.use_conditions(list(d.cond), {"pitch": (pitch, tones.labels.long() - d.midi_low)})
    if d.dataset in RENDERED:
        return rendered_dataset(cfg, codec, part)
    if d.dataset == "folder":
        if not d.root:
            raise UserError("data.root must name a folder when data.dataset is 'folder'")
        if d.crop not in ("random", "fixed"):
            raise UserError(f"unknown data.crop {d.crop!r} (random or fixed)")
        infos = scan_folder(Path(d.root).expanduser())
        windows = folder_windows(infos, d.seconds)
        dataset = FolderDataset(infos, windows[split(len(windows), d.holdout, part)], codec, cfg.codec, d.seconds,
                                d.crop)
        return dataset.use_conditions(list(d.cond), {})
    raise UserError(f"unknown data.dataset {d.dataset!r} for audio (tones, spoken_digits, notes or folder)")
