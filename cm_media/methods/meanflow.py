"""MeanFlow (Geng, Deng, Bai, Kolter, He 2025, "Mean Flows for One-step Generative Modeling"), from scratch.

On the flow path z_t = (1 - t) x + t e with velocity v = e - x, the network predicts the average velocity
u(z_t, r, t) over [r, t]. Differentiating (t - r) u = int_r^t v ds in t gives the MeanFlow identity
u = v - (t - r) du/dt, du/dt = v d_z u + d_t u, so the loss regresses u_theta(z_t, r, t) onto
stopgrad(v - (t - r) du_theta/dt), with du_theta/dt one Jacobian-vector product of u_theta with tangent (v, 0, 1)
for (z, r, t). Checked against the paper (eqs. 6-11, alg. 1) and the authors' code (github.com/Gsunshine/meanflow,
meanflow.py): (t, r) from two logit-normal draws, ordered so t >= r, with r = t for a share of the batch; squared
error summed over values; adaptive weight 1 / sg(loss + c)^p; classifier-free guidance built into the target
velocity, v_g = u(z_t, t, t | null) + omega (v - u(z_t, t, t | null)) for samples that keep their condition.
One step: x = e - u(e, 0, 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cm_media.conditions import INTERVAL, Condition, null_like
from cm_media.errors import UserError
from cm_media.math import losses
from cm_media.math.parameterization import append_dims
from cm_media.methods.base import Method, MethodConfig
from cm_media.methods.jvp import finite_difference_jvp, jvp


@dataclass
class MeanFlowConfig(MethodConfig):
    """MeanFlow: (t, r) logit-normal, `flow_ratio` of the batch with r = t; adaptive weight 1 / (loss + c)^p."""

    name: str = "meanflow"
    p_mean: float = -0.4  # logit-normal of t and r (the paper's ImageNet setting and the authors' default)
    p_std: float = 1.0
    flow_ratio: float = 0.75  # share of pairs with r = t (plain flow matching); the paper's best is 75%
    adaptive_p: float = 1.0  # p of the adaptive weight (0: plain squared error)
    adaptive_c: float = 0.01  # c of the adaptive weight (the authors' code: 0.01)
    jvp: str = "autograd"  # autograd (torch.func.jvp) | finite_difference (central, float32)
    fd_eps: float = 0.0001  # finite-difference step in t (and eps * v in z)
    omega: float = 1.0  # guidance scale of the target velocity (1: unguided; needs conditions and train.cond_dropout)

    def __post_init__(self):
        if self.jvp not in ("autograd", "finite_difference"):
            raise UserError(f"unknown method.jvp {self.jvp!r} (autograd or finite_difference)")
        if not 0 <= self.flow_ratio <= 1:
            raise UserError(f"method.flow_ratio must be in [0, 1], got {self.flow_ratio}")


class MeanFlow(Method):
    """MeanFlow training: the network's `average_velocity(z, r, t)` (the "meanflow" parameterization)."""

    kind = "meanflow"
    name = "meanflow"
    Config = MeanFlowConfig
    bypasses_ddp = True

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        self._raw: list[float] = []

    @staticmethod
    def extra_conditions(cfg) -> list[Condition]:
        return [Condition(INTERVAL, kind="scalar")]  # t - r, the network's second time input

    def sample_times(self, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, r) [B] for this rank: logit-normal pairs with t >= r; the first flow_ratio of the global batch r = t."""
        c, n = self.cfg, self._global(batch)
        a, b = (torch.sigmoid(c.p_mean + c.p_std * torch.randn(n, generator=gen)) for _ in range(2))
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        r = torch.where(torch.arange(n) < int(n * c.flow_ratio), t, r)
        return self._local(t), self._local(r)

    def guided_velocity(self, model, z, t, v, cond):
        """The target velocity: v, or with omega != 1 the guided v_g = u_null + omega (v - u_null) with
        u_null = u(z, t, t | no condition), for the samples whose condition was not dropped."""
        omega = self.cfg.omega
        if omega == 1 or not cond:
            return v
        null = null_like(self.conditions, cond)
        kept = torch.zeros(z.shape[0], dtype=torch.bool, device=z.device)
        for name, value in cond.items():
            kept |= (value != null[name]).reshape(value.shape[0], -1).any(dim=1)
        with torch.no_grad():
            was_training = model.training
            model.eval()  # as the authors' code: no dropout in the guidance evaluation
            u_null = model.average_velocity(z, t, t, null).float()
            model.train(was_training)
        v_g = u_null + omega * (v - u_null)
        return torch.where(append_dims(kept, v.ndim), v_g, v)

    def loss(self, model, x0, step, gen, cond=None):
        c = self.cfg
        net = self.unwrap(model)
        t, r = (v.to(x0.device) for v in self.sample_times(x0.shape[0], gen))
        e = self._noise(x0, gen).float()
        x = x0.float()
        tb = append_dims(t, x.ndim)
        z = (1 - tb) * x + tb * e
        v = self.guided_velocity(net, z, t, e - x, cond)

        def u_fn(z_, r_, t_):
            return net.average_velocity(z_, r_, t_, cond)

        tangents = (v, torch.zeros_like(r), torch.ones_like(t))
        if c.jvp == "autograd":
            u, dudt = jvp(u_fn, (z, r, t), tangents)
        else:
            u, dudt = finite_difference_jvp(u_fn, (z, r, t), tangents, c.fd_eps)
        target = losses.meanflow_target(v, dudt, t, r)
        sq = losses.sum_flat((u - target).pow(2))  # [B]
        self._raw.append(float(sq.detach().mean()))
        return losses.adaptive_weight(sq, c.adaptive_p, c.adaptive_c) * sq

    def log_values(self) -> dict:
        """The squared error before the adaptive weight (the weighted loss sits near 1 by design)."""
        raw, self._raw = self._raw, []
        return {"raw_loss": round(sum(raw) / len(raw), 5)} if raw else {}
