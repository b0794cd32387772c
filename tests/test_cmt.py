"""Consistency mid-training: teacher trajectories, the regression onto their end points, the switch to ECT, and a
tiny run from an EDM teacher."""

import os

import pytest
import torch

from cm_media.math import losses
from cm_media.math.parameterization import append_dims
from cm_media.math.samplers import edm_euler, edm_heun, edm_sigmas, ode_trajectory
from cm_media.methods.cmt import CMT, CMTConfig
from cm_media.runs.config import load_config
from cm_media.runs.training import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def linear_teacher(a):
    return lambda x, s: a * x


@pytest.mark.parametrize("solver,reference", [("heun", edm_heun), ("euler", edm_euler)])
def test_trajectory_points_and_end_match_the_samplers(solver, reference):
    noise = torch.randn(3, 1, 5)
    grid = edm_sigmas(6)
    path = ode_trajectory(linear_teacher(0.4), noise, grid, solver)
    assert len(path) == 7
    assert torch.allclose(path[0], noise * 80.0)
    assert torch.allclose(path[-1], reference(linear_teacher(0.4), noise, grid), atol=1e-6)
    # D = 0: dx/dsigma = x / sigma, solved exactly by both solvers: x(sigma) = sigma z
    for x, sigma in zip(ode_trajectory(linear_teacher(0.0), noise, grid, solver), grid.tolist()):
        assert torch.allclose(x, noise * sigma, rtol=1e-5, atol=1e-6)


class Shrink(torch.nn.Module):
    """Stands in for a teacher or student: f(x, sigma) = x / (1 + sigma)."""

    def forward(self, x, sigma, cond=None):
        return x / append_dims(1 + sigma, x.ndim)


def _cmt(**kw):
    cfg = CMTConfig(**{"teacher": "t", "init_from_teacher": False, "solver_steps": 4, "mid_steps": 10, **kw})
    return CMT(cfg, Shrink(), 20, teacher=Shrink())


def test_regression_points_targets_and_loss():
    m = _cmt()
    x0 = torch.zeros(8, 1, 6)
    cond = {"class": torch.arange(8)}
    points, sigmas, ends, point_cond = m.trajectories(x0, torch.Generator().manual_seed(0), cond)
    assert points.shape == (8, 1, 6) and sigmas.shape == (8,)  # 2 trajectories x 4 levels
    grid = edm_sigmas(4)
    assert torch.allclose(sigmas, grid[:-1].float().repeat_interleave(2))
    # every level of one trajectory maps to the same end point; trajectory j takes the condition of sample j N
    assert torch.equal(ends[:2], ends[2:4]) and torch.equal(ends[:2], ends[6:])
    assert torch.equal(point_cond["class"], torch.tensor([0, 4] * 4))
    noise = torch.randn((2, 1, 6), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(points[:2], noise * 80.0)
    assert torch.allclose(ends[:2], ode_trajectory(Shrink(), noise, grid)[-1], atol=1e-6)
    loss = m.loss(Shrink(), x0, 0, torch.Generator().manual_seed(0), cond)
    assert torch.allclose(loss, losses.pseudo_huber(Shrink()(points, sigmas), ends, m._huber(x0)))


def test_switches_to_ect_after_mid_training():
    m = _cmt(mid_steps=10, post_stage=4, stage_steps=5)
    assert [m.stage(s) for s in (0, 9, 10, 14, 15, 30)] == [4, 4, 4, 4, 5, 8]
    x0 = torch.randn(8, 1, 6)
    assert m.loss(Shrink(), x0, 3, torch.Generator().manual_seed(0)).shape == (8,)  # 2 x 4 trajectory points
    gen = torch.Generator().manual_seed(0)
    ect = m.loss(Shrink(), x0, 12, gen)  # ECT: one loss per data sample, gap from stage 4
    assert ect.shape == (8,) and torch.isfinite(ect).all()


def _tiny(steps, **extra):
    sets = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000}
    sets.update(extra)
    return load_config(os.path.join(ROOT, "configs", "image", "digits_ict.yaml"), [f"{k}={v}" for k, v in sets.items()])


def test_tiny_cmt_run_from_a_teacher(tmp_path):
    import cm_media

    teacher = tmp_path / "edm"
    train(_tiny(2, **{"method.name": "edm"}), teacher, progress=False)
    cfg = _tiny(4, **{"method.name": "cmt", "method.teacher": str(teacher), "method.mid_steps": 2,
                      "method.solver_steps": 4, "method.stage_steps": 1})
    train(cfg, tmp_path / "cmt", progress=False)
    gen = cm_media.load(tmp_path / "cmt")
    assert gen.model.kind == "consistency"
    for steps in (1, 2):
        out = gen.generate(2, steps=steps)
        assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
