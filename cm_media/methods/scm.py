"""Continuous-time consistency models with TrigFlow (Lu & Song 2024, "Simplifying, Stabilizing and Scaling
Continuous-Time Consistency Models"): sCT from data, sCD from an EDM teacher (`method.teacher`).

TrigFlow: x_t = cos(t) x0 + sin(t) z, z ~ N(0, sd^2 I), t in [0, pi/2]; the consistency function
f(x_t, t) = cos(t) x_t - sin(t) sd F(x_t / sd, t) (cm_media.math.parameterization.TrigFlow, which is the EDM
denoiser read in TrigFlow time, so an EDM teacher's weights start sCD exactly at the teacher). The continuous-time
objective trains F toward F- + g with the tangent g = cos(t) df-/dt along the PF-ODE (eq. 8):
    g = -cos^2(t) (sd F- - dx_t/dt) - r cos(t) sin(t) (x_t + sd dF-/dt),
dF-/dt from one JVP with tangent (cos t sin t dx_t/dt, cos t sin t) for (x_t, t), and the paper's stabilizers:
tangent warm-up (r from 0 to 1), tangent normalization g / (||g|| + c), the learned adaptive weight w_phi(t)
(loss e^w weight ||F - F- - g||^2 / D - w), the prior weight 1 / (sd tan t), and tan(t) = e^tau / sd with
tau ~ N(P_mean, P_std^2). dx_t/dt is cos(t) z - sin(t) x0 for sCT and the teacher's sd F_teacher for sCD.
Formulas checked against the paper (sec. 3-4, appendix) and NVIDIA FastGen's sCM (fastgen/methods/
consistency_model/sCM.py, `_scm_pred_to_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cm_media.conditions import null_like
from cm_media.errors import UserError
from cm_media.math import losses
from cm_media.math.guidance import bind, classifier_free
from cm_media.math.parameterization import append_dims
from cm_media.methods.base import Method, MethodConfig
from cm_media.methods.distillation import init_from_teacher
from cm_media.methods.jvp import finite_difference_jvp, jvp
from cm_media.nn.layers import sinusoidal_embedding


@dataclass
class SCMConfig(MethodConfig):
    """sCT (no teacher) or sCD (`teacher`: an edm run); t from tan(t) = e^tau / sd, tau ~ N(p_mean, p_std^2)."""

    name: str = "scm"
    teacher: str | None = None  # an edm run directory / checkpoint: sCD; none: sCT
    init_from_teacher: bool = True  # sCD starts from the teacher's weights (exactly the teacher's denoiser)
    p_mean: float = -1.0  # the paper's CIFAR-10 setting (ImageNet 64: -0.8, 1.6)
    p_std: float = 1.4
    tangent_warmup: int = 1000  # training steps over which r grows from 0 to 1 (the paper: 10k)
    tangent_norm: str = "l2"  # l2: g / (||g|| + c) (the paper) | rms: ||g|| / sqrt(D) | none
    tangent_c: float = 0.1
    prior_weighting: bool = True  # weight 1 / (sd tan t)
    adaptive_weighting: bool = True  # the learned w_phi(t)
    jvp: str = "autograd"  # autograd (torch.func.jvp) | finite_difference (central, float32)
    fd_eps: float = 0.0001  # finite-difference step, relative to t
    guidance_scale: float = 1.0  # sCD: the teacher's classifier-free guidance scale (1: unguided)
    # the network's time input: edm (c_noise = ln(sd tan t) / 4, an EDM teacher's, so sCD starts from its weights) or
    # smooth (the same / 1000: the backbone's sinusoids then vary slowly in t and dF/dt stays clean); auto: smooth
    # for sCT, edm for sCD. Measured, sCT on digits (tiny UNet, 300 steps): FD 4.07 / 3.30 at 1 / 2 steps with
    # smooth vs 6.02 / 5.34 with edm
    time_input: str = "auto"

    def __post_init__(self):
        if self.jvp not in ("autograd", "finite_difference"):
            raise UserError(f"unknown method.jvp {self.jvp!r} (autograd or finite_difference)")
        if self.tangent_norm not in ("l2", "rms", "none"):
            raise UserError(f"unknown method.tangent_norm {self.tangent_norm!r} (l2, rms or none)")
        if self.time_input not in ("auto", "edm", "smooth"):
            raise UserError(f"unknown method.time_input {self.time_input!r} (auto, edm or smooth)")
        if self.teacher and self.init_from_teacher and self.time_input == "smooth":
            raise UserError("method.time_input smooth cannot start from the EDM teacher's weights (its time input is "
                            "edm): set method.init_from_teacher false, or method.time_input edm")


class AdaptiveWeight(nn.Module):
    """w_phi(t): sinusoidal features of c_noise(t) = ln(sd tan t) / 4 through a small MLP whose last layer starts at
    zero (w = 0: every t weighted alike at first)."""

    def __init__(self, sigma_data: float = 0.5, features: int = 64, hidden: int = 64):
        super().__init__()
        self.sigma_data, self.features = sigma_data, features
        self.mlp = nn.Sequential(nn.Linear(features, hidden), nn.SiLU(), nn.Linear(hidden, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        c_noise = torch.log(self.sigma_data * torch.tan(t.float())) / 4
        with torch.autocast(device_type=t.device.type, enabled=False):
            return self.mlp(sinusoidal_embedding(c_noise, self.features, scale=1.0)).squeeze(-1)  # [B]


class SCM(Method):
    """sCT / sCD on the "trigflow" parameterization."""

    kind = "trigflow"
    name = "scm"
    Config = SCMConfig
    bypasses_ddp = True

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        if cfg.teacher and teacher is None:
            raise ValueError("sCD needs its teacher network")
        if teacher is not None and cfg.init_from_teacher:
            init_from_teacher(model, teacher)
        self.weighting = AdaptiveWeight(cfg.sigma_data) if cfg.adaptive_weighting else None
        self._raw: list[float] = []

    @classmethod
    def wants_teacher(cls, cfg) -> bool:
        return bool(cfg.teacher)

    @staticmethod
    def model_options(cfg) -> dict:
        smooth = cfg.time_input == "smooth" or (cfg.time_input == "auto" and not cfg.teacher)
        return {"time_scale": 1e-3 if smooth else 1.0}

    def state_modules(self):
        return {"weighting": self.weighting} if self.weighting is not None else {}

    def sample_t(self, batch: int, gen: torch.Generator) -> torch.Tensor:
        """t = arctan(e^tau / sd), tau ~ N(p_mean, p_std^2), kept inside [arctan(sigma_min/sd), arctan(sigma_max/sd)]."""
        c = self.cfg
        sigma = torch.exp(c.p_mean + c.p_std * torch.randn(self._global(batch), generator=gen, dtype=torch.float64))
        sigma = sigma.clamp(c.sigma_min, c.sigma_max)
        return self._local(torch.atan(sigma / c.sigma_data)).float()

    def warmup(self, step: int) -> float:
        return min(1.0, step / self.cfg.tangent_warmup) if self.cfg.tangent_warmup > 0 else 1.0

    def teacher_velocity(self, x_t, t, cond):
        """sCD: dx_t/dt = sd F_teacher(x_t, t), classifier-free guided at guidance_scale when the batch is conditional."""
        w = self.cfg.guidance_scale
        teacher = bind(self.teacher, cond) if w == 1 or not cond else \
            classifier_free(self.teacher, cond, null_like(self.conditions, cond), w)
        with torch.no_grad():
            return losses.denoiser_trigflow_velocity(teacher, x_t, t, self.cfg.sigma_data)

    def loss(self, model, x0, step, gen, cond=None):
        c = self.cfg
        sd = c.sigma_data
        net = self.unwrap(model)
        t = self.sample_t(x0.shape[0], gen).to(x0.device)
        x_t, dxdt = losses.trigflow_from_edm(x0, self._noise(x0, gen), t, sd)
        if self.teacher is not None:
            dxdt = self.teacher_velocity(x_t, t, cond)

        def f_fn(x_, t_):
            return net.trigflow_velocity(x_, t_, cond)

        v = torch.cos(t) * torch.sin(t)  # the tangent's scale: keeps d c_noise / dt at 1/4 for every t
        tangents = (append_dims(v, x_t.ndim) * dxdt, v)
        if c.jvp == "autograd":
            f, dfdt = jvp(f_fn, (x_t, t), tangents)
        else:
            f, dfdt = finite_difference_jvp(f_fn, (x_t, t), tangents, c.fd_eps * t / v)
        g = losses.scm_tangent(f.detach(), dfdt, x_t, dxdt, t, sd, self.warmup(step))
        self._raw.append(float(torch.nan_to_num(g).pow(2).mean().sqrt()))  # falls as the model grows consistent
        g = losses.normalize_tangent(g, c.tangent_c, c.tangent_norm)
        weight = 1 / (sd * torch.tan(t)) if c.prior_weighting else torch.ones_like(t)
        log_w = self.weighting(t) if self.weighting is not None else None
        return losses.scm_loss(f, g, weight, log_w)

    def log_values(self) -> dict:
        """The RMS of the tangent g before its normalization, averaged since the last log line."""
        raw, self._raw = self._raw, []
        return {"tangent_rms": round(sum(raw) / len(raw), 5)} if raw else {}

