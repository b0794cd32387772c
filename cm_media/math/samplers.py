"""Samplers: consistency one-step and multistep (Song et al. 2023, alg. 1) and EDM Heun/Euler (Karras et al. 2022, alg. 1).

`f` is a consistency function f(x, sigma) and `denoiser` an EDM denoiser D(x, sigma); both take sigma as [B].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from cm_media.math import streams
from cm_media.math.schedules import karras_sigmas
from cm_media.math.solvers import euler_step, heun_step

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _sig(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return torch.full((x.shape[0],), float(sigma), device=x.device, dtype=torch.float32)


@torch.no_grad()
def onestep(f: Fn, noise: torch.Tensor, sigma_max: float = 80.0) -> torch.Tensor:
    """One network evaluation: x = f(sigma_max z, sigma_max)."""
    return f(sigma_max * noise, _sig(noise, sigma_max))


@torch.no_grad()
def multistep(
    f: Fn, noise: torch.Tensor, sigmas: Sequence[float], sigma_min: float = 0.002, generator=None
) -> torch.Tensor:
    """Algorithm 1: x = f(sigma_0 z); for each next tau: x = f(x + sqrt(tau^2 - sigma_min^2) z, tau)."""
    sigmas = [float(s) for s in sigmas]
    x = f(sigmas[0] * noise, _sig(noise, sigmas[0]))
    for tau in sigmas[1:]:
        z = torch.randn(noise.shape, generator=generator, dtype=noise.dtype).to(noise.device)  # CPU generator: same draws on any device
        x = f(x + math.sqrt(max(tau**2 - sigma_min**2, 0.0)) * z, _sig(noise, tau))
    return x


@torch.no_grad()
def multistep_fixed_noise(f: Fn, noise: torch.Tensor, sigmas: Sequence[float], sigma_min: float = 0.002) -> torch.Tensor:
    """Algorithm 1 with every re-noise drawn from `noise` itself (step k: the flat noise rolled by k * 7919
    places), so the K-step sample is a deterministic function of its starting noise: the target a one-step student
    can regress onto (knowledge distillation, Luhman & Luhman 2021, needs a deterministic teacher sampler)."""
    sigmas = [float(s) for s in sigmas]
    flat = noise.flatten(1)  # [B, D]
    x = f(sigmas[0] * noise, _sig(noise, sigmas[0]))
    for k, tau in enumerate(sigmas[1:], start=1):
        z = flat.roll(k * 7919, dims=1).view_as(noise)
        x = f(x + math.sqrt(max(tau**2 - sigma_min**2, 0.0)) * z, _sig(noise, tau))
    return x


def default_step_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> list[float]:
    """Noise levels for a K-step consistency sample: a Karras grid of K + 1 points without its sigma_min end."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return karras_sigmas(steps + 1, sigma_min, sigma_max, rho)[:-1].tolist()


def _float64(denoiser: Fn) -> Fn:
    """Run a float32 denoiser inside a float64 ODE integration."""
    return lambda x, s: denoiser(x.float(), s.float()).double()


@torch.no_grad()
def edm_euler(denoiser: Fn, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Euler integration of the probability-flow ODE over a descending grid ending at 0 (N evaluations)."""
    d64, grid = _float64(denoiser), sigmas.to(torch.float64)
    x = noise.double() * grid[0]
    for s, s_next in zip(grid[:-1], grid[1:]):
        x = euler_step(d64, x, s.expand(x.shape[0]), s_next.expand(x.shape[0]))
    return x.float()


@torch.no_grad()
def edm_heun(denoiser: Fn, noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """EDM algorithm 1 (deterministic Heun): 2N - 1 evaluations over `edm_sigmas(N)`; the step to 0 is Euler."""
    d64, grid = _float64(denoiser), sigmas.to(torch.float64)
    x = noise.double() * grid[0]
    for s, s_next in zip(grid[:-1], grid[1:]):
        step = heun_step if s_next > 0 else euler_step
        x = step(d64, x, s.expand(x.shape[0]), s_next.expand(x.shape[0]))
    return x.float()


def edm_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """The EDM sampling grid: n Karras sigmas followed by sigma_N = 0 (float64)."""
    return torch.cat([karras_sigmas(n, sigma_min, sigma_max, rho), torch.zeros(1, dtype=torch.float64)])


@torch.no_grad()
def masked_multistep(
    f: Fn, known: torch.Tensor, mask: torch.Tensor, sigmas: Sequence[float], sigma_min: float = 0.002, generator=None,
    init: torch.Tensor | None = None, guidance: float = 0.0,
) -> torch.Tensor:
    """Zero-shot editing (Song et al. 2023, alg. 4 with A = identity): regenerate where mask = 1, keep `known`
    exactly where mask = 0. Inpainting, audio infilling, video interpolation and prediction are all this.

    `init`, a first guess for the masked region (e.g. a cross-fade of the kept frames), is noised to sigmas[0]
    instead of starting from zeros (SDEdit, Meng et al. 2022): with a small sigmas[0] its layout survives and
    the model only makes it look real. `guidance` > 0 adds reconstruction guidance to every step (below)."""
    mask = mask.to(known.dtype).expand_as(known)
    keep = 1 - mask

    def noise_like():
        return torch.randn(known.shape, generator=generator, dtype=known.dtype).to(known.device)

    def denoise(z, tau):  # one consistency step, then the kept region re-imposed
        x = reconstruction_guided(f, z, tau, known, keep, guidance) if guidance else f(z, _sig(z, tau))
        return keep * known + mask * x

    sigmas = [float(s) for s in sigmas]
    start = known * keep if init is None else known * keep + init * mask
    x = denoise(start + sigmas[0] * noise_like(), sigmas[0])
    for tau in sigmas[1:]:
        x = denoise(x + math.sqrt(max(tau**2 - sigma_min**2, 0.0)) * noise_like(), tau)
    return x


@torch.no_grad()
def given_streams_multistep(f: Fn, known: torch.Tensor, held: torch.Tensor, sizes: Sequence[int],
                            sigmas: Sequence[float], sigma_min: float = 0.002, generator=None,
                            noise: torch.Tensor | None = None) -> torch.Tensor:
    """Generate the streams that are not `held` ([S] bool) from the held ones of `known`, which enter clean at
    sigma_min (math/streams.py): the multistep consistency sampler (Song et al. 2023, alg. 1) on the other streams.
    Unlike masked_multistep, the first step already sees the kept streams; the net must have been trained with
    held streams (method.clean_stream_p > 0). `noise` (like known) is the first step's noise, when the caller
    draws it (method kd's edit target, a function of the student's own input noise)."""
    b = known.shape[0]
    held_b = held.to(known.device)[None].expand(b, -1)  # [B, S]
    keep = streams.per_element(held_b.to(known.dtype), known, sizes)  # 1 on the held streams' elements
    free = 1 - keep

    def noise_like():
        return torch.randn(known.shape, generator=generator, dtype=known.dtype).to(known.device)

    def denoise(z, tau):
        sigma = streams.hold_streams(_sig(z, tau), held_b, sigma_min)  # [B, S]
        return keep * known + free * f(keep * known + free * z, sigma)

    sigmas = [float(s) for s in sigmas]
    x = denoise(sigmas[0] * (noise_like() if noise is None else noise), sigmas[0])
    for tau in sigmas[1:]:
        x = denoise(x + math.sqrt(max(tau**2 - sigma_min**2, 0.0)) * noise_like(), tau)
    return x


def reconstruction_guided(f: Fn, z: torch.Tensor, sigma: float, known: torch.Tensor, keep: torch.Tensor,
                          weight: float) -> torch.Tensor:
    """Reconstruction guidance (Ho et al. 2022, Video Diffusion Models, eq. 7): x = f(z) - (w/2) grad_z ||keep *
    (known - f(z))||^2, the prediction nudged so that the model's own denoising of the kept region agrees with it.

    Replacement alone only shows the model the kept region under noise, so at high sigma it can commit the
    masked region to content that contradicts it (a different digit); the gradient carries the mismatch back.
    Samples are independent, so one backward pass of the summed errors gives every sample's gradient."""
    with torch.enable_grad():
        z = z.detach().requires_grad_(True)
        x = f(z, _sig(z, sigma))
        err = ((known - x) * keep).float().pow(2).sum()  # sum over the batch of each sample's ||.||^2
        (grad,) = torch.autograd.grad(err, z)
    return (x - 0.5 * weight * grad).detach()


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha: float) -> torch.Tensor:
    """Spherical interpolation between two Gaussian noises (keeps the norm a sample of N(0, I) would have)."""
    a, b = z0.flatten(1), z1.flatten(1)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp(min=1e-12)
    theta = torch.arccos(cos.clamp(-1, 1))
    s = torch.sin(theta).clamp(min=1e-8)
    w0 = torch.where(theta < 1e-4, 1 - alpha + 0 * s, torch.sin((1 - alpha) * theta) / s)
    w1 = torch.where(theta < 1e-4, alpha + 0 * s, torch.sin(alpha * theta) / s)
    return (w0[:, None] * a + w1[:, None] * b).reshape(z0.shape)


@torch.no_grad()
def meanflow_sample(u: Callable, noise: torch.Tensor, times: Sequence[float]) -> torch.Tensor:
    """MeanFlow sampling (Geng et al. 2025, alg. 2): z = e at times[0] (1), then z_r = z_t - (t - r) u(z_t, r, t) for
    each consecutive pair (t, r) of the descending times ending at 0; one evaluation per step. `u(z, r, t)` takes
    r and t as [B]."""
    times = [float(t) for t in times]
    if len(times) < 2 or any(a <= b for a, b in zip(times[:-1], times[1:])):
        raise ValueError(f"MeanFlow sampling needs descending times, got {times}")
    z = noise.float()
    for t, r in zip(times[:-1], times[1:]):
        u_tr = u(z, _sig(z, r), _sig(z, t)).float()
        z = z - (t - r) * u_tr
    return z


def meanflow_times(steps: int, sigmas: Sequence[float] | None = None) -> list[float]:
    """Times of a `steps`-step MeanFlow sample: uniform 1, 1 - 1/K, ..., 0; or, given K noise levels (sample.sigmas,
    in the EDM scale x = x0 + sigma z), 1 followed by t = sigma / (1 + sigma) of the later ones, then 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if sigmas is None:
        return [1.0 - i / steps for i in range(steps)] + [0.0]
    return [1.0] + [float(s) / (1.0 + float(s)) for s in list(sigmas)[1:]] + [0.0]


@torch.no_grad()
def ode_trajectory(denoiser: Fn, noise: torch.Tensor, sigmas: torch.Tensor, solver: str = "heun") -> list[torch.Tensor]:
    """The points of a probability-flow ODE solve (as `edm_heun` / `edm_euler`) at every level of the descending
    grid `sigmas` (ending at 0): [x(sigmas[0]) = sigmas[0] z, ..., x(0)] in float32, integrated in float64."""
    d64, grid = _float64(denoiser), sigmas.to(torch.float64)
    x = noise.double() * grid[0]
    points = [x.float()]
    for s, s_next in zip(grid[:-1], grid[1:]):
        step = heun_step if solver == "heun" and s_next > 0 else euler_step
        x = step(d64, x, s.expand(x.shape[0]), s_next.expand(x.shape[0]))
        points.append(x.float())
    return points
