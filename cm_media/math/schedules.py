"""Noise grids, discretization curricula and sigma samplers (float64 where the formula is a grid).

Karras et al. 2022 (EDM) for the grid and lognormal; Song et al. 2023 (CT) and Song & Dhariwal 2023 (iCT)
for the curricula; Geng et al. 2024 (ECT) for the shrinking t - r gap.
"""

from __future__ import annotations

import math

import torch


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> torch.Tensor:
    """EDM eq. 5: n sigmas from sigma_max (i = 0) down to sigma_min (i = n - 1), float64."""
    if n < 1:
        raise ValueError(f"karras_sigmas needs n >= 1, got {n}")
    if n == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    i = torch.arange(n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    sigmas = (hi + i / (n - 1) * (lo - hi)) ** rho
    sigmas[0], sigmas[-1] = sigma_max, sigma_min  # exact endpoints despite the power round trip
    return sigmas


def ct_num_steps(k: int, total_steps: int, s0: int = 2, s1: int = 150) -> int:
    """CT curriculum N(k) (Song et al. 2023, appendix C): grows from s0 + 1 to s1 + 1 as sqrt of progress."""
    frac = min(max(k, 0), total_steps) / max(total_steps, 1)
    return int(math.ceil(math.sqrt(frac * ((s1 + 1) ** 2 - s0**2) + s0**2) - 1)) + 1


def ct_target_ema(num_steps: int, s0: int = 2, mu0: float = 0.95) -> float:
    """CT target-network EMA mu(k) = exp(s0 ln(mu0) / N(k)) (Song et al. 2023)."""
    return math.exp(s0 * math.log(mu0) / num_steps)


def ict_num_steps(k: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """iCT exponential curriculum N(k) = min(s0 2^floor(k/K'), s1) + 1 (Song & Dhariwal 2023, eq. 8)."""
    k_prime = math.floor(total_steps / (math.log2(math.floor(s1 / s0)) + 1))
    k_prime = max(k_prime, 1)
    return min(s0 * 2 ** (max(k, 0) // k_prime), s1) + 1


def lognormal_index_probs(sigmas_ascending: torch.Tensor, p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """iCT discretized lognormal over the N - 1 intervals of an ascending grid (Song & Dhariwal 2023, eq. 10)."""
    log_s = torch.log(sigmas_ascending.to(torch.float64))
    cdf = torch.erf((log_s - p_mean) / (math.sqrt(2.0) * p_std))
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def sample_lognormal_indices(
    sigmas_ascending: torch.Tensor, batch: int, p_mean: float = -1.1, p_std: float = 2.0, generator=None
) -> torch.Tensor:
    """Draw interval indices i (pair sigma_i < sigma_{i+1}) with the iCT discretized-lognormal weights."""
    probs = lognormal_index_probs(sigmas_ascending, p_mean, p_std)
    return torch.multinomial(probs, batch, replacement=True, generator=generator)


def edm_sample_sigmas(batch: int, p_mean: float = -1.2, p_std: float = 1.2, generator=None) -> torch.Tensor:
    """EDM training noise levels: ln(sigma) ~ N(p_mean, p_std^2) (Karras et al. 2022, table 1)."""
    return torch.exp(p_mean + p_std * torch.randn(batch, generator=generator, dtype=torch.float64))


def ect_r(t: torch.Tensor, stage: int, q: float = 2.0, k: float = 8.0, b: float = 1.0) -> torch.Tensor:
    """ECT mapping r(t) = t (1 - q^-(stage+1) (1 + k sigmoid(-b t))), clamped at 0 (Geng et al. 2024)."""
    r = t * (1 - q ** -(stage + 1) * (1 + k * torch.sigmoid(-b * t)))
    return r.clamp(min=0.0)


def ema_warmup_decay(decay: float, step: int) -> float:
    """Model-EMA decay warmed up as min(decay, (1 + step) / (10 + step)) so early averages are not stale."""
    return min(decay, (1 + step) / (10 + step))
