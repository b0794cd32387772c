"""Does a clip hold a pitched note? pYIN (librosa) over the clip's audible frames, summarised per clip.

This is the acceptance measure for generated tones: a clip has a *stable pitch* when most of its audible
frames are voiced and their f0 stays within half a semitone of the clip's median.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FMIN, FMAX = 60.0, 1100.0  # covers the tones dataset (C3..C5) with an octave of margin below and above


@dataclass
class PitchReport:
    stable: bool
    f0: float  # median f0 of the voiced audible frames in Hz (nan when none)
    voiced: float  # share of audible frames that pYIN calls voiced
    spread: float  # median |f0 - median f0| of voiced audible frames, in semitones


def clip_pitch(wave: np.ndarray | torch.Tensor, sample_rate: int, min_voiced: float = 0.6,
               max_spread: float = 0.5, floor_db: float = -20.0, fmin: float = FMIN, fmax: float = FMAX) -> PitchReport:
    """pYIN on a mono clip [T] (channels are averaged for [C, T]); audible = frame RMS within `floor_db` of the peak;
    f0 searched in [fmin, fmax] Hz."""
    import librosa

    y = torch.as_tensor(wave, dtype=torch.float32)
    if y.ndim == 2:
        y = y.mean(0)
    y = y.numpy().astype(np.float64)
    frame = 2 ** int(np.ceil(np.log2(sample_rate * 0.064)))  # ~64 ms: two periods of the lowest pitch
    hop = frame // 4
    if y.shape[-1] < frame:
        y = np.pad(y, (0, frame - y.shape[-1]))
    f0, voiced, _ = librosa.pyin(y, fmin=fmin, fmax=min(fmax, sample_rate / 2 - 1), sr=sample_rate,
                                 frame_length=frame, hop_length=hop, center=True)
    rms = librosa.feature.rms(y=y, frame_length=frame, hop_length=hop, center=True)[0][: len(f0)]
    if rms.max() <= 1e-6:
        return PitchReport(False, float("nan"), 0.0, float("nan"))
    audible = 20 * np.log10(np.maximum(rms, 1e-12) / rms.max()) > floor_db
    ok = audible & voiced & np.isfinite(f0)
    share = float(ok.sum() / max(audible.sum(), 1))
    if ok.sum() == 0:
        return PitchReport(False, float("nan"), share, float("nan"))
    semis = 12 * np.log2(f0[ok])
    spread = float(np.median(np.abs(semis - np.median(semis))))
    return PitchReport(share >= min_voiced and spread <= max_spread, float(np.median(f0[ok])), share, spread)


def stable_pitch_share(waves: torch.Tensor, sample_rate: int) -> tuple[float, list[PitchReport]]:
    """Share of clips [N, C, T] with a stable pitch, and each clip's report."""
    reports = [clip_pitch(w, sample_rate) for w in waves]
    return sum(r.stable for r in reports) / max(len(reports), 1), reports


NOTES_FMIN, NOTES_FMAX = 50.0, 2300.0  # the notes set: MIDI 36-96 (65-2093 Hz) with margin


def semitone_error(f0: float, midi: float) -> float:
    """Signed distance of f0 (Hz) from MIDI note `midi`, in semitones (nan when f0 is nan)."""
    return 12 * float(np.log2(f0 / (440.0 * 2 ** ((midi - 69) / 12)))) if f0 > 0 else float("nan")


def pitch_accuracy(waves: torch.Tensor, sample_rate: int, midi, tolerance: float = 0.5,
                   octaves: float | None = 1.1) -> tuple[float, list[float]]:
    """Share of clips [N, C, T] whose median pYIN f0 (voiced audible frames) lies within `tolerance` semitones of
    the requested MIDI pitch midi [N], and each clip's signed error in semitones (nan: no pitch found).

    pYIN searches `octaves` either side of the requested pitch (3x faster than the whole 36-96 range; octave errors
    are still seen), or NOTES_FMIN..NOTES_FMAX with octaves=None."""
    errors = []
    for w, m in zip(waves, torch.as_tensor(midi).tolist()):
        f = 440.0 * 2 ** ((float(m) - 69) / 12)
        lo, hi = (NOTES_FMIN, NOTES_FMAX) if octaves is None else (max(f / 2 ** octaves, 32.0), f * 2 ** octaves)
        errors.append(semitone_error(clip_pitch(w, sample_rate, fmin=lo, fmax=hi).f0, float(m)))
    hits = sum(abs(e) <= tolerance for e in errors if e == e)
    return hits / max(len(errors), 1), errors


__all__ = ["PitchReport", "clip_pitch", "pitch_accuracy", "semitone_error", "stable_pitch_share"]
