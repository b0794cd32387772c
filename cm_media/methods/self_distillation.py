"""Knowledge distillation of a consistency model's own multistep sampler into one step (Luhman & Luhman 2021,
"Knowledge Distillation in Iterative Generative Models for Improved Sampling Speed", with our consistency
teacher in place of their DDIM one).

The teacher is a trained consistency model; its K-step sample with re-noise drawn from the starting noise
(`multistep_fixed_noise`) is a deterministic function g(z) of the noise z. The student, started from the teacher,
regresses its one-step sample onto it:
    L = E_z d(f_theta(sigma_max z, sigma_max), g(z)),
with the pseudo-Huber d of iCT. Where K steps are better than one (sounding video: sound and motion in sync), the
one-step model learns what the K-step sampler makes, still in one network evaluation.

A multi-stream teacher (method.clean_stream_p) also generates one stream from another held clean; the student
keeps most of that without training on it (sounding digits: sound for real clips 78.9% -> 72.4%). With
`held_stream_p` that share of samples holds one stream clean, from the data, and regresses onto the teacher's own
one-step output for it, to keep the edits as the teacher makes them; `held_data_streams` lists free streams whose
target there is the data's own instead (its magnitudes only, with `held_data_magnitude`, for a complex stream). With `joint_edit_stream` s (the teacher may
then sample in one step) the joint rows' stream s regresses instead onto the student's own edit of s (in
`joint_edit_steps` steps) given the teacher's sample of the other streams: the two-evaluation cascade "motion, then
the sound for it" taught to the joint step (`joint_edit_from: student`: given the student's own one-step motion
instead, so it learns the sound for what it itself draws; the teacher's motion stays the target).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cm_media.errors import UserError
from cm_media.math import losses, streams
from cm_media.math.guidance import bind
from cm_media.math.samplers import _sig, default_step_sigmas, given_streams_multistep, multistep_fixed_noise
from cm_media.methods.distillation import TeacherConfig, _FromTeacher, data_conditions
from cm_media.methods.teacher_pool import TeacherPool


@dataclass
class KDConfig(TeacherConfig):
    """The teacher (a consistency run) samples in `teacher_steps` steps at `teacher_sigmas` (empty: the Karras
    grid of the sampler, as `cm-media generate --steps K`)."""

    name: str = "kd"
    teacher_steps: int = 3
    teacher_sigmas: list = field(default_factory=list)
    # classifier-free guidance of the teacher's K steps (Ho & Salimans 2022): the student learns the guided sample
    # and draws it unguided, in one evaluation instead of 2K (1.0: the plain conditional teacher)
    teacher_cfg_scale: float = 1.0
    held_stream_p: float = 0.0  # share of samples with one stream held clean, kept at the teacher's one step
    held_weight: float = 1.0  # loss weight of those samples (pseudo-Huber pulls back with a constant force)
    # streams whose target in a held row (another stream held clean) is the data's own stream instead of the
    # teacher's edit: the denoiser's target at sigma_max, the conditional mean, exact where the held stream
    # determines this one (a sounding digit's notes are a function of its wall hits and its digit)
    held_data_streams: list = field(default_factory=list)
    # ... but of a complex stream (an STFT) only the data's magnitudes, with the teacher's phases: a note's phase
    # hangs on its onset to the millisecond, which the frames cannot pin down, and the mean over it is silence
    held_data_magnitude: bool = False
    # weight of an added pseudo-Huber distance between the magnitudes of the complex streams of the output and the
    # target: regression onto values whose phase the student cannot quite predict shrinks them (a quiet soundtrack)
    magnitude_weight: float = 0.0
    per_stream: bool = False  # pseudo-Huber of each stream, summed (a quiet soundtrack is not swamped by video)
    # a stream whose joint-row target is the student's own edit of it (no gradient) given the other streams: the
    # joint step learns what the edit makes of the motion (-1: off)
    joint_edit_stream: int = -1
    joint_edit_steps: int = 1  # steps of that edit (Karras levels beyond one): a multistep edit is more tonal
    # whose other streams the edit is given: "teacher" (its sample, the other streams' targets) or "student" (the
    # student's own one-step output, no gradient: the joint step learns the sound for what it itself draws)
    joint_edit_from: str = "teacher"
    # each teacher sample serves this many student rows on average (1: every row fresh): a share 1/teacher_reuse
    # of each batch is sampled by the teacher and kept in a pool of its newest `teacher_pool` rows, the rest of the
    # batch replays rows from it (Luhman & Luhman distil from a fixed set of teacher pairs): the teacher's K-step
    # sample is most of a kd step, so this cuts the step's CPU. A resumed run starts with an empty pool.
    teacher_reuse: int = 1
    teacher_pool: int = 8192

    def __post_init__(self):
        if self.teacher_steps < 1 or (self.teacher_steps == 1 and self.joint_edit_stream < 0):
            raise UserError(f"method.teacher_steps must be >= 2 (one step is the student), or 1 with "
                            f"method.joint_edit_stream, got {self.teacher_steps}")
        if not self.teacher_cfg_scale >= 0 or self.teacher_cfg_scale == float("inf"):
            raise UserError(f"method.teacher_cfg_scale must be a number >= 0, got {self.teacher_cfg_scale}")
        if self.teacher_sigmas and len(self.teacher_sigmas) != self.teacher_steps:
            raise UserError(f"method.teacher_sigmas lists {len(self.teacher_sigmas)} levels for "
                            f"teacher_steps {self.teacher_steps}")
        if self.joint_edit_from not in ("teacher", "student"):
            raise UserError(f"method.joint_edit_from must be teacher or student, got {self.joint_edit_from!r}")
        if self.joint_edit_steps < 1:
            raise UserError(f"method.joint_edit_steps must be >= 1, got {self.joint_edit_steps}")
        if self.held_weight < 0:
            raise UserError(f"method.held_weight must be >= 0, got {self.held_weight}")
        if not 0.0 <= self.held_stream_p <= 1.0:
            raise UserError(f"method.held_stream_p must be in [0, 1], got {self.held_stream_p}")
        if not isinstance(self.held_data_streams, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in self.held_data_streams):
            raise UserError(f"method.held_data_streams must be a list of stream indices, got {self.held_data_streams!r}")
        if not self.magnitude_weight >= 0 or self.magnitude_weight == float("inf"):
            raise UserError(f"method.magnitude_weight must be a number >= 0, got {self.magnitude_weight}")
        if self.held_data_magnitude and not self.held_data_streams:
            raise UserError("method.held_data_magnitude needs method.held_data_streams")
        if self.held_data_streams and self.held_stream_p == 0:
            raise UserError("method.held_data_streams needs method.held_stream_p > 0 (rows that hold a stream)")
        self._check_reuse()

    def _check_reuse(self):
        for name in ("teacher_reuse", "teacher_pool"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise UserError(f"method.{name} must be a whole number >= 1, got {v!r}")
        if self.teacher_reuse > 1 and (self.held_stream_p > 0 or self.joint_edit_stream >= 0):
            raise UserError("method.teacher_reuse > 1 replays the teacher's joint samples only: it cannot go with "
                            "method.held_stream_p or method.joint_edit_stream")


class KD(_FromTeacher):
    """One-step student of its consistency teacher's deterministic K-step sampler."""

    name = "kd"
    Config = KDConfig
    teacher_kind = "consistency"

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        self.pool = TeacherPool(cfg.teacher_pool) if cfg.teacher_reuse > 1 else None

    @classmethod
    def edits_given_streams(cls, cfg) -> bool:
        return True  # the student starts from its teacher (a consistency model) and keeps what it could do

    def teacher_sigmas(self) -> list[float]:
        c = self.cfg
        if c.teacher_sigmas:
            return [float(s) for s in c.teacher_sigmas]
        return default_step_sigmas(c.teacher_steps, c.sigma_min, c.sigma_max, c.rho)

    def loss(self, model, x0, step, gen, cond=None):
        c = self.cfg
        if self.pool is not None:
            return self._pooled_loss(model, x0, gen, cond)
        z = self._noise(x0, gen)  # [B, C, *axes]
        x, sigma = c.sigma_max * z, _sig(z, c.sigma_max)  # the one-step sampler's input
        held_rows = torch.zeros(x0.shape[0], dtype=torch.bool, device=x0.device)  # [B]
        if c.held_stream_p > 0:
            x, sigma, held = self._hold_streams(model, x0, x, sigma, gen)  # held [B, S]
            held_rows = held.any(1)
        weight = torch.where(held_rows, c.held_weight, 1.0)  # [B]
        target = self._targets(z, x, sigma, held_rows, cond)
        if c.held_data_streams and held_rows.any():
            target = self._data_targets(model, x0, target, held)
        pred = bind(model, cond)(x, sigma)
        if c.joint_edit_stream >= 0 and not held_rows.all():
            given = target if c.joint_edit_from == "teacher" else pred.detach()
            target = self._joint_edit_targets(model, z, target, given, held_rows, cond)
        return weight * self._distance(model, x0, pred, target)

    def _pooled_loss(self, model, x0, gen, cond):
        """teacher_reuse > 1: the first ceil(B / reuse) rows are fresh teacher samples (with the batch's conditions),
        added to the pool; the other rows replay pool rows drawn uniformly, each with the conditions it was made for."""
        b = x0.shape[0]
        fresh = -(-b // self.cfg.teacher_reuse)  # ceil
        z = self._noise(x0, gen)[:fresh]  # [F, C, *axes]
        cond_fresh = None if cond is None else {k: v[:fresh] for k, v in cond.items()}
        target = self._teacher_sample(z, cond_fresh)  # [F, C, *axes]
        self.pool.add(z, target, cond_fresh)
        idx = self._local(torch.randint(0, len(self.pool), (self._global(b - fresh),), generator=gen))  # [B - F]
        z_old, target_old, cond_old = self.pool.rows(idx.to(z.device))
        z, target = torch.cat([z, z_old]), torch.cat([target, target_old])  # [B, C, *axes]
        if cond is not None:
            cond = {k: torch.cat([v, cond_old[k]]) for k, v in cond_fresh.items()}
        pred = bind(model, cond)(self.cfg.sigma_max * z, _sig(z, self.cfg.sigma_max))
        return self._distance(model, x0, pred, target)

    def _distance(self, model, x0, pred, target):
        """Per-sample distance of the student's output to its target [B]: pseudo-Huber (per stream with
        per_stream) plus magnitude_weight x the complex streams' magnitude distance."""
        c = self.cfg
        if c.per_stream:
            loss = self._per_stream_distance(model, pred, target)
        else:
            loss = losses.pseudo_huber(pred, target, self._huber(x0))
        if c.magnitude_weight > 0:
            loss = loss + c.magnitude_weight * self._magnitude_distance(model, pred, target)
        return loss

    def _teacher_fn(self, cond):
        """The teacher's denoiser for these conditions: classifier-free guided at teacher_cfg_scale when it is not 1
        (rows whose conditions were dropped get the unconditional teacher: guidance of null by null is null)."""
        data_cond = data_conditions(cond)
        if self.cfg.teacher_cfg_scale == 1.0 or not data_cond:
            return bind(self.teacher, cond)
        return self.guided_teacher(data_cond, self.cfg.teacher_cfg_scale)

    @torch.no_grad()
    def _teacher_sample(self, z, cond):
        """The teacher's deterministic K-step sample from noise z [B, C, *axes] for these conditions."""
        return multistep_fixed_noise(self._teacher_fn(cond), z, self.teacher_sigmas(), self.cfg.sigma_min)

    @torch.no_grad()
    def _targets(self, z, x, sigma, held_rows, cond):
        """The teacher's K-step sample for the rows that generate both streams, its one-step output (the edit) for
        the rows holding a stream: each row costs the teacher K evaluations or one, never both."""
        if not held_rows.any():  # every row joint: the whole batch in one K-step sample
            return self._teacher_sample(z, cond)
        target = None
        for rows, one_step in ((~held_rows, False), (held_rows, True)):
            if not rows.any():
                continue
            f = self._teacher_fn(None if cond is None else {k: v[rows] for k, v in cond.items()})
            out = f(x[rows], sigma[rows]) if one_step else multistep_fixed_noise(
                f, z[rows], self.teacher_sigmas(), self.cfg.sigma_min)
            if target is None:  # the teacher's dtype (bf16 under autocast), as the all-joint path returns
                target = out.new_empty(z.shape)  # [B, C, *axes]
            target[rows] = out
        return target

    @torch.no_grad()
    def _joint_edit_targets(self, model, z, target, given, held_rows, cond):
        """Joint rows: stream joint_edit_stream of the target becomes the student's joint_edit_steps-step edit of
        it, the other streams held clean at their values in `given` (the teacher's targets or the student's own
        output); the other streams' targets stay (no-gradient evaluations of those rows)."""
        c = self.cfg
        sizes = self.stream_sizes_for(model, "method.joint_edit_stream")
        if c.joint_edit_stream >= len(sizes):
            raise UserError(f"method.joint_edit_stream {c.joint_edit_stream} is not a stream of this backbone "
                            f"(streams 0..{len(sizes) - 1})")
        rows = ~held_rows  # [B]
        held = torch.ones(len(sizes), dtype=torch.bool)  # [S]: every stream but the edited one
        held[c.joint_edit_stream] = False
        f = bind(model, None if cond is None else {k: v[rows] for k, v in cond.items()})
        target = target.to(z.dtype).clone()  # [B, C, *axes]
        # the edit sampler, started from the rows' own noise
        sigmas = default_step_sigmas(c.joint_edit_steps, c.sigma_min, c.sigma_max, c.rho)
        edit = given_streams_multistep(f, given[rows].to(z.dtype), held, sizes, sigmas, c.sigma_min,
                                       noise=z[rows]).to(z.dtype)  # [R, C, *axes]
        free = streams.per_element((~held)[None].expand(edit.shape[0], -1).to(z.dtype), edit, sizes)
        target[rows] = free * edit + (1 - free) * target[rows]  # only the edited stream changes
        return target

    def _data_targets(self, model, x0, target, held):
        """In the held rows, the free streams listed in held_data_streams take the data's values as their target."""
        sizes = self.stream_sizes_for(model, "method.held_data_streams")
        bad = [i for i in self.cfg.held_data_streams if i >= len(sizes)]
        if bad:
            raise UserError(f"method.held_data_streams {bad[0]} is not a stream of this backbone "
                            f"(streams 0..{len(sizes) - 1})")
        listed = torch.zeros(len(sizes), dtype=torch.bool, device=held.device)  # [S]
        listed[list(self.cfg.held_data_streams)] = True
        from_data = held.any(1, keepdim=True) & ~held & listed  # [B, S]: free streams of held rows, listed
        data = x0
        if self.cfg.held_data_magnitude:
            kinds = streams.complex_streams(model) or [False] * len(sizes)
            not_complex = [i for i in self.cfg.held_data_streams if not kinds[i]]
            if not_complex:
                raise UserError(f"method.held_data_magnitude: stream {not_complex[0]} of this backbone is not complex")
            parts = zip(x0.flatten(1).split(sizes, 1), target.flatten(1).split(sizes, 1))
            data = torch.cat([streams.with_magnitude(t, d) if i in self.cfg.held_data_streams else d
                              for i, (d, t) in enumerate(parts)], 1).reshape(x0.shape)  # data magnitudes, target phases
        use = streams.per_element(from_data.to(x0.dtype), x0, sizes)  # 1 on those streams' elements
        return use * data + (1 - use) * target.to(x0.dtype)

    def _magnitude_distance(self, model, pred, target):
        """Pseudo-Huber distance of the magnitudes of the complex streams (c of iCT for their count) [B]."""
        return losses.magnitude_distance(pred, target, *self.complex_layout(model, pred, "method.magnitude_weight"))

    def _per_stream_distance(self, model, pred, target):
        """Sum over streams of the pseudo-Huber distance of each stream's elements (c of iCT for its size)."""
        sizes = self.stream_sizes_for(model, "method.per_stream")
        parts = zip(pred.flatten(1).split(sizes, dim=1), target.flatten(1).split(sizes, dim=1))
        return sum(losses.pseudo_huber(p, t, losses.pseudo_huber_c(n)) for (p, t), n in zip(parts, sizes))

    def _hold_streams(self, model, x0, x, sigma, gen):
        """A share held_stream_p of the samples holds one stream clean at sigma_min, from the data, as the stream
        edit sampler (`given_streams_multistep`) gives it: (input, sigma [B, S], held streams [B, S])."""
        sizes = self.stream_sizes_for(model, "method.held_stream_p")
        held = self._local(streams.clean_stream_mask(self._global(x0.shape[0]), len(sizes), self.cfg.held_stream_p,
                                                     gen)).to(x0.device)  # [B, S]
        keep = streams.per_element(held.to(x0.dtype), x0, sizes)  # 1 on the held streams' elements
        x = keep * x0 + (1 - keep) * x
        return x, streams.hold_streams(sigma, held, self.cfg.sigma_min), held
