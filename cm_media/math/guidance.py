"""Conditioning of the functions the samplers, solvers and losses call: f(x, sigma) with a condition bound in, and
classifier-free guidance (Ho & Salimans 2022) of a denoiser or consistency function.

Everything downstream sees plain f(x, sigma) [B, C, *axes] -> [B, C, *axes], so losses, solvers and samplers pass
a condition through untouched: it is bound here, once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cm_media.math.parameterization import append_dims

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bind(model: Callable, cond: dict | None) -> Fn:
    """f(x, sigma) = model(x, sigma, cond); the model itself when there is no condition."""
    if not cond:
        return model
    return lambda x, sigma: model(x, sigma, cond)


def _cat(a: dict, b: dict) -> dict:
    return {k: torch.cat([a[k], b[k]]) for k in a}


# inputs of at least this many elements run the two guided evaluations one after the other: one batch of 2B is
# faster for small inputs, but for a long clip (60 s of 16 kHz STFT: 2M elements) it doubled the peak memory
SEQUENTIAL_NUMEL = 1 << 20


def classifier_free(model: Callable, cond: dict, null: dict, w: float | torch.Tensor) -> Fn:
    """D_w(x, s, c) = D(x, s, null) + w (D(x, s, c) - D(x, s, null)) (Ho & Salimans 2022, eq. 6 in the
    denoiser form): w = 1 is the plain conditional model, w = 0 the unconditional one; w may be [B] (per sample).
    Both evaluations run as one batch of 2B, or one after the other for large inputs (SEQUENTIAL_NUMEL)."""

    def guided(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if x.numel() >= SEQUENTIAL_NUMEL:
            d_cond, d_null = model(x, sigma, cond), model(x, sigma, null)
        else:
            d_cond, d_null = model(torch.cat([x, x]), torch.cat([sigma, sigma]), _cat(cond, null)).split(b)
        scale = append_dims(torch.as_tensor(w, dtype=d_cond.dtype, device=d_cond.device).expand(b), d_cond.ndim)
        return d_null + scale * (d_cond - d_null)

    return guided
