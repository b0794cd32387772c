"""Methods that start from a trained EDM teacher: consistency distillation (Song et al. 2023), optionally guided
(one-step classifier-free guidance, as latent consistency models, Luo et al. 2023), and ECT (Geng et al. 2024)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

from cm_media.conditions import GUIDANCE, Condition, null_like
from cm_media.math import losses, schedules
from cm_media.math.guidance import bind, classifier_free
from cm_media.math.parameterization import edm_loss_weight
from cm_media.methods.base import Method, MethodConfig


@dataclass
class TeacherConfig(MethodConfig):
    """A teacher run (an `edm` run directory, checkpoint or export) and whether the student starts from it."""

    teacher: str | None = None
    init_from_teacher: bool = True
    huber_c: float | None = None  # pseudo-Huber c; None: 0.00054 sqrt(dim)


@dataclass
class CDConfig(TeacherConfig):
    """CD on a fixed N-point Karras grid; `cfg_scale: [w_min, w_max]` distills the teacher's classifier-free guided
    ODE with w drawn uniformly per sample, and the student takes w as an input (a guided sample in one step)."""

    name: str = "cd"
    num_scales: int = 18  # N of the Karras grid the teacher steps on
    target: str = "stopgrad"  # stopgrad (iCT-style) or ema (mu0 decay)
    distance: str = "pseudo_huber"  # pseudo_huber or l2
    mu0: float = 0.95
    cfg_scale: list = field(default_factory=list)  # [] unguided; [w_min, w_max] guided distillation


@dataclass
class ECTConfig(TeacherConfig):
    """ECT: t ~ lognormal(p_mean, p_std), the gap t - r shrinking every stage_steps iterations."""

    name: str = "ect"
    p_mean: float = -1.1
    p_std: float = 2.0
    stage_steps: int = 1000  # iterations per stage (the t - r gap halves each stage)
    ect_q: float = 2.0
    ect_k: float = 8.0
    ect_b: float = 1.0
    weighting: str = "gap"  # gap (1 / (t - r)) or edm ((t^2 + sd^2) / (t sd)^2)


def data_conditions(cond: dict | None) -> dict:
    """A batch's conditions without the student-only guidance-scale input."""
    return {k: v for k, v in (cond or {}).items() if k != GUIDANCE}


def init_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    """Copy the teacher's backbone weights into the student (the parameterizations differ, the network doesn't);
    a guided student's extra guidance-scale embedding keeps its zero initialization."""
    missing, unexpected = student.backbone.load_state_dict(teacher.backbone.state_dict(), strict=False)
    if unexpected or any(GUIDANCE not in k for k in missing):
        raise ValueError(f"teacher and student backbones differ: missing {missing}, unexpected {unexpected}")


class _FromTeacher(Method):
    """Base of CD and ECT: the frozen EDM teacher (loaded by the training loop) and the student's initialization."""

    needs_teacher = True

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        if teacher is None:
            raise ValueError(f"method {self.name} needs its teacher network")
        if cfg.init_from_teacher:
            init_from_teacher(model, teacher)

    def _huber(self, x0) -> float:
        return self.cfg.huber_c if self.cfg.huber_c is not None else losses.pseudo_huber_c(x0[0].numel())

    def guided_teacher(self, data_cond: dict, w):
        """The teacher's denoiser classifier-free guided at w (a float or [B]) for the data's conditions (no
        guidance input among them); the plain teacher when there are none."""
        if not data_cond:
            return self.teacher
        return classifier_free(self.teacher, data_cond, null_like(self.conditions, data_cond), w)


class CD(_FromTeacher):
    """Consistency distillation (Song et al. 2023, alg. 2): one teacher Heun step per pair, fixed N-point grid."""

    name = "cd"
    Config = CDConfig

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        self.target = copy.deepcopy(model).requires_grad_(False) if cfg.target == "ema" else None

    @staticmethod
    def extra_conditions(cfg) -> list[Condition]:
        return [Condition(GUIDANCE, kind="scalar")] if cfg.cfg_scale else []

    def num_steps(self, step):
        return self.cfg.num_scales

    def _distance(self, x0):
        if self.cfg.distance == "l2":
            return losses.squared_l2
        c = self._huber(x0)
        return lambda a, b: losses.pseudo_huber(a, b, c)

    def _teacher_and_student_cond(self, x0, gen, cond):
        """The teacher function of this batch and the student's conditions: with cfg_scale, the teacher's
        classifier-free guided denoiser at a per-sample w ~ U(w_min, w_max), and w handed to the student."""
        if not self.cfg.cfg_scale:
            return bind(self.teacher, cond), cond
        lo, hi = self.cfg.cfg_scale
        w = self._local(lo + (hi - lo) * torch.rand(self._global(x0.shape[0]), generator=gen)).to(x0.device)  # [B]
        data_cond = data_conditions(cond)
        return self.guided_teacher(data_cond, w), {**data_cond, GUIDANCE: w}

    def loss(self, model, x0, step, gen, cond=None):
        sigma_hi, sigma_lo = self._adjacent_sigmas(self.cfg.num_scales, x0.shape[0], gen, False, x0.device)
        teacher, student_cond = self._teacher_and_student_cond(x0, gen, cond)
        target = model if self.target is None else self.target.train(model.training)
        return losses.cd_loss(bind(model, student_cond), bind(target, student_cond), teacher, x0, self._noise(x0, gen),
                              sigma_hi, sigma_lo, self._distance(x0))

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
    Config = ECTConfig

    def stage(self, step: int) -> int:
        return step // max(self.cfg.stage_steps, 1)

    def loss(self, model, x0, step, gen, cond=None):
        c = self.cfg
        t = torch.exp(c.p_mean + c.p_std * self._local(torch.randn(self._global(x0.shape[0]), generator=gen)))
        t = t.clamp(c.sigma_min * 1.5, c.sigma_max)
        r = schedules.ect_r(t, self.stage(step), c.ect_q, c.ect_k, c.ect_b)
        r_eff = torch.where(r < c.sigma_min, torch.zeros_like(r), r)
        weight = 1 / (t - r_eff) if c.weighting == "gap" else edm_loss_weight(t, c.sigma_data)
        t, r, weight = (v.float().to(x0.device) for v in (t, r, weight))
        return losses.ect_loss(bind(model, cond), x0, self._noise(x0, gen), t, r, c.sigma_min, self._huber(x0), weight)
