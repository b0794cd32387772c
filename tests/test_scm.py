"""sCM with TrigFlow: the parameterization, the tangent against hand computation on toy functions, the stabilizers,
sCT and sCD training runs, the adaptive weight saved with the run, and DDP reproducing one process."""

import math
import os
import subprocess
import sys

import pytest
import torch

from cm_media.errors import UserError
from cm_media.math import losses
from cm_media.math.parameterization import TrigFlow, append_dims, edm_scalings, trigflow_time
from cm_media.methods.scm import SCM, SCMConfig
from cm_media.nn.unet import UNet, UNetConfig
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import load_config
from cm_media.runs.training import train

SD = 0.5
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _randomized_trigflow(time_scale=1.0):
    net = TrigFlow(UNet(UNetConfig(dims=2, channels=16, channel_mult=[1, 2], num_res_blocks=1)), SD,
                   time_scale=time_scale)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("time_scale", [1.0, 1e-3])
def test_trigflow_is_the_edm_denoiser_in_trig_time(time_scale):
    """f(x_t, t) = cos t x_t - sin t sd F = D_edm(x_t / cos t, sd tan t), and F = -backbone(x_t / sd, c ln(sd tan t)
    / 4) with c the time scale (1: an EDM teacher's input; 1e-3: sCT's smooth one)."""
    net = _randomized_trigflow(time_scale)
    x_t = torch.randn(3, 1, 8, 8)
    t = torch.tensor([0.05, 0.7, 1.5])
    f = net.trigflow_consistency(x_t, t)
    sigma = SD * torch.tan(t)
    assert torch.allclose(f, net(x_t / append_dims(torch.cos(t), 4), sigma), atol=1e-5)
    raw = net.backbone(x_t / SD, time_scale * torch.log(sigma) / 4)
    assert torch.allclose(net.trigflow_velocity(x_t, t), -raw, atol=1e-6)
    # EDM's scalings are cos^2 t, sd sin t and cos t / sd in trig time
    c_skip, c_out, c_in = edm_scalings(sigma, SD)
    assert torch.allclose(c_skip, torch.cos(t) ** 2, atol=1e-6)
    assert torch.allclose(c_out, SD * torch.sin(t), atol=1e-6)
    assert torch.allclose(c_in, torch.cos(t) / SD, atol=1e-6)
    assert torch.equal(net(x_t, torch.zeros(3)), x_t)  # boundary condition at t = 0, exactly
    assert torch.allclose(trigflow_time(torch.tensor([SD])), torch.tensor([math.pi / 4]))


def test_ground_truth_and_teacher_velocity_agree_on_one_point_data():
    """Data = one point c: the exact denoiser is D = c, so the teacher's TrigFlow velocity (cos t x_t - c) / sin t
    equals sCT's dx_t/dt = cos t sd z - sin t c."""
    c = torch.randn(1, 1, 4).expand(3, 1, 4)
    noise, t = torch.randn(3, 1, 4), torch.tensor([0.1, 0.8, 1.4])
    x_t, dxdt = losses.trigflow_from_edm(c, noise, t, SD)
    assert torch.allclose(x_t, append_dims(torch.cos(t), 3) * c + append_dims(torch.sin(t), 3) * SD * noise)
    teacher = losses.denoiser_trigflow_velocity(lambda x, s: c, x_t, t, SD)
    assert torch.allclose(teacher, dxdt, atol=1e-5)


def test_tangent_is_cos_t_times_total_derivative_of_f():
    """g (warm-up r = 1) = cos(t) d/dt f(x_t, t) along dx_t/dt: compared with a finite difference of f = cos t x
    - sin t sd F on a toy F, and with r = 0 only its first term."""
    a, b = 0.7, -1.3

    def F(x, t):
        return a * x * append_dims(torch.sin(3 * t), x.ndim) + b * append_dims(t, x.ndim) ** 2

    def f(x, t):
        return append_dims(torch.cos(t), x.ndim) * x - append_dims(torch.sin(t), x.ndim) * SD * F(x, t)

    x_t, dxdt, t = torch.randn(4, 1, 3, dtype=torch.float64), torch.randn(4, 1, 3, dtype=torch.float64), \
        torch.tensor([0.2, 0.6, 1.0, 1.4], dtype=torch.float64)
    v = torch.cos(t) * torch.sin(t)
    _, dfdt_scaled = torch.func.jvp(F, (x_t, t), (append_dims(v, 3) * dxdt, v))
    g = losses.scm_tangent(F(x_t, t), dfdt_scaled, x_t, dxdt, t, SD, 1.0)
    h = 1e-6
    total = (f(x_t + h * dxdt, t + h) - f(x_t - h * dxdt, t - h)) / (2 * h)
    assert torch.allclose(g, append_dims(torch.cos(t), 3) * total, atol=1e-6)
    g0 = losses.scm_tangent(F(x_t, t), dfdt_scaled, x_t, dxdt, t, SD, 0.0)
    assert torch.allclose(g0, -append_dims(torch.cos(t) ** 2, 3) * (SD * F(x_t, t) - dxdt))


def test_exact_consistency_function_has_zero_tangent():
    """For one-point data the exact f is constant (= c) along every trajectory, so g = 0 and the loss is zero."""
    c = torch.randn(1, 1, 5)

    class Exact(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def trigflow_velocity(self, x, t, cond=None):  # F with cos t x - sin t sd F = c
            return self.w * (append_dims(torch.cos(t), x.ndim) * x - c) / (SD * append_dims(torch.sin(t), x.ndim))

    m = SCM(SCMConfig(tangent_warmup=0, adaptive_weighting=False, tangent_norm="none"), Exact(), 10)
    loss = m.loss(Exact(), c.expand(6, 1, 5).clone(), 0, torch.Generator().manual_seed(0))
    assert loss.shape == (6,) and loss.abs().max() < 1e-8


def test_normalization_weighting_and_nonfinite_masking():
    g = torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    assert torch.allclose(losses.normalize_tangent(g, 0.1), g / torch.tensor([[5.1], [0.1]]))
    assert torch.allclose(losses.normalize_tangent(g, 0.1, "rms"), g / torch.tensor([[5 / math.sqrt(2) + 0.1], [0.1]]))
    assert torch.equal(losses.normalize_tangent(g, 0.1, "none"), g)
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], requires_grad=True)
    g = torch.tensor([[1.0, 0.0], [float("nan"), 1.0], [0.0, 2.0]])
    w, log_w = torch.tensor([1.0, 1.0, 2.0]), torch.tensor([0.0, 0.5, math.log(3.0)], requires_grad=True)
    loss = losses.scm_loss(f, g, w, log_w)
    assert loss[1] == 0  # masked: its tangent is not finite
    assert torch.allclose(loss[[0, 2]], torch.tensor([0.5, 3 * 2 * 2.0 - math.log(3.0)]))
    loss.sum().backward()
    assert torch.isfinite(f.grad).all() and torch.equal(f.grad[1], torch.zeros(2))
    assert torch.allclose(f.grad[0], -2 * 1.0 * g[0] / 2)  # -2 e^w weight g / D
    bad = losses.scm_loss(torch.tensor([[float("nan"), 0.0]]), torch.tensor([[float("nan"), 0.0]]), torch.ones(1))
    assert torch.isnan(bad).all()  # a non-finite prediction is not hidden: the loop skips the step


def test_time_input_per_mode():
    assert SCM.model_options(SCMConfig()) == {"time_scale": 1e-3}  # sCT: smooth
    assert SCM.model_options(SCMConfig(teacher="t")) == {"time_scale": 1.0}  # sCD: the EDM teacher's
    assert SCM.model_options(SCMConfig(time_input="edm")) == {"time_scale": 1.0}
    with pytest.raises(UserError, match="time_input"):
        SCMConfig(teacher="t", time_input="smooth")


def test_time_sampling_and_warmup():
    m = SCM(SCMConfig(p_mean=-1.0, p_std=1.4, tangent_warmup=100), _randomized_trigflow(), 10)
    t = m.sample_t(2000, torch.Generator().manual_seed(0))
    tau = torch.log(SD * torch.tan(t.double()))
    assert abs(tau.mean().item() + 1.0) < 0.1 and abs(tau.std().item() - 1.4) < 0.1
    assert (t > 0).all() and (t < math.pi / 2).all()
    assert [m.warmup(s) for s in (0, 50, 100, 500)] == [0.0, 0.5, 1.0, 1.0]


@pytest.mark.parametrize("mode", ["autograd", "finite_difference"])
def test_scm_loss_on_a_unet_is_finite_and_trains_the_weighting(mode):
    net = _randomized_trigflow().train()
    m = SCM(SCMConfig(jvp=mode), net, 10)
    x0 = 0.5 * torch.randn(4, 1, 8, 8)
    loss = m.loss(net, x0, 5, torch.Generator().manual_seed(1))
    assert loss.shape == (4,) and torch.isfinite(loss).all()
    loss.mean().backward()
    assert all(p.grad is not None for p in m.trainable_parameters())
    assert any(p.grad.abs().sum() > 0 for p in net.parameters() if p.grad is not None)


def test_finite_difference_tangent_matches_jvp():
    net = _randomized_trigflow().eval()
    x0 = 0.5 * torch.randn(4, 1, 8, 8)
    losses_by_mode = []
    for mode in ("autograd", "finite_difference"):
        m = SCM(SCMConfig(jvp=mode, adaptive_weighting=False, tangent_warmup=0), net, 10)
        losses_by_mode.append(m.loss(net, x0, 0, torch.Generator().manual_seed(2)))
    assert torch.allclose(losses_by_mode[0], losses_by_mode[1], rtol=2e-2, atol=1e-6)


def _tiny(steps, **extra):
    sets = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000, "method.name": "scm",
            "method.tangent_warmup": 2}
    sets.update(extra)
    return load_config(os.path.join(ROOT, "configs", "image", "digits_ict.yaml"), [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def edm_teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "edm"
    train(_tiny(2, **{"method.name": "edm"}), out, progress=False)
    return out


def test_sct_run_saves_weighting_resumes_and_samples(tmp_path):
    import cm_media

    cfg = _tiny(4, **{"train.checkpoint_every": 2})
    last = train(cfg, tmp_path / "sct", progress=False)
    tensors, meta = ckpt.load_checkpoint(last)
    weighting = ckpt.prefixed(tensors, "weighting")
    assert weighting and meta["step"] == 4
    assert any(k.startswith("optim.") for k in tensors)
    # resume from step 2 reproduces step 4, the adaptive weight and its optimizer state included
    last.unlink()
    again, _ = ckpt.load_checkpoint(train(cfg, tmp_path / "sct", resume=True, progress=False))
    for k in [k for k in tensors if k.startswith(("model.", "weighting.", "optim."))]:
        assert torch.equal(tensors[k], again[k]), k
    gen = cm_media.load(tmp_path / "sct")
    assert gen.model.kind == "trigflow" and gen.is_consistency
    for steps in (1, 2):
        out = gen.generate(2, steps=steps)
        assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_scd_starts_at_the_teacher_and_trains(tmp_path, edm_teacher):
    import cm_media
    from cm_media.methods import build_method
    from cm_media.runs.model import build_model
    from cm_media.runs.teacher import load_teacher

    cfg = _tiny(2, **{"method.teacher": str(edm_teacher)})
    teacher = load_teacher(cfg, torch.device("cpu"))[0]
    _, _, student = build_model(cfg)
    build_method(cfg.method, student, 2, teacher)
    x, sigma = torch.randn(2, 1, 8, 8), torch.tensor([0.3, 5.0])
    assert torch.allclose(student(x, sigma), teacher(x, sigma), atol=1e-5)  # the same function at the start
    train(cfg, tmp_path / "scd", progress=False)
    out = cm_media.load(tmp_path / "scd").generate(2, steps=1)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def _cli_train(out, nproc, method_sets):
    sets = ["train.steps=3", "train.batch_size=8", "backbone.preset=tiny", "train.warmup_steps=1",
            "train.samples=2", "train.log_every=1", "train.device=cpu", *method_sets]
    args = ["train", os.path.join(ROOT, "configs", "image", "digits_ict.yaml"), "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    prefix = [sys.executable, "-m"] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m"]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run([*prefix, "cm_media.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(out))[0]


def test_two_gloo_processes_reproduce_one_with_a_jvp_on_the_unwrapped_model(tmp_path):
    """sCM takes its JVP on the module inside DDP and trains a weighting network outside it: the loop all-reduces
    both, so 2 processes match 1 (without that, each rank would step on its own half-batch gradient)."""
    sets = ["method.name=scm", "method.tangent_warmup=2", "backbone.dropout=0.0"]
    single = _cli_train(tmp_path / "one", 1, sets)
    double = _cli_train(tmp_path / "two", 2, sets)
    keys = [k for k in single if k.startswith(("model.", "weighting."))]
    assert any(k.startswith("weighting.") for k in keys)
    for k in keys:
        assert torch.allclose(single[k], double[k], atol=2e-5, rtol=1e-4), k
