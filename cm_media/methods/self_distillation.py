"""Knowledge distillation of a consistency model's own multistep sampler into one step (Luhman & Luhman 2021,
"Knowledge Distillation in Iterative Generative Models for Improved Sampling Speed", with our consistency
teacher in place of their DDIM one).

The teacher is a trained consistency model; its K-step sample with re-noise drawn from the starting noise
(`multistep_fixed_noise`) is a deterministic function g(z) of the noise z. The student, started from the teacher,
regresses its one-step sample onto it:
    L = E_z d(f_theta(sigma_max z, sigma_max), g(z)),
with the pseudo-Huber d of iCT. Where K steps are better than one (sounding video: sound and motion in sync), the
one-step model learns what the K-step sampler makes, still in one network evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cm_media.errors import UserError
from cm_media.math import losses
from cm_media.math.guidance import bind
from cm_media.math.samplers import _sig, default_step_sigmas, multistep_fixed_noise
from cm_media.methods.distillation import TeacherConfig, _FromTeacher


@dataclass
class KDConfig(TeacherConfig):
    """The teacher (a consistency run) samples in `teacher_steps` steps at `teacher_sigmas` (empty: the Karras
    grid of the sampler, as `cm-media generate --steps K`)."""

    name: str = "kd"
    teacher_steps: int = 3
    teacher_sigmas: list = field(default_factory=list)

    def __post_init__(self):
        if self.teacher_steps < 2:
            raise UserError(f"method.teacher_steps must be >= 2 (one step is the student), got {self.teacher_steps}")
        if self.teacher_sigmas and len(self.teacher_sigmas) != self.teacher_steps:
            raise UserError(f"method.teacher_sigmas lists {len(self.teacher_sigmas)} levels for "
                            f"teacher_steps {self.teacher_steps}")


class KD(_FromTeacher):
    """One-step student of its consistency teacher's deterministic K-step sampler."""

    name = "kd"
    splits_batch = True
    Config = KDConfig
    teacher_kind = "consistency"

    def teacher_sigmas(self) -> list[float]:
        c = self.cfg
        if c.teacher_sigmas:
            return [float(s) for s in c.teacher_sigmas]
        return default_step_sigmas(c.teacher_steps, c.sigma_min, c.sigma_max, c.rho)

    def loss(self, model, x0, step, gen, cond=None):
        c = self.cfg
        z = self._noise(x0, gen)  # [B, C, *axes]
        with torch.no_grad():
            target = multistep_fixed_noise(bind(self.teacher, cond), z, self.teacher_sigmas(), c.sigma_min)
        pred = bind(model, cond)(c.sigma_max * z, _sig(z, c.sigma_max))
        return losses.pseudo_huber(pred, target, self._huber(x0))
