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
               max_spread: float = 0.5, floor_db: float = -20.0) -> PitchReport:
    """pYIN on a mono clip [T] (channels are averaged for [C, T]); audible = frame RMS within `floor_db` of the peak."""
    import librosa

    y = torch.as_tensor(wave, dtype=torch.float32)
    if y.ndim == 2:
        y = y.mean(0)
    y = y.numpy().astype(np.float64)
    frame = 2 ** int(np.ceil(np.log2(sample_rate * 0.064)))  # ~64 ms: two periods of the lowest pitch
    hop = frame // 4
    if y.shape[-1] < frame:
        y = np.pad(y, (0, frame - y.shape[-1]))
    f0, voiced, _ = librosa.pyin(y, fmin=FMIN, fmax=min(FMAX, sample_rate / 2 - 1), sr=sample_rate,
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


__all__ = ["PitchReport", "clip_pitch", "stable_pitch_share"]
