"""Consistency training from data alone: CT with an EMA target (Song et al. 2023) and iCT (Song & Dhariwal 2023)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from cm_media.errors import UserError
from cm_media.math import losses, schedules, streams
from cm_media.math.guidance import bind
from cm_media.methods.base import Method, MethodConfig


@dataclass
class ICTConfig(MethodConfig):
    """iCT: exponential curriculum s0 -> s1 (short runs on small data want s1 around 20), lognormal sigma indices."""

    s0: int | None = None  # curriculum start (default 10)
    s1: int | None = None  # curriculum end (default 1280; short runs want ~20)
    p_mean: float = -1.1
    p_std: float = 2.0
    huber_c: float | None = None  # None: 0.00054 sqrt(dim)
    # multi-stream models (sounding video): share of samples with one stream, drawn at random, held clean at
    # sigma_min, so the net learns to generate each stream from the other (math/streams.py); 0: shared sigma
    clean_stream_p: float = 0.0
    # weight of an added pseudo-Huber distance between the magnitudes of the complex values (an STFT's) of the
    # output and the target: the timbre and formants weigh apart from the phases a one-step jump cannot pin down
    magnitude_weight: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.clean_stream_p <= 1.0:
            raise UserError(f"method.clean_stream_p must be in [0, 1], got {self.clean_stream_p}")
        if not self.magnitude_weight >= 0 or self.magnitude_weight == float("inf"):
            raise UserError(f"method.magnitude_weight must be a number >= 0, got {self.magnitude_weight}")


@dataclass
class CTConfig(MethodConfig):
    """CT: square-root curriculum s0 -> s1 and a target EMA of mu0 at N = s0."""

    name: str = "ct"
    s0: int | None = None  # default 2
    s1: int | None = None  # default 150
    mu0: float = 0.95


class ICT(Method):
    """Improved consistency training (Song & Dhariwal 2023)."""

    name = "ict"
    Config = ICTConfig

    @classmethod
    def edits_given_streams(cls, cfg) -> bool:
        return cfg.clean_stream_p > 0

    def num_steps(self, step):
        c = self.cfg
        return schedules.ict_num_steps(step, self.total_steps, c.s0 or 10, c.s1 or 1280)

    def loss(self, model, x0, step, gen, cond=None):
        sigma_hi, sigma_lo = self._adjacent_sigmas(self.num_steps(step), x0.shape[0], gen, True, x0.device)
        noise = self._noise(x0, gen)
        sizes = streams.stream_sizes(model)
        if self.cfg.clean_stream_p > 0:
            sizes = self.stream_sizes_for(model, "method.clean_stream_p")
            held = self._local(streams.clean_stream_mask(self._global(x0.shape[0]), len(sizes),
                                                         self.cfg.clean_stream_p, gen))
            sigma_hi = streams.hold_streams(sigma_hi, held, self.cfg.sigma_min)  # [B, S]
            sigma_lo = streams.hold_streams(sigma_lo, held, self.cfg.sigma_min)
        extra = None
        if self.cfg.magnitude_weight > 0:
            layout, w = self.complex_layout(model, x0, "method.magnitude_weight"), self.cfg.magnitude_weight

            def extra(a, b):
                return w * losses.magnitude_distance(a, b, *layout)
        return losses.ict_loss(bind(model, cond), x0, noise, sigma_hi, sigma_lo, self.cfg.huber_c, sizes, extra)


class CT(Method):
    """Consistency training with an EMA target network (Song et al. 2023)."""

    name = "ct"
    Config = CTConfig

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        self.target = copy.deepcopy(model).requires_grad_(False)

    def num_steps(self, step):
        c = self.cfg
        return schedules.ct_num_steps(step, self.total_steps, c.s0 or 2, c.s1 or 150)

    def loss(self, model, x0, step, gen, cond=None):
        sigma_hi, sigma_lo = self._adjacent_sigmas(self.num_steps(step), x0.shape[0], gen, False, x0.device)
        self.target.train(model.training)
        return losses.ct_loss(bind(model, cond), bind(self.target, cond), x0, self._noise(x0, gen), sigma_hi, sigma_lo)

    @torch.no_grad()
    def after_step(self, model, step):
        mu = schedules.ct_target_ema(self.num_steps(step), self.cfg.s0 or 2, self.cfg.mu0)
        for t, p in zip(self.target.parameters(), model.parameters()):
            t.lerp_(p, 1 - mu)

    def state_modules(self):
        return {"target": self.target}
