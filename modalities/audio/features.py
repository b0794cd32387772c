"""Audio features for quality metrics that need no download: log-mel and MFCC statistics, spectral descriptors;
for the rendered spoken_digits and notes sets also the embedding of the shipped classifier (`learned_features`).

Every group is scaled to values of order one, because the metrics compare raw feature vectors.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .feature_net import classify, load_feature_net

N_MELS = 32
N_MFCC = 13


def analysis_sizes(sample_rate: int) -> tuple[int, int]:
    """(n_fft, hop): a window of about 32 ms rounded to a power of two, hop a quarter of it."""
    n_fft = 2 ** max(6, round(math.log2(sample_rate * 0.032)))
    return n_fft, n_fft // 4


@lru_cache(maxsize=8)
def _transforms(sample_rate: int):
    import torchaudio

    n_fft, hop = analysis_sizes(sample_rate)
    melkw = {"n_fft": n_fft, "hop_length": hop, "n_mels": N_MELS, "f_min": 0.0, "f_max": sample_rate / 2,
             "normalized": True}
    mel = torchaudio.transforms.MelSpectrogram(sample_rate, **melkw)
    mfcc = torchaudio.transforms.MFCC(sample_rate, n_mfcc=N_MFCC, log_mels=True, melkwargs=melkw)
    return mel, mfcc


def _mean_std(x: torch.Tensor) -> torch.Tensor:
    """[B, K, frames] -> [B, 2K]: per-row mean and std over time."""
    return torch.cat([x.mean(-1), x.std(-1, unbiased=False)], 1)


def spectral_descriptors(mono: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean and std over frames of centroid, bandwidth, roll-off (as shares of Nyquist), flatness, ZCR, RMS: [B, 12]."""
    import librosa

    n_fft, hop = analysis_sizes(sample_rate)
    nyq = sample_rate / 2
    spec = np.abs(librosa.stft(mono, n_fft=n_fft, hop_length=hop)) ** 2  # [B, F, frames]
    rows = [
        librosa.feature.spectral_centroid(S=spec, sr=sample_rate, n_fft=n_fft) / nyq,
        librosa.feature.spectral_bandwidth(S=spec, sr=sample_rate, n_fft=n_fft) / nyq,
        librosa.feature.spectral_rolloff(S=spec, sr=sample_rate, n_fft=n_fft) / nyq,
        librosa.feature.spectral_flatness(S=spec, power=1.0),
        librosa.feature.zero_crossing_rate(mono, frame_length=n_fft, hop_length=hop),
        librosa.feature.rms(y=mono, frame_length=n_fft, hop_length=hop) * 4,
    ]  # each [B, 1, frames]
    d = np.concatenate(rows, axis=1)  # [B, 6, frames]
    return np.concatenate([d.mean(-1), d.std(-1)], axis=1)


def features(media: torch.Tensor, cfg) -> torch.Tensor:
    """Waveforms [B, C, T] in [-1, 1] at cfg.codec.sample_rate -> features [B, D].

    D = 2*N_MELS log-mel (mean, std) + 2*N_MFCC MFCC (mean, std) + 12 spectral descriptors.
    """
    sample_rate = int(cfg.codec.sample_rate)
    mono = media.float().mean(1).cpu()  # [B, T]
    n_fft, _ = analysis_sizes(sample_rate)
    if mono.shape[-1] < n_fft:
        mono = torch.nn.functional.pad(mono, (0, n_fft - mono.shape[-1]))
    mel_t, mfcc_t = _transforms(sample_rate)
    with torch.no_grad():
        logmel = torch.log(mel_t(mono) + 1e-6) / 10  # [B, N_MELS, frames]
        mfcc = mfcc_t(mono) / 10  # [B, N_MFCC, frames]
    spectral = torch.from_numpy(spectral_descriptors(mono.numpy(), sample_rate)).float()
    return torch.cat([_mean_std(logmel), _mean_std(mfcc), spectral], 1)


def learned_features(media: torch.Tensor, cfg=None) -> torch.Tensor | None:
    """The shipped audio classifier's 96-d embedding (feature_net.py) for the rendered `spoken_digits` and `notes`
    sets, which it was trained on; None for other data or when its weights are missing."""
    if getattr(getattr(cfg, "data", None), "dataset", None) not in ("spoken_digits", "notes"):
        return None
    if load_feature_net() is None:
        return None
    return classify(media, int(cfg.codec.sample_rate))["embed"]
