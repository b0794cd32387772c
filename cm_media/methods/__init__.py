"""Training methods: each draws its noise levels for step k and returns per-sample losses.

A method owns any extra networks it needs (CT's EMA target) so the loop stays one readable function.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from cm_media.math import losses, schedules
from cm_media.runs.config import MethodConfig
from cm_media.math.parameterization import edm_loss_weight


class Method:
    """Base: `kind` picks the parameterization (consistency or edm) of the trained network."""

    kind = "consistency"
    name = ""
    # data-parallel shard: every rank draws the global batch's randomness and keeps its own slice,
    # so N processes reproduce one process with the same global batch
    rank, world = 0, 1

    def __init__(self, cfg: MethodConfig, model: nn.Module, total_steps: int, run_cfg=None, device=None):
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

    def _local(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a tensor drawn for the global batch."""
        b = t.shape[0] // self.world
        return t[self.rank * b: (self.rank + 1) * b]

    def _global(self, batch: int) -> int:
        return batch * self.world

    def _noise(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn((self._global(x0.shape[0]), *x0.shape[1:]), generator=gen)
        return self._local(z).to(x0.device)

    def _adjacent_sigmas(self, n: int, batch: int, gen, lognormal: bool, device):
        """Pairs (sigma_hi, sigma_lo) of neighbours on an ascending Karras grid of n points."""
        c = self.cfg
        grid = schedules.karras_sigmas(n, c.sigma_min, c.sigma_max, c.rho).flip(0)  # ascending
        if lognormal:
            idx = schedules.sample_lognormal_indices(grid, self._global(batch), c.p_mean, c.p_std, generator=gen)
        else:
            idx = torch.randint(0, n - 1, (self._global(batch),), generator=gen)
        idx = self._local(idx)
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

    def __init__(self, cfg, model, total_steps, run_cfg=None, device=None):
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
        sigma = self._local(schedules.edm_sample_sigmas(self._global(x0.shape[0]), c.edm_p_mean, c.edm_p_std, generator=gen))
        return losses.edm_loss(model, x0, self._noise(x0, gen), sigma.float().to(x0.device), c.sigma_data)


class _FromTeacher(Method):
    """Base of CD and ECT: loads the frozen EDM teacher and (by default) starts from its weights."""

    def __init__(self, cfg, model, total_steps, run_cfg=None, device=None):
        from cm_media.runs.teacher import init_from_teacher, load_teacher  # noqa: PLC0415

        super().__init__(cfg, model, total_steps)
        self.teacher, _ = load_teacher(run_cfg, device or torch.device("cpu"))
        if cfg.init_from_teacher:
            init_from_teacher(model, self.teacher)

    def _distance(self, x0):
        if self.cfg.distance == "l2":
            return losses.squared_l2
        c = self.cfg.huber_c if self.cfg.huber_c is not None else losses.pseudo_huber_c(x0[0].numel())
        return lambda a, b: losses.pseudo_huber(a, b, c)


class CD(_FromTeacher):
    """Consistency distillation (Song et al. 2023): one teacher Heun step per pair, fixed N-point grid."""

    name = "cd"

    def __init__(self, cfg, model, total_steps, run_cfg=None, device=None):
        super().__init__(cfg, model, total_steps, run_cfg, device)
        self.target = copy.deepcopy(model).requires_grad_(False) if cfg.target == "ema" else None

    def num_steps(self, step):
        return self.cfg.num_scales

    def loss(self, model, x0, step, gen):
        sigma_hi, sigma_lo = self._adjacent_sigmas(self.cfg.num_scales, x0.shape[0], gen, False, x0.device)
        target = model if self.target is None else self.target.train(model.training)
        return losses.cd_loss(model, target, self.teacher, x0, self._noise(x0, gen), sigma_hi, sigma_lo, self._distance(x0))

    @torch.no_grad()
    def after_step(self, model, step):
        if self.target is not None:
            for t, p in zip(self.target.parameters(), model.parameters()):
                t.lerp_(p, 1 - self.cfg.mu0)

    def state_modules(self):
        return {"target": self.target} if self.target is not None else {}


class ECT(_FromTeacher):
    """Easy consistency tuning (Geng et al. 2024): the gap t - r shrinks stage by stage from diffusion to CM."""

    name = "ect"

    def stage(self, step: int) -> int:
        return step // max(self.cfg.stage_steps, 1)

    def loss(self, model, x0, step, gen):
        c = self.cfg
        t = torch.exp(c.p_mean + c.p_std * self._local(torch.randn(self._global(x0.shape[0]), generator=gen)))
        t = t.clamp(c.sigma_min * 1.5, c.sigma_max)
        r = schedules.ect_r(t, self.stage(step), c.ect_q, c.ect_k, c.ect_b)
        r_eff = torch.where(r < c.sigma_min, torch.zeros_like(r), r)
        weight = 1 / (t - r_eff) if c.weighting == "gap" else edm_loss_weight(t, c.sigma_data)
        huber = c.huber_c if c.huber_c is not None else losses.pseudo_huber_c(x0[0].numel())
        t, r, weight = (v.float().to(x0.device) for v in (t, r, weight))
        return losses.ect_loss(model, x0, self._noise(x0, gen), t, r, c.sigma_min, huber, weight)


METHODS: dict[str, type[Method]] = {"ict": ICT, "ct": CT, "edm": EDM, "cd": CD, "ect": ECT}


def method_kind(name: str) -> str:
    return METHODS[name].kind


def build_method(cfg: MethodConfig, model: nn.Module, total_steps: int, run_cfg=None, device=None) -> Method:
    return METHODS[cfg.name](cfg, model, total_steps, run_cfg, device)
