"""Reconstruction losses and quality measures for learned codecs; each returns one value per sample [B].

`x` is the reconstruction and `y` the target, both [B, ...]; audio functions take [B, L] or [B, C, L] (channels
are averaged per sample).
"""

from __future__ import annotations

import torch


def _flat(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0], -1).float()  # [B, N]


def l1(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per sample [B]."""
    return (_flat(x) - _flat(y)).abs().mean(1)


def l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample [B]."""
    return (_flat(x) - _flat(y)).square().mean(1)


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, eps: float = 1e-10) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per sample [B]: 10 log10(range^2 / MSE) (MSE floored at eps)."""
    return 10 * torch.log10(data_range ** 2 / l2(x, y).clamp_min(eps))


def _wave(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """[B, L] or [B, C, L] -> ([B * C, L], C)."""
    if x.dim() == 2:
        return x.float(), 1
    if x.dim() == 3:
        return x.reshape(-1, x.shape[-1]).float(), x.shape[1]
    raise ValueError(f"audio must be [B, L] or [B, C, L], got {tuple(x.shape)}")


def magnitude(x: torch.Tensor, n_fft: int, hop: int | None = None, eps: float = 1e-7) -> torch.Tensor:
    """|STFT| [N, n_fft // 2 + 1, frames] of waveforms [N, L] (Hann window of n_fft, hop n_fft // 4)."""
    window = torch.hann_window(n_fft, device=x.device, dtype=x.dtype)
    spec = torch.stft(x, n_fft, hop or n_fft // 4, window=window, center=True, return_complex=True)
    return (spec.real.square() + spec.imag.square()).clamp_min(eps ** 2).sqrt()


def stft_loss(x: torch.Tensor, y: torch.Tensor, n_fft: int, hop: int | None = None) -> torch.Tensor:
    """Spectral convergence || |Y| - |X| ||_F / || |Y| ||_F plus mean |log |Y| - log |X||, per sample [B]."""
    (xs, c), (ys, _) = _wave(x), _wave(y)
    mx, my = magnitude(xs, n_fft, hop), magnitude(ys, n_fft, hop)  # [B * C, F, frames]
    sc = (my - mx).flatten(1).norm(dim=1) / my.flatten(1).norm(dim=1).clamp_min(1e-7)
    mag = (my.log() - mx.log()).abs().flatten(1).mean(1)
    return (sc + mag).view(-1, c).mean(1)


def multi_resolution_stft_loss(x: torch.Tensor, y: torch.Tensor, fft_sizes=(512, 1024, 2048)) -> torch.Tensor:
    """Mean of `stft_loss` over FFT sizes (hop a quarter of each; Yamamoto et al. 2020), per sample [B].

    FFT sizes longer than the clip are skipped (reflect padding needs n_fft // 2 < L), down to the smallest."""
    length = x.shape[-1]
    sizes = [n for n in fft_sizes if n // 2 < length] or [min(fft_sizes)]
    if min(sizes) // 2 >= length:
        raise ValueError(f"clips of {length} samples are too short for FFT sizes {list(fft_sizes)}")
    return torch.stack([stft_loss(x, y, n) for n in sizes]).mean(0)


def log_spectral_distance(x: torch.Tensor, y: torch.Tensor, n_fft: int = 512, hop: int | None = None,
                          eps: float = 1e-10) -> torch.Tensor:
    """LSD (Kuleshov et al. 2017) per sample [B]: mean over frames of the RMS over frequencies of
    log10 |Y|^2 - log10 |X|^2 (power floored at eps)."""
    (xs, c), (ys, _) = _wave(x), _wave(y)
    px = magnitude(xs, n_fft, hop, eps=0.0).square().clamp_min(eps).log10()  # [B * C, F, frames]
    py = magnitude(ys, n_fft, hop, eps=0.0).square().clamp_min(eps).log10()
    lsd = (py - px).square().mean(1).sqrt().mean(1)  # RMS over frequency, mean over frames
    return lsd.view(-1, c).mean(1)
