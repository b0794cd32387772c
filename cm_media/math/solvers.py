"""Single steps of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma (Karras et al. 2022, alg. 1).

Used by the EDM samplers' teacher side and by consistency distillation to move x from sigma_hi to sigma_lo.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cm_media.math.parameterization import append_dims

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def ode_derivative(denoiser: Fn, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """d = (x - D(x, sigma)) / sigma, with sigma [B]."""
    return (x - denoiser(x, sigma)) / append_dims(sigma, x.ndim)


@torch.no_grad()
def euler_step(denoiser: Fn, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """x(sigma_next) ~ x + (sigma_next - sigma) d(x, sigma)."""
    return x + append_dims(sigma_next - sigma, x.ndim) * ode_derivative(denoiser, x, sigma)


@torch.no_grad()
def heun_step(denoiser: Fn, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Second-order step: Euler predictor, then the trapezoidal average of both slopes (needs sigma_next > 0)."""
    d = ode_derivative(denoiser, x, sigma)
    x_euler = x + append_dims(sigma_next - sigma, x.ndim) * d
    d_next = ode_derivative(denoiser, x_euler, sigma_next)
    return x + append_dims(sigma_next - sigma, x.ndim) * 0.5 * (d + d_next)
