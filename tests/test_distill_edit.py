"""Teachers, distillation (CD), tuning (ECT) and zero-shot editing."""


import pytest
import torch

from cm_media.errors import UserError
from cm_media.math import losses, samplers, solvers
from cm_media.math.parameterization import append_dims
from cm_media.runs.config import load_config
from cm_media.runs.training import train


def linear_teacher(a):
    """D(x, sigma) = a x: the ODE slope is (1 - a) x / sigma."""
    return lambda x, s: a * x


def test_heun_step_on_linear_teacher():
    x = torch.randn(3, 1, 4)
    s_hi, s_lo = torch.full((3,), 2.0), torch.full((3,), 1.0)
    a = 0.3
    d_hi = (1 - a) * x / 2.0
    x_euler = x - d_hi
    d_lo = (1 - a) * x_euler / 1.0
    expect = x - 0.5 * (d_hi + d_lo)
    assert torch.allclose(solvers.heun_step(linear_teacher(a), x, s_hi, s_lo), expect)
    assert torch.allclose(solvers.euler_step(linear_teacher(a), x, s_hi, s_lo), x_euler)


def test_cd_loss_targets_teacher_step():
    """With f = identity and an l2 distance the CD loss is the squared gap between x_hi and the teacher's x_lo."""
    x0, noise = torch.randn(2, 1, 6), torch.randn(2, 1, 6)
    s_hi, s_lo = torch.tensor([3.0, 1.0]), torch.tensor([2.0, 0.5])
    teacher = linear_teacher(0.5)
    got = losses.cd_loss(lambda x, s: x, lambda x, s: x, teacher, x0, noise, s_hi, s_lo, losses.squared_l2)
    x_hi = x0 + append_dims(s_hi, 3) * noise
    x_lo = solvers.heun_step(teacher, x_hi, s_hi, s_lo)
    assert torch.allclose(got, ((x_hi - x_lo) ** 2).mean(dim=(1, 2)))


def test_ect_with_r_zero_is_denoising_loss():
    x0, noise = torch.randn(4, 1, 5), torch.randn(4, 1, 5)
    t = torch.tensor([0.5, 1.0, 1.5, 1.8])
    r = torch.zeros(4)

    def f(x, s):  # a consistency-like network: identity at sigma_min, shrinkage elsewhere
        return torch.where(append_dims(s, 3) <= 0.002, x, 0.9 * x)

    got = losses.ect_loss(f, x0, noise, t, r, 0.002, 0.0, torch.ones(4))
    x_t = x0 + append_dims(t, 3) * noise
    expect = (f(x_t, t) - x0).reshape(4, -1).norm(dim=1)  # target is the clean data
    assert torch.allclose(got, expect, atol=1e-6)


def test_masked_editing_keeps_known_region_exactly():
    known = torch.randn(2, 1, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:7] = 1

    def f(x, s):
        return torch.tanh(x) * 0.7 + 0.1

    for sig in ([80.0], [80.0, 1.0, 0.3]):
        out = samplers.masked_multistep(f, known, mask, sig, generator=torch.Generator().manual_seed(0))
        keep = mask.expand_as(known) == 0
        assert torch.equal(out[keep], known[keep])
        assert not torch.allclose(out[~keep], known[~keep])


def test_masked_editing_init_is_noised_from_sigma0():
    """With init, the first network input in the masked region is init + sigma0 * z (SDEdit), not 0 + sigma0 * z."""
    known, init = torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 3.0)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., 1:3, 1:3] = 1
    seen = []

    def f(x, s):
        seen.append(x.clone())
        return x

    g = torch.Generator().manual_seed(0)
    out = samplers.masked_multistep(f, known, mask, [0.5], generator=g, init=init)
    z = torch.randn(known.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(seen[0], known * (1 - mask) + init * mask + 0.5 * z)
    assert torch.equal(out[mask.bool().expand_as(out) == 0], known[mask.bool().expand_as(known) == 0])


def test_reconstruction_guidance_matches_its_formula_on_a_linear_model():
    """For f(z) = W z, Ho et al.'s eq. 7 gives x = W z + w W^T (keep * (known - W z)); with weight 0 it is f(z)."""
    torch.manual_seed(0)
    n = 12
    weights = torch.randn(n, n) / n**0.5
    known, z = torch.randn(3, 1, n), torch.randn(3, 1, n)
    keep = torch.zeros(1, 1, n)
    keep[..., :5] = 1
    keep = keep.expand_as(known)

    def f(x, s):
        return x @ weights.T

    wz = f(z, None)
    expected = wz + 0.3 * (keep * (known - wz)) @ weights
    assert torch.allclose(samplers.reconstruction_guided(f, z, 1.0, known, keep, 0.3), expected, atol=1e-5)
    assert torch.allclose(samplers.reconstruction_guided(f, z, 1.0, known, keep, 0.0), wz)
    # a guided edit still keeps the known region exactly and runs under no_grad (the gradient is local)
    with torch.no_grad():
        out = samplers.masked_multistep(f, known, 1 - keep[:1], [2.0, 0.5], generator=torch.Generator().manual_seed(0),
                                        guidance=0.3)
    assert torch.equal(out[keep.bool()], known[keep.bool()]) and not out.requires_grad


def test_crossfade_fill_is_linear_between_kept_frames():
    from modalities.video.edit import crossfade_fill

    clips = torch.zeros(1, 1, 6, 2, 2)
    clips[:, :, 0] = 1.0
    clips[:, :, 4] = 5.0
    clips[:, :, 5] = 7.0
    out = crossfade_fill(clips, [1, 2, 3])
    assert [out[0, 0, t, 0, 0].item() for t in range(6)] == [1.0, 2.0, 3.0, 4.0, 5.0, 7.0]
    tail = crossfade_fill(clips, [4, 5])  # a run at the end holds the last kept frame
    assert tail[0, 0, 4, 0, 0].item() == 0.0 and tail[0, 0, 5, 0, 0].item() == 0.0


def test_slerp_endpoints_and_norm():
    z0, z1 = torch.randn(1, 3, 16), torch.randn(1, 3, 16)
    assert torch.allclose(samplers.slerp(z0, z1, 0.0), z0, atol=1e-5)
    assert torch.allclose(samplers.slerp(z0, z1, 1.0), z1, atol=1e-5)
    mid = samplers.slerp(z0, z1, 0.5)
    assert mid.norm().item() == pytest.approx(0.5 * (z0.norm() + z1.norm()).item(), rel=0.15)


def _tiny(digits_config, steps, **extra):
    sets = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000}
    sets.update(extra)
    return load_config(digits_config, [f"{k}={v}" for k, v in sets.items()])


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    import os

    cfg_path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "configs", "image", "digits_ict.yaml")
    out = tmp_path_factory.mktemp("teacher") / "edm"
    train(_tiny(cfg_path, 3, **{"method.name": "edm"}), out, progress=False)
    return out


@pytest.mark.parametrize("method,extra", [("cd", {"method.target": "ema"}), ("cd", {"method.distance": "l2"}),
                                          ("ect", {"method.stage_steps": 1})])
def test_cd_and_ect_train_from_teacher(tmp_path, digits_config, teacher_run, method, extra):
    import cm_media

    cfg = _tiny(digits_config, 3, **{"method.name": method, "method.teacher": str(teacher_run), **extra})
    train(cfg, tmp_path / method, progress=False)
    gen = cm_media.load(tmp_path / method)
    assert gen.is_consistency
    out = gen.generate(2, steps=2)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()


def test_student_starts_from_teacher_weights(tmp_path, digits_config, teacher_run):
    from cm_media.methods import build_method
    from cm_media.runs.checkpoint import latest_checkpoint, load_checkpoint, prefixed
    from cm_media.runs.model import build_model
    from cm_media.runs.teacher import load_teacher

    cfg = _tiny(digits_config, 1, **{"method.name": "ect", "method.teacher": str(teacher_run)})
    _, _, model = build_model(cfg)
    build_method(cfg.method, model, 1, load_teacher(cfg, torch.device("cpu"))[0])
    ref = prefixed(load_checkpoint(latest_checkpoint(teacher_run))[0], "ema")
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref[k]), k


def test_teacher_errors(tmp_path, digits_config, teacher_run):
    with pytest.raises(UserError, match="method.teacher"):
        _tiny(digits_config, 1, **{"method.name": "cd"})
    student = tmp_path / "student"
    train(_tiny(digits_config, 1), student, progress=False)  # an iCT run is no teacher
    with pytest.raises(UserError, match="must be 'edm'"):
        train(_tiny(digits_config, 1, **{"method.name": "cd", "method.teacher": str(student)}), tmp_path / "x", progress=False)
    with pytest.raises(UserError, match="backbone"):
        cfg = _tiny(digits_config, 1, **{"method.name": "cd", "method.teacher": str(teacher_run), "backbone.channels": 8})
        train(cfg, tmp_path / "y", progress=False)


def test_generator_edit_keeps_pixels(tmp_path, digits_config):
    import cm_media

    train(_tiny(digits_config, 2), tmp_path / "r", progress=False)
    gen = cm_media.load(tmp_path / "r")
    media = torch.rand(1, 1, 8, 8)
    mask = gen.modality.edit_mask("box:2,2,6,6", (1, 1, 8, 8), gen.cfg)
    out = gen.edit(media, mask, steps=2)
    keep = mask.expand_as(media) == 0
    assert torch.allclose(out[keep], media[keep], atol=1e-6)
    with pytest.raises(UserError, match="box"):
        gen.modality.edit_mask("box:1,2", (1, 1, 8, 8), gen.cfg)
    frames = gen.interpolate(4, seed_a=0, seed_b=5, steps=1)
    assert frames.shape == (4, 1, 8, 8)
    assert torch.allclose(frames[0], gen.generate(1, steps=1, seed=0)[0], atol=1e-5)
