"""Consistency mid-training (Hu, Lai, Mitsufuji, Ermon 2025, "CMT: Mid-Training for Efficient Learning of
Consistency, Mean Flow, and Flow Map Models"), then ECT post-training, from an EDM teacher.

Mid-training (the first `mid_steps` iterations): solve the teacher's PF-ODE from prior noise x_T = sigma_max z on
an N-level grid and regress the consistency function at every visited point onto the trajectory's end,
    L = E_i E_{x_T} d(f_theta(x_{t_i}, t_i), x_{t_0}),
with no JVP and no target network; the paper's d is LPIPS (images only), ours the pseudo-Huber distance of iCT /
ECT, so it works in every modality. As the authors' code (github.com/sony/cmt, training/loss.py DPMSolverLoss),
a batch of B points comes from B / N trajectories with all N of their points, and the student starts from the
teacher's weights. Post-training: ECT (Geng et al. 2024) from the mid-trained weights, with the gap t - r already
small (`post_stage`), as the authors' CMT + ECT recipe uses a fixed small gap throughout.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cm_media.errors import UserError
from cm_media.math import losses
from cm_media.math.guidance import bind
from cm_media.math.samplers import edm_sigmas, ode_trajectory
from cm_media.methods.distillation import ECT, ECTConfig


@dataclass
class CMTConfig(ECTConfig):
    """CMT: `mid_steps` iterations of trajectory regression (teacher solves of `solver_steps` levels), then ECT
    starting at stage `post_stage` (gap t - r ~ t 2^-(stage+1) (1 + 8 sigmoid(-t)))."""

    name: str = "cmt"
    mid_steps: int = 1000
    solver_steps: int = 16  # N: Karras levels of each teacher trajectory (the paper: 16-step DPM-Solver++)
    solver: str = "heun"  # heun (2N - 1 evaluations per trajectory) | euler (N)
    post_stage: int = 4

    def __post_init__(self):
        if self.solver not in ("heun", "euler"):
            raise UserError(f"unknown method.solver {self.solver!r} (heun or euler)")
        if self.solver_steps < 1:
            raise UserError(f"method.solver_steps must be >= 1, got {self.solver_steps}")


class CMT(ECT):
    """Mid-training on teacher trajectories, then ECT (a "consistency" network, like ECT's)."""

    name = "cmt"
    Config = CMTConfig

    def stage(self, step: int) -> int:
        return self.cfg.post_stage + max(step - self.cfg.mid_steps, 0) // max(self.cfg.stage_steps, 1)

    def trajectories(self, x0: torch.Tensor, gen: torch.Generator, cond: dict | None):
        """(points [n N, ...], sigmas [n N], ends [n N, ...], cond of the points) for this rank's n = B // N
        trajectories (at least one). Trajectory j takes the condition of local sample j N, so N processes draw the
        same trajectories as one (when each rank's batch is a multiple of N)."""
        c = self.cfg
        n_levels = c.solver_steps
        n = max(x0.shape[0] // n_levels, 1)
        noise = self._local(torch.randn((n * self.world, *x0.shape[1:]), generator=gen)).to(x0.device)
        rows = torch.arange(n, device=x0.device) * n_levels % x0.shape[0]
        traj_cond = {k: v[rows] for k, v in cond.items()} if cond else None
        grid = edm_sigmas(n_levels, c.sigma_min, c.sigma_max, c.rho)  # N levels, then 0
        path = ode_trajectory(bind(self.teacher, traj_cond), noise, grid, c.solver)  # N + 1 points
        points = torch.cat(path[:-1])  # [N n, ...], level-major
        sigmas = grid[:-1].float().repeat_interleave(n).to(x0.device)
        ends = path[-1].repeat(n_levels, *([1] * (x0.ndim - 1)))
        point_cond = {k: v.repeat(n_levels, *([1] * (v.ndim - 1))) for k, v in traj_cond.items()} if traj_cond else None
        return points, sigmas, ends, point_cond

    def loss(self, model, x0, step, gen, cond=None):
        if step >= self.cfg.mid_steps:
            return super().loss(model, x0, step, gen, cond)
        points, sigmas, ends, point_cond = self.trajectories(x0, gen, cond)
        pred = bind(model, point_cond)(points.to(x0.dtype), sigmas)
        return losses.pseudo_huber(pred, ends, self._huber(x0))

