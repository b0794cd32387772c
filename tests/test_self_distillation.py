"""Knowledge distillation of a consistency model's multistep sampler into one step (method kd): the deterministic
teacher sampler, the regression loss, config and teacher checks, and a tiny run from an iCT teacher."""

import math

import pytest
import torch

from cm_media.errors import UserError
from cm_media.math import losses
from cm_media.math.parameterization import append_dims
from cm_media.math.samplers import default_step_sigmas, multistep_fixed_noise, onestep
from cm_media.methods.self_distillation import KD, KDConfig
from cm_media.runs.config import load_config
from cm_media.runs.training import train


class Shrink(torch.nn.Module):
    """Stands in for teacher and student: f(x, sigma) = x / (1 + sigma)."""

    def forward(self, x, sigma, cond=None):
        return x / append_dims(1 + sigma, x.ndim)


def test_fixed_noise_multistep_is_algorithm_1_with_rolled_noise():
    noise = torch.randn(3, 2, 5)
    f = Shrink()
    sigmas = [20.0, 2.0, 0.5]
    got = multistep_fixed_noise(f, noise, sigmas, sigma_min=0.002)
    x = f(20.0 * noise, torch.full((3,), 20.0))
    for k, tau in enumerate(sigmas[1:], start=1):
        z = noise.flatten(1).roll(k * 7919, dims=1).view_as(noise)
        x = f(x + math.sqrt(tau**2 - 0.002**2) * z, torch.full((3,), tau))
    assert torch.allclose(got, x)
    assert torch.equal(got, multistep_fixed_noise(f, noise.clone(), sigmas))  # a function of the noise alone
    assert torch.equal(multistep_fixed_noise(f, noise, [20.0]), onestep(f, noise, 20.0))
    # each sample's re-noise comes from its own noise: changing sample 0 leaves the others' results
    other = noise.clone()
    other[0] += 1
    moved = multistep_fixed_noise(f, other, sigmas)
    assert torch.equal(moved[1:], got[1:]) and not torch.equal(moved[0], got[0])


def _kd(**kw):
    cfg = KDConfig(**{"teacher": "t", "init_from_teacher": False, "sigma_max": 20.0, **kw})
    return KD(cfg, Shrink(), 10, teacher=Shrink())


def test_loss_regresses_the_one_step_sample_onto_the_teachers_k_step_sample():
    m = _kd(teacher_steps=3)
    assert m.teacher_sigmas() == default_step_sigmas(3, 0.002, 20.0, 7.0)
    x0 = torch.zeros(4, 1, 6)
    loss = m.loss(Shrink(), x0, 0, torch.Generator().manual_seed(1))
    z = torch.randn((4, 1, 6), generator=torch.Generator().manual_seed(1))
    target = multistep_fixed_noise(Shrink(), z, m.teacher_sigmas())
    pred = Shrink()(20.0 * z, torch.full((4,), 20.0))
    assert loss.shape == (4,)
    assert torch.allclose(loss, losses.pseudo_huber(pred, target, losses.pseudo_huber_c(6)))
    assert _kd(teacher_steps=2, teacher_sigmas=[20.0, 1.0]).teacher_sigmas() == [20.0, 1.0]
    # a student that already makes the teacher's K-step sample has (pseudo-Huber) loss 0
    assert torch.allclose(m.loss(lambda x, s: target, x0, 0, torch.Generator().manual_seed(1)), torch.zeros(4))


class ClassShift(torch.nn.Module):
    """f(x, sigma, cond) = x / (1 + sigma) + class label (the null label 3 of 3 classes shifts by 3)."""

    def forward(self, x, sigma, cond=None):
        shift = cond["class"].to(x.dtype) if cond else torch.zeros(x.shape[0])
        return x / append_dims(1 + sigma, x.ndim) + append_dims(shift, x.ndim)


def test_guided_teacher_target_is_the_classifier_free_k_step_sample():
    from cm_media.conditions import Condition
    from cm_media.math.guidance import classifier_free

    conditions = [Condition("class", kind="class", classes=["a", "b", "c"])]
    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, teacher_cfg_scale=3.0)
    m = KD(cfg, ClassShift(), 10, teacher=ClassShift(), conditions=conditions)
    cond = {"class": torch.tensor([0, 1, 2, 3])}  # the last row's condition was dropped: the null label
    x0 = torch.zeros(4, 1, 6)
    loss = m.loss(ClassShift(), x0, 0, torch.Generator().manual_seed(2), cond)
    z = torch.randn((4, 1, 6), generator=torch.Generator().manual_seed(2))
    null = {"class": torch.full((4,), 3)}
    target = multistep_fixed_noise(classifier_free(ClassShift(), cond, null, 3.0), z, m.teacher_sigmas())
    # per step the guided shift null + 3 (c - null) = 3 c - 6 replaces the plain c: 2 c - 6 more, and the first
    # step's difference passes through the second step's 1 / (1 + tau); the dropped row stays unconditional
    pred = ClassShift()(20.0 * z, torch.full((4,), 20.0), cond)
    assert torch.allclose(loss, losses.pseudo_huber(pred, target, losses.pseudo_huber_c(6)))
    plain = multistep_fixed_noise(lambda x, s: ClassShift()(x, s, cond), z, m.teacher_sigmas())
    assert torch.allclose(target[3], plain[3]) and not torch.allclose(target[:3], plain[:3])
    tau = m.teacher_sigmas()[1]
    expected = (2 * torch.tensor([0.0, 1.0, 2.0, 3.0]) - 6) * (1 + 1 / (1 + tau))
    assert torch.allclose(target[:, 0, 0] - plain[:, 0, 0], expected, atol=1e-5)
    # guidance 1 is the plain conditional teacher
    m1 = KD(KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2), ClassShift(), 10,
            teacher=ClassShift(), conditions=conditions)
    assert torch.allclose(m1.loss(ClassShift(), x0, 0, torch.Generator().manual_seed(2), cond),
                          losses.pseudo_huber(pred, plain, losses.pseudo_huber_c(6)))


def test_config_errors():
    with pytest.raises(UserError, match="teacher_steps must be >= 2 .* or 1 with method.joint_edit_stream"):
        KDConfig(teacher_steps=1)
    assert KDConfig(teacher_steps=1, joint_edit_stream=1).teacher_steps == 1
    with pytest.raises(UserError, match="teacher_sigmas lists 2 levels for teacher_steps 3"):
        KDConfig(teacher_steps=3, teacher_sigmas=[20.0, 1.0])
    with pytest.raises(UserError, match="teacher_cfg_scale must be a number >= 0, got -1"):
        KDConfig(teacher_cfg_scale=-1)


def _tiny(digits_config, steps, **extra):
    sets = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000}
    sets.update(extra)
    return load_config(digits_config, [f"{k}={v}" for k, v in sets.items()])


def test_tiny_run_from_an_ict_teacher_and_teacher_kind_errors(tmp_path, digits_config):
    import cm_media

    teacher = tmp_path / "ict"
    train(_tiny(digits_config, 2), teacher, progress=False)
    student = tmp_path / "kd"
    train(_tiny(digits_config, 2, **{"method.name": "kd", "method.teacher": str(teacher), "method.teacher_steps": 2}),
          student, progress=False)
    gen = cm_media.load(student)
    assert gen.is_consistency
    out = gen.generate(2, steps=1)
    assert out.shape == (2, 1, 8, 8) and torch.isfinite(out).all()
    # a student of another backbone learns from the teacher's samples, but cannot start from its weights
    wide = {"method.name": "kd", "method.teacher": str(teacher), "method.teacher_steps": 2, "backbone.channels": 8}
    with pytest.raises(UserError, match="has a different backbone section"):
        train(_tiny(digits_config, 1, **wide), tmp_path / "w0", progress=False)
    train(_tiny(digits_config, 1, **wide, **{"method.init_from_teacher": False}), tmp_path / "w1", progress=False)
    assert cm_media.load(tmp_path / "w1").generate(1, steps=1).shape == (1, 1, 8, 8)
    edm = tmp_path / "edm"
    train(_tiny(digits_config, 1, **{"method.name": "edm"}), edm, progress=False)
    with pytest.raises(UserError, match="a teacher must be a consistency model"):
        train(_tiny(digits_config, 1, **{"method.name": "kd", "method.teacher": str(edm)}), tmp_path / "x", progress=False)


class TwoStreams(torch.nn.Module):
    """f(x, sigma) = x / (1 + sigma) with one sigma per stream (3 + 3 elements of [B, 1, 6])."""

    stream_sizes = [3, 3]

    def forward(self, x, sigma, cond=None):
        from cm_media.math.streams import per_element

        return x / (1 + per_element(sigma, x, self.stream_sizes if sigma.ndim == 2 else None))


class OffTeacher(TwoStreams):
    def forward(self, x, sigma, cond=None):
        return 0.9 * super().forward(x, sigma, cond)


def held_inputs(x0, seed, p, sizes):
    """What KD.loss draws from a generator seeded `seed` with held_stream_p p: noise z, held streams [B, S], and
    the student's input x and sigma [B, S] (held streams clean at sigma_min, the others at sigma_max 20)."""
    from cm_media.math import streams

    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(x0.shape, generator=gen)
    held = streams.clean_stream_mask(x0.shape[0], len(sizes), p, gen)  # [B, S]
    keep = streams.per_element(held.float(), x0, sizes)
    x = keep * x0 + (1 - keep) * 20.0 * z
    return z, held, x, streams.hold_streams(torch.full((x0.shape[0],), 20.0), held, 0.002)


def test_held_streams_regress_onto_the_teachers_one_step_edit():

    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, held_stream_p=0.7)
    m = KD(cfg, TwoStreams(), 10, teacher=TwoStreams())
    x0 = torch.randn(16, 1, 6)
    loss = m.loss(TwoStreams(), x0, 0, torch.Generator().manual_seed(2))
    z, held, x, sigma = held_inputs(x0, 2, 0.7, [3, 3])
    assert 0 < int(held.any(1).sum()) < 16
    one = TwoStreams()(x, sigma)
    joint = multistep_fixed_noise(TwoStreams(), z, m.teacher_sigmas())
    target = torch.where(held.any(1)[:, None, None], one, joint)
    assert torch.allclose(loss, losses.pseudo_huber(one, target, losses.pseudo_huber_c(6)))
    assert torch.equal(x[~held.any(1)], 20.0 * z[~held.any(1)])  # the joint rows: the one-step sampler's input
    # held_weight scales the held rows' losses only (a student off the teacher's held output)
    cfg3 = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, held_stream_p=0.7,
                    held_weight=3.0)
    m3 = KD(cfg3, TwoStreams(), 10, teacher=TwoStreams())
    off = m3.loss(OffTeacher(), x0, 0, torch.Generator().manual_seed(2))
    base = m.loss(OffTeacher(), x0, 0, torch.Generator().manual_seed(2))
    rows = held.any(1)
    assert torch.allclose(off[rows], 3.0 * base[rows]) and torch.allclose(off[~rows], base[~rows])
    with pytest.raises(UserError, match="held_stream_p needs a multi-stream backbone"):
        m.loss(Shrink(), x0, 0, torch.Generator().manual_seed(2))
    with pytest.raises(UserError, match="held_stream_p must be in"):
        KDConfig(held_stream_p=1.5)
    # per_stream: the distance of each stream's elements, summed
    cfg4 = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, per_stream=True)
    m4 = KD(cfg4, TwoStreams(), 10, teacher=TwoStreams())
    got = m4.loss(OffTeacher(), x0, 0, torch.Generator().manual_seed(3))
    z = torch.randn((16, 1, 6), generator=torch.Generator().manual_seed(3))
    pred, tgt = OffTeacher()(20.0 * z, torch.full((16,), 20.0)), multistep_fixed_noise(TwoStreams(), z, m4.teacher_sigmas())
    c3 = losses.pseudo_huber_c(3)
    want = losses.pseudo_huber(pred[..., :3], tgt[..., :3], c3) + losses.pseudo_huber(pred[..., 3:], tgt[..., 3:], c3)
    assert torch.allclose(got, want)
    with pytest.raises(UserError, match="held_weight must be >= 0"):
        KDConfig(held_weight=-1.0)


class CountingTeacher(TwoStreams):
    """TwoStreams that records how many rows each call saw and whether it was a held (per-stream sigma) call."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x, sigma, cond=None):
        self.calls.append((x.shape[0], sigma.ndim == 2, None if cond is None else cond["digit"].tolist()))
        return super().forward(x, sigma, cond)


def test_held_data_streams_take_the_datas_stream_as_the_free_streams_target_in_held_rows():

    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, held_stream_p=0.7,
                   held_data_streams=[1])
    m = KD(cfg, TwoStreams(), 10, teacher=TwoStreams())
    x0 = torch.randn(16, 1, 6)
    loss = m.loss(OffTeacher(), x0, 0, torch.Generator().manual_seed(2))
    z, held, x, sigma = held_inputs(x0, 2, 0.7, [3, 3])
    video_held, audio_held = held[:, 0], held[:, 1]
    assert video_held.any() and audio_held.any() and not held.any(1).all()
    target = torch.where(held.any(1)[:, None, None], TwoStreams()(x, sigma),
                         multistep_fixed_noise(TwoStreams(), z, m.teacher_sigmas()))
    target[video_held, :, 3:] = x0[video_held, :, 3:]  # stream 1 free and listed: the data's stream 1
    # rows holding stream 1 keep the teacher's edit of stream 0 (not listed); joint rows keep the K-step sample
    assert torch.allclose(loss, losses.pseudo_huber(OffTeacher()(x, sigma), target, losses.pseudo_huber_c(6)))
    plain = KD(KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, held_stream_p=0.7),
               TwoStreams(), 10, teacher=TwoStreams()).loss(OffTeacher(), x0, 0, torch.Generator().manual_seed(2))
    assert torch.equal(loss[~video_held], plain[~video_held]) and not torch.allclose(loss[video_held], plain[video_held])
    bad = KD(KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, held_stream_p=0.7,
                      held_data_streams=[2]), TwoStreams(), 10, teacher=TwoStreams())
    with pytest.raises(UserError, match="held_data_streams 2 is not a stream"):
        bad.loss(TwoStreams(), x0, 0, torch.Generator().manual_seed(2))
    with pytest.raises(UserError, match="needs method.held_stream_p > 0"):
        KDConfig(held_data_streams=[1])
    with pytest.raises(UserError, match="list of stream indices"):
        KDConfig(held_stream_p=0.5, held_data_streams=[-1])


class ComplexSound(torch.nn.Module):
    """f(x, sigma) = x / (1 + sigma) per stream: stream 0 two reals, stream 1 two complex values (re, re, im, im)."""

    stream_sizes = [2, 4]
    complex_streams = [False, True]

    def forward(self, x, sigma, cond=None):
        from cm_media.math.streams import per_element

        return x / (1 + per_element(sigma, x, self.stream_sizes if sigma.ndim == 2 else None))


def test_with_magnitude_keeps_the_phase_and_takes_the_magnitude():
    from cm_media.math.streams import with_magnitude

    phase_of = torch.tensor([[3.0, 0.0, 4.0, 0.0]])  # 3+4i, 0
    magnitude_of = torch.tensor([[0.0, 1.0, 10.0, -2.0]])  # |10i| = 10, 1-2i
    got = with_magnitude(phase_of, magnitude_of)
    assert torch.allclose(got, torch.tensor([[6.0, 1.0, 8.0, -2.0]]))  # 10 * (3+4i)/5; no phase: the data's own


def test_held_data_magnitude_takes_the_datas_magnitudes_with_the_teachers_phases():

    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, held_stream_p=0.8,
                   held_data_streams=[1], held_data_magnitude=True)
    teacher = ComplexSound()
    m = KD(cfg, ComplexSound(), 10, teacher=teacher)
    x0 = torch.randn(16, 1, 6)
    loss = m.loss(ComplexSound(), x0, 0, torch.Generator().manual_seed(4))
    z, held, x, sigma = held_inputs(x0, 4, 0.8, [2, 4])
    assert held[:, 0].any()
    one = teacher(x, sigma)  # the teacher's edit
    target = torch.where(held.any(1)[:, None, None], one, multistep_fixed_noise(teacher, z, m.teacher_sigmas()))
    rows = held[:, 0]
    t_c = torch.complex(one[rows, 0, 2:4], one[rows, 0, 4:6])
    d_c = torch.complex(x0[rows, 0, 2:4], x0[rows, 0, 4:6])
    mixed = t_c / t_c.abs() * d_c.abs()
    target[rows, 0, 2:4], target[rows, 0, 4:6] = mixed.real, mixed.imag
    assert torch.allclose(loss, losses.pseudo_huber(ComplexSound()(x, sigma), target, losses.pseudo_huber_c(6)),
                          atol=1e-6)
    # a listed stream that is not complex is a config error, named
    cfg0 = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, held_stream_p=0.8,
                    held_data_streams=[0], held_data_magnitude=True)
    with pytest.raises(UserError, match="stream 0 of this backbone is not complex"):
        KD(cfg0, ComplexSound(), 10, teacher=teacher).loss(ComplexSound(), x0, 0, torch.Generator().manual_seed(4))
    with pytest.raises(UserError, match="held_data_magnitude needs method.held_data_streams"):
        KDConfig(held_stream_p=0.5, held_data_magnitude=True)


class FlippedSound(ComplexSound):
    def forward(self, x, sigma, cond=None):
        return -0.5 * super().forward(x, sigma, cond)  # every phase turned by pi, half the magnitude


def test_magnitude_weight_adds_the_distance_of_the_complex_streams_magnitudes():
    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, magnitude_weight=2.0)
    teacher = ComplexSound()
    m = KD(cfg, ComplexSound(), 10, teacher=teacher)
    student = FlippedSound()
    x0 = torch.randn(16, 1, 6)
    loss = m.loss(student, x0, 0, torch.Generator().manual_seed(5))
    z = torch.randn((16, 1, 6), generator=torch.Generator().manual_seed(5))
    pred = student(20.0 * z, torch.full((16,), 20.0))
    target = multistep_fixed_noise(teacher, z, m.teacher_sigmas())
    mag = lambda v: torch.complex(v[:, 0, 2:4], v[:, 0, 4:6]).abs()  # noqa: E731  stream 1's two values
    want = (losses.pseudo_huber(pred, target, losses.pseudo_huber_c(6))
            + 2.0 * losses.pseudo_huber(mag(pred), mag(target), losses.pseudo_huber_c(2)))
    assert torch.allclose(loss, want, atol=1e-6)
    with pytest.raises(UserError, match="magnitude_weight needs a backbone with a complex stream"):
        KD(cfg, TwoStreams(), 10, teacher=TwoStreams()).loss(TwoStreams(), x0, 0, torch.Generator().manual_seed(5))
    with pytest.raises(UserError, match="magnitude_weight must be a number >= 0"):
        KDConfig(magnitude_weight=-1.0)


def test_each_row_costs_the_teacher_k_evaluations_or_one():
    teacher = CountingTeacher()
    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=3, held_stream_p=0.5)
    m = KD(cfg, TwoStreams(), 10, teacher=teacher)
    digits = torch.arange(16)
    m.loss(TwoStreams(), torch.randn(16, 1, 6), 0, torch.Generator().manual_seed(4), cond={"digit": digits})
    from cm_media.math import streams

    gen = torch.Generator().manual_seed(4)
    torch.randn((16, 1, 6), generator=gen)
    held = streams.clean_stream_mask(16, 2, 0.5, gen).any(1)  # [B]
    n_held = int(held.sum())
    assert 0 < n_held < 16
    joint_calls = [c for c in teacher.calls if not c[1] and c[0] == 16 - n_held]
    held_calls = [c for c in teacher.calls if c[1] and c[0] == n_held]
    assert len(teacher.calls) == 4 and len(joint_calls) == 3 and len(held_calls) == 1
    # each call gets its own rows' conditions
    assert all(c[2] == digits[~held].tolist() for c in joint_calls) and held_calls[0][2] == digits[held].tolist()


class Scaled(TwoStreams):
    """TwoStreams times a factor per stream: tells the student's and the teacher's outputs apart."""

    def __init__(self, a=1.0, b=1.0):
        super().__init__()
        self.scale = torch.tensor([a] * 3 + [b] * 3)

    def forward(self, x, sigma, cond=None):
        return super().forward(x, sigma, cond) * self.scale


def test_joint_edit_stream_targets_the_students_own_edit_of_the_teachers_motion():
    from cm_media.math import streams

    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=1, joint_edit_stream=1)
    teacher, student = Scaled(0.5, 0.5), Scaled(2.0, 3.0)
    m = KD(cfg, student, 10, teacher=teacher)
    x0 = torch.randn(4, 1, 6)
    loss = m.loss(student, x0, 0, torch.Generator().manual_seed(6))
    z = torch.randn((4, 1, 6), generator=torch.Generator().manual_seed(6))
    motion = teacher(20.0 * z, torch.full((4,), 20.0))[..., :3]  # the teacher's one step
    held = torch.tensor([[True, False]]).expand(4, -1)
    x = torch.cat([motion, 20.0 * z[..., 3:]], -1)
    edit = student(x, streams.hold_streams(torch.full((4,), 20.0), held, 0.002))  # the student's sound for it
    assert torch.allclose(edit[..., :3], 2.0 * motion / 1.002)  # (the stand-in does not keep a held stream)
    target = torch.cat([motion, edit[..., 3:]], -1)
    want = losses.pseudo_huber(student(20.0 * z, torch.full((4,), 20.0)), target, losses.pseudo_huber_c(6))
    assert torch.allclose(loss, want)
    with pytest.raises(UserError, match="joint_edit_stream needs a multi-stream backbone"):
        m.loss(Shrink(), x0, 0, torch.Generator().manual_seed(6))
    m2 = KD(KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=1, joint_edit_stream=2),
            student, 10, teacher=teacher)
    with pytest.raises(UserError, match=r"joint_edit_stream 2 is not a stream of this backbone \(streams 0..1\)"):
        m2.loss(student, x0, 0, torch.Generator().manual_seed(6))


def test_joint_edit_steps_makes_the_sound_target_a_multistep_edit_started_from_the_rows_noise():
    from cm_media.math.samplers import given_streams_multistep

    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=1, joint_edit_stream=1,
                   joint_edit_steps=2)
    teacher, student = Scaled(0.5, 0.5), Scaled(2.0, 3.0)
    m = KD(cfg, student, 10, teacher=teacher)
    x0 = torch.randn(4, 1, 6)
    torch.manual_seed(11)  # the second step's fresh noise
    loss = m.loss(student, x0, 0, torch.Generator().manual_seed(6))
    z = torch.randn((4, 1, 6), generator=torch.Generator().manual_seed(6))
    motion = teacher(20.0 * z, torch.full((4,), 20.0))[..., :3]
    sigmas = default_step_sigmas(2, 0.002, 20.0)
    assert len(sigmas) == 2 and sigmas[0] == pytest.approx(20.0) and sigmas[1] < 20.0
    torch.manual_seed(11)
    sound = given_streams_multistep(student, torch.cat([motion, 0 * motion], -1), torch.tensor([True, False]), [3, 3],
                                    sigmas, 0.002, noise=z)[..., 3:]
    one_step = given_streams_multistep(student, torch.cat([motion, 0 * motion], -1), torch.tensor([True, False]),
                                       [3, 3], sigmas[:1], 0.002, noise=z)[..., 3:]
    assert not torch.allclose(sound, one_step)  # the second step changes the target
    want = losses.pseudo_huber(student(20.0 * z, torch.full((4,), 20.0)), torch.cat([motion, sound], -1),
                               losses.pseudo_huber_c(6))
    assert torch.allclose(loss, want)
    with pytest.raises(UserError, match="joint_edit_steps must be >= 1, got 0"):
        KDConfig(teacher_steps=1, joint_edit_stream=1, joint_edit_steps=0)


def test_joint_edit_from_student_gives_the_edit_the_students_own_motion_and_keeps_the_teachers_as_target():
    from cm_media.math import streams

    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=1, joint_edit_stream=1,
                   joint_edit_from="student")
    teacher, student = Scaled(0.5, 0.5), Scaled(2.0, 3.0)
    m = KD(cfg, student, 10, teacher=teacher)
    x0 = torch.randn(4, 1, 6)
    loss = m.loss(student, x0, 0, torch.Generator().manual_seed(6))
    z = torch.randn((4, 1, 6), generator=torch.Generator().manual_seed(6))
    pred = student(20.0 * z, torch.full((4,), 20.0))
    motion = teacher(20.0 * z, torch.full((4,), 20.0))[..., :3]  # still the video target
    held = torch.tensor([[True, False]]).expand(4, -1)
    edit = student(torch.cat([pred[..., :3], 20.0 * z[..., 3:]], -1),
                   streams.hold_streams(torch.full((4,), 20.0), held, 0.002))  # sound for the student's motion
    want = losses.pseudo_huber(pred, torch.cat([motion, edit[..., 3:]], -1), losses.pseudo_huber_c(6))
    assert torch.allclose(loss, want)
    with pytest.raises(UserError, match="joint_edit_from must be teacher or student, got 'pupil'"):
        KDConfig(teacher_steps=1, joint_edit_stream=1, joint_edit_from="pupil")


def test_teacher_pool_keeps_the_newest_rows_with_their_conditions():
    from cm_media.methods.teacher_pool import TeacherPool

    pool = TeacherPool(5)
    for start in (0, 3):  # rows 0-2, then 3-5: row 5 overwrites row 0
        rows = torch.arange(start, start + 3, dtype=torch.float32)
        pool.add(rows.view(3, 1, 1), 10 * rows.view(3, 1, 1), {"class": rows.long()})
    assert len(pool) == 5
    z, target, cond = pool.rows(torch.arange(5))
    assert z.flatten().tolist() == [5, 1, 2, 3, 4] and target.flatten().tolist() == [50, 10, 20, 30, 40]
    assert cond["class"].tolist() == [5, 1, 2, 3, 4]
    with pytest.raises(IndexError, match="outside 0..4"):
        pool.rows(torch.tensor([5]))
    with pytest.raises(ValueError, match="pool holds"):
        pool.add(torch.zeros(1, 1, 1), torch.zeros(1, 1, 1), {"digit": torch.zeros(1, dtype=torch.long)})


def test_teacher_reuse_samples_a_share_of_the_batch_and_replays_the_rest_with_their_conditions():
    teacher = CountingTeacher()
    cfg = KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2, teacher_reuse=4)
    m = KD(cfg, Shrink(), 10, teacher=teacher)
    gen = torch.Generator().manual_seed(2)
    first = m.loss(Shrink(), torch.zeros(8, 1, 6), 0, gen, cond={"digit": torch.arange(8)})
    assert first.shape == (8,) and len(m.pool) == 2  # ceil(8 / 4) fresh rows
    assert [c[0] for c in teacher.calls] == [2, 2] and all(c[2] == [0, 1] for c in teacher.calls)
    m.loss(Shrink(), torch.zeros(8, 1, 6), 1, gen, cond={"digit": torch.arange(10, 18)})
    assert len(m.pool) == 4 and len(teacher.calls) == 4 and teacher.calls[-1][2] == [10, 11]

    # every row's loss is the distance of the student's one step to the stored target of its noise, with its stored
    # conditions: a student that looks each row's digit up in the pool (as it stands at the call) has loss 0
    def oracle(x, sigma, cond=None):
        z, target, stored = m.pool.rows(torch.arange(len(m.pool)))
        assert all(any(torch.equal(row, 20.0 * zz) for zz in z) for row in x)  # each input is sigma_max x a pool noise
        table = {int(d): t for d, t in zip(stored["digit"], target)}
        return torch.stack([table[int(d)] for d in cond["digit"]])

    loss = m.loss(oracle, torch.zeros(8, 1, 6), 2, gen, cond={"digit": torch.arange(20, 28)})
    assert torch.allclose(loss, torch.zeros(8)) and len(m.pool) == 6
    plain = KD(KDConfig(teacher="t", init_from_teacher=False, sigma_max=20.0, teacher_steps=2), Shrink(), 10,
               teacher=Shrink())
    assert plain.pool is None  # teacher_reuse 1: every row fresh, as before


def test_teacher_reuse_config_errors():
    for bad in (0, 1.5, True):
        with pytest.raises(UserError, match="teacher_reuse must be a whole number >= 1"):
            KDConfig(teacher_reuse=bad)
    with pytest.raises(UserError, match="teacher_pool must be a whole number >= 1"):
        KDConfig(teacher_reuse=2, teacher_pool=0)
    with pytest.raises(UserError, match="cannot go with method.held_stream_p"):
        KDConfig(teacher_reuse=2, held_stream_p=0.5)
