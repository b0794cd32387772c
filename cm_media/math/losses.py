"""Training losses, each returning one value per sample ([B]); the caller reduces.

EDM denoising (Karras et al. 2022), CT and CD (Song et al. 2023), iCT (Song & Dhariwal 2023),
ECT (Geng et al. 2024). All consistency objectives share `consistency_loss`. The continuous-time pieces of sCM
(Lu & Song 2024) and MeanFlow (Geng et al. 2025) are the formulas below their JVPs feed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from cm_media.math.parameterization import append_dims, edm_loss_weight, mean_flat
from cm_media.math.solvers import heun_step
from cm_media.math.streams import magnitudes, per_element

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def pseudo_huber_c(numel_per_sample: int) -> float:
    """iCT pseudo-Huber constant c = 0.00054 sqrt(d) for d values per sample."""
    return 0.00054 * math.sqrt(numel_per_sample)


def pseudo_huber(x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """iCT distance d(x, y) = sqrt(||x - y||^2 + c^2) - c per sample; c = 0 gives the L2 norm."""
    sq = (x.float() - y.float()).pow(2).reshape(x.shape[0], -1).sum(dim=1)
    return torch.sqrt(sq + c * c) - c


def magnitude_distance(x: torch.Tensor, y: torch.Tensor, sizes: list[int], kinds: list[bool]) -> torch.Tensor:
    """Pseudo-Huber distance [B] of the magnitudes of the complex streams (`kinds` True; each laid out as real parts,
    then imaginary) of x and y, c of iCT for their count: what a regression whose phases the network cannot quite
    predict would otherwise shrink (a quiet, dull STFT)."""
    parts = zip(x.flatten(1).split(sizes, 1), y.flatten(1).split(sizes, 1), kinds)
    mags = [(magnitudes(a), magnitudes(b)) for a, b, k in parts if k]
    a, b = torch.cat([m[0] for m in mags], 1), torch.cat([m[1] for m in mags], 1)  # [B, n]
    return pseudo_huber(a, b, pseudo_huber_c(a.shape[1]))


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


def ict_loss(model: Fn, x0, noise, sigma_hi, sigma_lo, c: float | None = None, sizes=None,
             extra: Callable | None = None) -> torch.Tensor:
    """iCT: target = stop-grad of the online net, pseudo-Huber distance, weight 1 / (sigma_hi - sigma_lo).

    sigma_hi, sigma_lo [B], or [B, S] per stream (`sizes`, math/streams.py): a stream held at sigma_min in both
    passes through unchanged, and the weight is that of the pair the other streams step along. `extra(a, b)` [B]
    is added to the distance (e.g. `magnitude_distance`, weighted)."""
    if c is None:
        c = pseudo_huber_c(x0[0].numel())
    x_hi = x0 + per_element(sigma_hi, x0, sizes) * noise
    x_lo = x0 + per_element(sigma_lo, x0, sizes) * noise
    gap = sigma_hi - sigma_lo
    weight = 1.0 / (gap if gap.ndim == 1 else gap.amax(1))

    def distance(a, b):
        return pseudo_huber(a, b, c) + (extra(a, b) if extra is not None else 0.0)

    return consistency_loss(model, model, x_hi, sigma_hi, x_lo, sigma_lo, distance, weight)


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


def meanflow_target(v: torch.Tensor, dudt: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """MeanFlow identity (Geng et al. 2025, eq. 6): u_tgt = v - (t - r) du/dt, with du/dt = v d_z u + d_t u the total
    derivative along the flow (the JVP of u with tangent (v, 0, 1) for (z, r, t)); t - r clipped to [0, 1] as in
    the authors' code. Returned without a graph (the target is stop-gradient)."""
    gap = append_dims((t - r).clamp(0.0, 1.0), v.ndim)
    return (v.float() - gap * dudt.float()).detach()


def adaptive_weight(sq_error: torch.Tensor, p: float = 1.0, c: float = 0.01) -> torch.Tensor:
    """MeanFlow adaptive loss weight w = 1 / (||delta||^2 + c)^p, stop-gradient (p = 0: plain L2, p = 0.5: a
    pseudo-Huber-like loss, p = 1: the paper's default)."""
    return 1.0 / (sq_error.detach().float() + c) ** p


def sum_flat(x: torch.Tensor) -> torch.Tensor:
    """Sum over every axis but the batch axis: [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def trigflow_from_edm(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sigma_data: float = 0.5):
    """TrigFlow point and its ground-truth velocity: x_t = cos(t) x0 + sin(t) sd z, dx_t/dt = cos(t) sd z - sin(t) x0
    (Lu & Song 2024, eq. 2; sCT's tangent)."""
    c, s = append_dims(torch.cos(t), x0.ndim), append_dims(torch.sin(t), x0.ndim)
    z = sigma_data * noise.float()
    return c * x0.float() + s * z, c * z - s * x0.float()


def denoiser_trigflow_velocity(denoiser: Fn, x_t: torch.Tensor, t: torch.Tensor, sigma_data: float = 0.5):
    """The PF-ODE velocity dx_t/dt = sd F of an EDM denoiser D in TrigFlow time: F = (cos(t) x_t - D(x_t / cos t,
    sd tan t)) / (sd sin t) (sCD's teacher tangent; D may be a classifier-free guided denoiser)."""
    c, s = torch.cos(t), torch.sin(t)
    d = denoiser(x_t / append_dims(c, x_t.ndim), sigma_data * torch.tan(t)).float()
    return (append_dims(c, x_t.ndim) * x_t - d) / append_dims(s, x_t.ndim)


def scm_tangent(f_minus: torch.Tensor, dfdt_scaled: torch.Tensor, x_t: torch.Tensor, dxdt: torch.Tensor,
                t: torch.Tensor, sigma_data: float = 0.5, warmup: float = 1.0) -> torch.Tensor:
    """sCM tangent (Lu & Song 2024, eq. 8 and sec. 4.2): g = -cos^2(t) (sd F- - dx_t/dt)
    - r cos(t) sin(t) (x_t + sd dF-/dt), where `dfdt_scaled` = cos(t) sin(t) dF-/dt (the JVP with tangent
    (cos t sin t dx_t/dt, cos t sin t)) and r in [0, 1] is the tangent warm-up. Equals cos(t) df-/dt at r = 1."""
    c, s = append_dims(torch.cos(t), x_t.ndim), append_dims(torch.sin(t), x_t.ndim)
    g1 = -(c * c) * (sigma_data * f_minus.float() - dxdt.float())
    g2 = -(c * s * x_t.float() + sigma_data * dfdt_scaled.float())
    return (g1 + warmup * g2).detach()


def normalize_tangent(g: torch.Tensor, c: float = 0.1, mode: str = "l2") -> torch.Tensor:
    """sCM tangent normalization g / (||g|| + c) ("l2", the paper's); "rms" divides by ||g|| / sqrt(D) + c instead
    (the same for any data size); "none" leaves g as is."""
    if mode == "none":
        return g
    norm = g.float().reshape(g.shape[0], -1).norm(dim=1)
    if mode == "rms":
        norm = norm / math.sqrt(g[0].numel())
    return g / append_dims(norm + c, g.ndim)


def scm_loss(f: torch.Tensor, g: torch.Tensor, weight: torch.Tensor, log_w: torch.Tensor | None = None):
    """sCM objective per sample: e^{w(t)} weight(t) ||F - stopgrad(F) - g||^2 / D - w(t) (Lu & Song 2024, eq. 9):
    its gradient in F is -2 e^w weight g / D; w(t) is the learned adaptive weight (None: plain weighted loss).
    Samples whose tangent alone is not finite (a JVP overflow) are masked: loss 0, no gradient. A non-finite
    prediction F stays non-finite, so the training loop skips the step rather than train on NaN gradients."""
    finite = torch.isfinite(g.reshape(g.shape[0], -1)).all(dim=1)
    keep = finite | ~torch.isfinite(f.detach().reshape(f.shape[0], -1)).all(dim=1)
    g = torch.where(append_dims(finite, g.ndim), g, torch.zeros_like(g))
    mse = mean_flat((f.float() - f.detach().float() - g).pow(2))
    loss = weight * mse if log_w is None else torch.exp(log_w) * weight * mse - log_w
    return torch.where(keep, loss, torch.zeros_like(loss))
