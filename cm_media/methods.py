"""Training methods: each draws its noise levels for step k and returns per-sample losses.

A method owns any extra networks it needs (CT's EMA target) so the loop stays one readable function.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from . import losses, schedules
from .config import MethodConfig


class Method:
    """Base: `kind` picks the parameterization (consistency or edm) of the trained network."""

    kind = "consistency"
    name = ""

    def __init__(self, cfg: MethodConfig, model: nn.Module, total_steps: int):
        self.cfg = cfg
        self.total_steps = total_steps

    def loss(self, model: nn.Module, x0: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def num_steps(self, step: int) -> int | None:
        """Discretization N(k) at training step k, where the method has one."""
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (target-network updates)."""

    def state_modules(self) -> dict[str, nn.Module]:
        """Extra networks to checkpoint for an exact resume."""
        return {}

    def _noise(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        return torch.randn(x0.shape, generator=gen).to(x0.device)

    def _adjacent_sigmas(self, n: int, batch: int, gen, lognormal: bool, device):
        """Pairs (sigma_hi, sigma_lo) of neighbours on an ascending Karras grid of n points."""
        c = self.cfg
        grid = schedules.karras_sigmas(n, c.sigma_min, c.sigma_max, c.rho).flip(0)  # ascending
        if lognormal:
            idx = schedules.sample_lognormal_indices(grid, batch, c.p_mean, c.p_std, generator=gen)
        else:
            idx = torch.randint(0, n - 1, (batch,), generator=gen)
        return grid[idx + 1].float().to(device), grid[idx].float().to(device)


class ICT(Method):
    """Improved consistency training (Song & Dhariwal 2023)."""

    name = "ict"

    def num_steps(self, step):
        c = self.cfg
        return schedules.ict_num_steps(step, self.total_steps, c.s0 or 10, c.s1 or 1280)

    def loss(self, model, x0, step, gen):
        sigma_hi, sigma_lo = self._adjacent_sigmas(self.num_steps(step), x0.shape[0], gen, True, x0.device)
        return losses.ict_loss(model, x0, self._noise(x0, gen), sigma_hi, sigma_lo, self.cfg.huber_c)


class CT(Method):
    """Consistency training with an EMA target network (Song et al. 2023)."""

    name = "ct"

    def __init__(self, cfg, model, total_steps):
        super().__init__(cfg, model, total_steps)
        self.target = copy.deepcopy(model).requires_grad_(False)

    def num_steps(self, step):
        c = self.cfg
        return schedules.ct_num_steps(step, self.total_steps, c.s0 or 2, c.s1 or 150)

    def loss(self, model, x0, step, gen):
        sigma_hi, sigma_lo = self._adjacent_sigmas(self.num_steps(step), x0.shape[0], gen, False, x0.device)
        self.target.train(model.training)
        return losses.ct_loss(model, self.target, x0, self._noise(x0, gen), sigma_hi, sigma_lo)

    @torch.no_grad()
    def after_step(self, model, step):
        mu = schedules.ct_target_ema(self.num_steps(step), self.cfg.s0 or 2, self.cfg.mu0)
        for t, p in zip(self.target.parameters(), model.parameters()):
            t.lerp_(p, 1 - mu)

    def state_modules(self):
        return {"target": self.target}


class EDM(Method):
    """Diffusion denoising (Karras et al. 2022): the teacher and the quality reference."""

    kind = "edm"
    name = "edm"

    def loss(self, model, x0, step, gen):
        c = self.cfg
        sigma = schedules.edm_sample_sigmas(x0.shape[0], c.edm_p_mean, c.edm_p_std, generator=gen)
        return losses.edm_loss(model, x0, self._noise(x0, gen), sigma.float().to(x0.device), c.sigma_data)


METHODS: dict[str, type[Method]] = {"ict": ICT, "ct": CT, "edm": EDM}


def method_kind(name: str) -> str:
    return METHODS[name].kind


def build_method(cfg: MethodConfig, model: nn.Module, total_steps: int) -> Method:
    return METHODS[cfg.name](cfg, model, total_steps)
