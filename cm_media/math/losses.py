"""Training losses, each returning one value per sample ([B]); the caller reduces.

EDM denoising (Karras et al. 2022), CT and CD (Song et al. 2023), iCT (Song & Dhariwal 2023),
ECT (Geng et al. 2024). All consistency objectives share `consistency_loss`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from cm_media.math.parameterization import append_dims, edm_loss_weight, mean_flat
from cm_media.math.solvers import heun_step

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pseudo_huber_c(numel_per_sample: int) -> float:
    """iCT pseudo-Huber constant c = 0.00054 sqrt(d) for d values per sample."""
    return 0.00054 * math.sqrt(numel_per_sample)


def pseudo_huber(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """iCT distance d(x, y) = sqrt(||x - y||^2 + c^2) - c per sample; c = 0 gives the L2 norm."""
    sq = (x.float() - y.float()).pow(2).reshape(x.shape[0], -1).sum(dim=1)
    return torch.sqrt(sq + c * c) - c


def squared_l2(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per sample (the CT paper's l2 metric, scale-free in the data size)."""
    return mean_flat((x.float() - y.float()).pow(2))


def paired_forward(online: Fn, target: Fn, x_hi, sigma_hi, x_lo, sigma_lo):
    """Evaluate target (no grad) and online with the same RNG state, so both see one dropout mask (iCT)."""
    devices = [torch.cuda.current_device()] if x_hi.is_cuda else []
    with torch.random.fork_rng(devices=devices):
        with torch.no_grad():
            y_lo = target(x_lo, sigma_lo)
    y_hi = online(x_hi, sigma_hi)
    return y_hi, y_lo.detach()


def consistency_loss(
    online: Fn, target: Fn, x_hi, sigma_hi, x_lo, sigma_lo, distance: Callable, weight: torch.Tensor
) -> torch.Tensor:
    """weight * d(f_online(x_hi, sigma_hi), stopgrad f_target(x_lo, sigma_lo)): the shared CT/iCT/CD objective."""
    y_hi, y_lo = paired_forward(online, target, x_hi, sigma_hi, x_lo, sigma_lo)
    return weight * distance(y_hi, y_lo)


def ct_loss(online: Fn, target_ema: Fn, x0, noise, sigma_hi, sigma_lo) -> torch.Tensor:
    """CT (Song et al. 2023, alg. 3): same noise at adjacent sigmas, EMA target, squared l2, unit weight."""
    x_hi = x0 + append_dims(sigma_hi, x0.ndim) * noise
    x_lo = x0 + append_dims(sigma_lo, x0.ndim) * noise
    return consistency_loss(online, target_ema, x_hi, sigma_hi, x_lo, sigma_lo, squared_l2, torch.ones_like(sigma_hi))


def ict_loss(model: Fn, x0, noise, sigma_hi, sigma_lo, c: float | None = None) -> torch.Tensor:
    """iCT: target = stop-grad of the online net, pseudo-Huber distance, weight 1 / (sigma_hi - sigma_lo)."""
    if c is None:
        c = pseudo_huber_c(x0[0].numel())
    x_hi = x0 + append_dims(sigma_hi, x0.ndim) * noise
    x_lo = x0 + append_dims(sigma_lo, x0.ndim) * noise
    weight = 1.0 / (sigma_hi - sigma_lo)
    return consistency_loss(model, model, x_hi, sigma_hi, x_lo, sigma_lo, lambda a, b: pseudo_huber(a, b, c), weight)


def edm_loss(denoiser: Fn, x0, noise, sigma, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM denoising loss lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2 (mean over values) per sample."""
    x_noisy = x0 + append_dims(sigma, x0.ndim) * noise
    return edm_loss_weight(sigma, sigma_data) * squared_l2(denoiser(x_noisy, sigma), x0)


def cd_loss(model: Fn, target: Fn, teacher: Fn, x0, noise, sigma_hi, sigma_lo, distance: Callable) -> torch.Tensor:
    """CD (Song et al. 2023, alg. 2): x_lo is one Heun step of the frozen teacher from x_hi = x0 + sigma_hi z."""
    x_hi = x0 + append_dims(sigma_hi, x0.ndim) * noise
    x_lo = heun_step(teacher, x_hi, sigma_hi, sigma_lo).to(x0.dtype)
    return consistency_loss(model, target, x_hi, sigma_hi, x_lo, sigma_lo, distance, torch.ones_like(sigma_hi))


def ect_loss(model: Fn, x0, noise, t, r, sigma_min: float, c: float, weight: torch.Tensor) -> torch.Tensor:
    """ECT (Geng et al. 2024): d(f(x_t, t), stopgrad f(x_r, r)) with shared noise; r below sigma_min means
    r = 0, where x_r = x0 and f(x0, sigma_min) = x0 exactly, so the target is the clean data (plain denoising)."""
    r = torch.where(r < sigma_min, torch.zeros_like(r), r)
    x_t = x0 + append_dims(t, x0.ndim) * noise
    x_r = x0 + append_dims(r, x0.ndim) * noise
    return consistency_loss(model, model, x_t, t, x_r, r.clamp(min=sigma_min), lambda a, b: pseudo_huber(a, b, c), weight)
