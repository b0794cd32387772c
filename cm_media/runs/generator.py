"""Python API: `load(source)` -> Generator with `generate(n, steps, seed, cond=...)` and `save(media, path)`.

SOURCE is a run directory, a checkpoint file, an exported folder or the name of a bundled model.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cm_media import checks
from cm_media.conditions import (
    GUIDANCE,
    INTERVAL,
    Condition,
    _values,
    frame_condition,
    guided_names,
    keep_known_frames,
    null_like,
    request_tensors,
)
from cm_media.errors import UserError
from cm_media.math import streams
from cm_media.math.guidance import bind, classifier_free
from cm_media.math.kinds import Kind, SamplePlan, kind_of
from cm_media.math.samplers import default_step_sigmas, given_streams_multistep, masked_multistep, slerp
from cm_media.methods import METHODS
from cm_media.runs.config import RunConfig
from cm_media.runs.loader import load_run, resolve_source
from cm_media.runs.precision import bf16_is_fast

__all__ = ["Generator", "SampleOptions", "apply_speed_options", "load", "resolve_source"]


@dataclass
class SampleOptions:
    """Generation options after defaults: what was asked for, else the run's `sample` section."""

    steps: int
    bf16: bool
    batch_size: int
    cfg_scale: float | None
    guide: list[str] | None = None  # the conditions guidance pushes towards (empty: all); None: the run's sample.guide


class Generator:
    """A trained model ready to sample: EMA weights, codec, conditions and the modality's file writers."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, codec, modality, device, source: Path,
                 conditions: list[Condition] | None = None):
        self.cfg, self.model, self.codec, self.modality = cfg, model, codec, modality
        self.device, self.source = device, source
        self.conditions = conditions if conditions is not None else []
        self._bf16_twin: torch.nn.Module | None = None

    # ------------------------------------------------------------------ options, network, conditions

    def options(self, steps: int | None = None, bf16: bool | None = None, batch_size: int | None = None,
                cfg_scale: float | None = None, guide: list[str] | None = None) -> SampleOptions:
        """The one place generation defaults are resolved (generate, interpolate, edit and bench use it). `guide`
        names the conditions guidance pushes towards ([] all; None: the run's `sample.guide`)."""
        s = self.cfg.sample
        steps = checks.steps(s.steps if steps is None else steps)
        batch_size = checks.batch_size(s.batch_size if batch_size is None else batch_size)
        cfg_scale = s.cfg_scale if cfg_scale is None else cfg_scale
        if cfg_scale is not None:
            cfg_scale = checks.number(cfg_scale, "--cfg-scale", 0)
        if bf16 is None:  # the run's default asks for bf16 where it is fast: float32 on an AVX2-only CPU
            bf16 = bool(s.bf16) and bf16_is_fast(self.device)
        guide = list(s.guide or []) if guide is None else list(guided_names(self.conditions, guide) or [])
        return SampleOptions(steps, bf16, batch_size, cfg_scale, guide)

    def shape(self, **options: Any) -> tuple[int, ...]:
        """(C, *axes) of one sample with the modality's options (e.g. seconds); at most checks.MAX_SAMPLE_ELEMENTS
        model values (the modality states its limit in its own units first). An option the modality does not
        honour (--seconds for the sounding-digits model, whose clips have one length) is an error, not ignored."""
        unknown = sorted(k for k, v in options.items() if v is not None and k not in self.modality.option_names())
        if unknown:
            flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
            takes = ", ".join("--" + k.replace("_", "-") for k in sorted(self.modality.option_names()))
            raise UserError(f"{flags}: not an option of this {self.modality.name} model ({self.source}), which "
                            + (f"takes {takes}" if takes else "takes no generate options"))
        shape = tuple(self.modality.sample_shape(self.cfg, self.codec, **options))
        if math.prod(shape) > checks.MAX_SAMPLE_ELEMENTS:
            raise UserError(f"one sample of shape {shape} holds {math.prod(shape):,} model values, above the limit "
                            f"of {checks.MAX_SAMPLE_ELEMENTS:,}")
        return shape

    def batch_for(self, shape: tuple[int, ...], batch_size: int | None = None) -> int:
        """Samples per batch: --batch-size as given (at most checks.MAX_BATCH_ELEMENTS model values), else the
        config's batch, made smaller for long samples so a batch stays within checks.DEFAULT_BATCH_ELEMENTS."""
        per = math.prod(shape)
        if batch_size is not None:
            b = checks.batch_size(batch_size)
            if b * per > checks.MAX_BATCH_ELEMENTS:
                raise UserError(f"--batch-size {b} of samples with {per:,} model values each exceeds the limit of "
                                f"{checks.MAX_BATCH_ELEMENTS:,} values per batch (--batch-size "
                                f"{max(1, checks.MAX_BATCH_ELEMENTS // per)} or less)")
            return b
        return max(1, min(self.options().batch_size, checks.DEFAULT_BATCH_ELEMENTS // per))

    def batch_conditions(self, cond: dict | None, n: int, seed: int | None = None):
        """(start, b) -> the condition tensors of samples start..start+b-1 of an n-sample request, without
        building all n (lists cycle, so one period of the request is enough).

        A request that names no condition, given a `seed`, draws a class per sample for each class condition
        (uniformly, from its own generator so the noise is the same as for any other request): "any digit" is
        the mixture of the classes, which the network renders far better than its "no condition" entry (trained
        on 10% of samples). `--cfg-scale 0` with a named class still reaches that entry."""
        classes = [c for c in self.conditions if c.kind == "class"]
        if not cond and classes and seed is not None:
            # drawn batch by batch as the batches come (in order), so memory does not grow with n; one generator per
            # condition gives the same classes as drawing all n at once
            gens = {c.name: torch.Generator().manual_seed(seed + 7919 + i) for i, c in enumerate(classes)}
            return lambda start, b: {c.name: torch.randint(len(c.classes), (b,), generator=gens[c.name])
                                     for c in classes}
        period = 1
        for value in (cond or {}).values():
            period = math.lcm(period, max(1, len(_values(value))))
        period = min(period, n)
        base = self.cond_tensors(cond, period)  # checks the request before any work
        return lambda start, b: {k: v[torch.arange(start, start + b) % period] for k, v in base.items()}

    def _finite(self, media: torch.Tensor) -> torch.Tensor:
        """Decoded media must be finite: NaN would be written as silence or black frames with exit status 0."""
        if not torch.isfinite(media).all():
            raise UserError(f"the model produced non-finite values (NaN or infinity) from {self.source}; its weights "
                            "or the options asked for (--cfg-scale, --guidance, --sigmas) are out of range")
        return media

    def net(self, bf16: bool) -> torch.nn.Module:
        """The model to call: with bf16, a twin whose conv/linear weights are stored in bf16 (built once).

        Under autocast the float32 model re-casts every weight at every call; with the small CPU models that was
        ~20% of a one-step sample (hundreds of small copies). Same results: autocast rounds them the same way."""
        compiled = hasattr(getattr(self.model, "backbone", None), "_orig_mod")  # torch.compile'd: keep its graph
        if not bf16 or compiled:
            return self.model
        if self._bf16_twin is None:
            twin = copy.deepcopy(self.model)
            for m in twin.modules():
                if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
                    m.to(torch.bfloat16)
            self._bf16_twin = twin
        return self._bf16_twin

    @property
    def kind(self) -> Kind:
        """The network's parameterization: its sampler entry and NFE count (math/kinds.py)."""
        return kind_of(self.model.kind)

    @property
    def is_consistency(self) -> bool:
        """A few-step model (consistency, TrigFlow or MeanFlow), not an EDM diffusion model."""
        return self.kind.few_step

    @property
    def guided_student(self) -> bool:
        """True for a guided-distilled model: it takes the guidance scale as an input (one evaluation per step)."""
        return any(c.name == GUIDANCE for c in self.conditions)

    def condition_spec(self) -> dict[str, list | str]:
        """What this model can be asked for: {condition name: class names or a kind of value}."""
        return {c.name: c.describe() for c in self.conditions if c.name not in (GUIDANCE, INTERVAL)}

    def cond_tensors(self, cond: dict | None, n: int) -> dict[str, torch.Tensor]:
        """A request {name: value or values} for n samples -> tensors (lists cycle over the samples)."""
        if cond and GUIDANCE in cond:
            raise UserError(f"{GUIDANCE!r} is set with --cfg-scale, not as a condition")
        if cond and INTERVAL in cond:
            raise UserError(f"{INTERVAL!r} is the MeanFlow network's second time, set by the sampler")
        return request_tensors(self.conditions, self.frame_values(cond), n)

    def frame_values(self, cond: dict | None) -> dict | None:
        """Frame conditions given as a file (a picture or clip to animate) -> model-space values [1, C + 1, k, ...]:
        read at the model's format by the modality, encoded by the codec."""
        frames = {c.name: c for c in self.conditions if c.kind == "frames"}
        if not cond or not frames.keys() & cond.keys():
            return cond
        out = dict(cond)
        for name, c in frames.items():
            value = out.get(name)
            if value is None or isinstance(value, torch.Tensor):
                continue
            values = []  # one file, or a list of files that cycles over the samples
            for file in value if isinstance(value, (list, tuple)) else [value]:
                media = self.modality.read(Path(str(file)), self.cfg, self.codec)  # [1, C, T, ...]
                with torch.no_grad():
                    values.append(frame_condition(c, self.codec.encode(media.to(self.device)).float().cpu()))
            out[name] = torch.cat(values)
        return out

    def conditioned(self, net: torch.nn.Module, cond: dict[str, torch.Tensor], cfg_scale: float | None,
                    guide: list[str] | None = None):
        """f(x, sigma) with the conditions bound: a guided student gets the scale as an input; any other
        conditional model with a scale other than 1 gets classifier-free guidance (two evaluations in one batch),
        towards the conditions `guide` names (None: the run's `sample.guide`; all when empty: the unguided
        evaluation drops only those). Given frames (a first frame to animate) are kept exactly in every estimate
        (`keep_known_frames`)."""
        cond = {k: v.to(self.device) for k, v in cond.items()}
        if self.guided_student:
            w = 1.0 if cfg_scale is None else cfg_scale
            f = lambda x, s: net(x, s, {**cond, GUIDANCE: torch.full((x.shape[0],), w, device=x.device)})  # noqa: E731
        elif cfg_scale is None or cfg_scale == 1 or not cond:
            f = bind(net, cond)
        else:
            names = guided_names(self.conditions, self.cfg.sample.guide if guide is None else guide)
            null = null_like(self.conditions, cond, names)
            f = classifier_free(net, cond, null, cfg_scale)
        return keep_known_frames(f, self.conditions, cond) if self.kind.estimates_x0 else f

    # ------------------------------------------------------------------ sampling

    def step_sigmas(self, steps: int) -> list[float]:
        """Noise levels of a `steps`-step consistency sample: the config's `sample.sigmas` or a Karras grid."""
        custom = self.cfg.sample.sigmas.get(steps, self.cfg.sample.sigmas.get(str(steps)))
        if custom is not None:
            if len(custom) != steps:
                raise UserError(f"sample.sigmas for {steps} step(s) lists {len(custom)} noise levels")
            return [float(s) for s in custom]
        m = self.cfg.method
        return default_step_sigmas(steps, m.sigma_min, m.sigma_max, m.rho)

    @torch.no_grad()
    def decode(self, x: torch.Tensor, bf16: bool = False) -> torch.Tensor:
        """Model tensors [B, C, *axes] -> float32 media on the CPU. A learned codec (an nn.Module with weights)
        decodes under bf16 autocast when sampling does: its decoder was 62-75% of a latent video model's one-step
        time in float32. Fixed codecs (pixels, STFT) stay in float32."""
        learned = isinstance(self.codec, torch.nn.Module) and next(self.codec.parameters(), None) is not None
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16 and learned):
            out = self.codec.decode(x.float())
        return self._finite(out.float().cpu())

    def sample(self, noise: torch.Tensor, steps: int, generator: torch.Generator | None = None, bf16: bool = False,
               cond: dict[str, torch.Tensor] | None = None, cfg_scale: float | None = None,
               guide: list[str] | None = None):
        """Model-space sample from noise [B, C, *axes] by the network's kind (consistency steps, EDM Heun, MeanFlow
        jumps; math/kinds.py). `cond` holds tensors for this batch (see cond_tensors)."""
        net = self.net(bf16)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16):
            return self.kind.sample(net, lambda fn: self.conditioned(fn, cond or {}, cfg_scale, guide), noise, steps,
                                    self.sample_plan(generator))

    def sample_plan(self, generator: torch.Generator | None = None) -> SamplePlan:
        """The run's noise range, step levels and solver, for the kind's sampler entry."""
        m, s = self.cfg.method, self.cfg.sample
        return SamplePlan(self.step_sigmas, m.sigma_min, m.sigma_max, m.rho, frozenset(int(k) for k in s.sigmas),
                          s.sampler, generator)

    def generate(
        self, n: int = 1, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
        bf16: bool | None = None, cond: dict | None = None, cfg_scale: float | None = None,
        guide: list[str] | None = None, **options: Any,
    ) -> torch.Tensor:
        """Generate n samples in batches and decode them to media tensors (images/videos in [0, 1], audio in [-1, 1]).

        `cond` asks for conditions by name, e.g. {"class": ["7", "3"]} (values cycle over the samples); `cfg_scale`
        is the classifier-free guidance scale (1: unguided, 0: unconditional), `guide` the conditions it pushes
        towards, e.g. ["instrument"] (the pitch held in both evaluations; default: the model's `sample.guide`)."""
        return torch.cat(list(self.generate_batches(n, steps, seed, batch_size, bf16, cond, cfg_scale, guide,
                                                    **options)))

    def generate_batches(
        self, n: int = 1, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
        bf16: bool | None = None, cond: dict | None = None, cfg_scale: float | None = None,
        guide: list[str] | None = None, **options: Any,
    ) -> Iterator[torch.Tensor]:
        """`generate` one decoded batch at a time (the same samples in the same order), so memory holds one batch
        whatever n is. Every option is checked here, before the first batch is made."""
        n, seed = checks.count(n), checks.seed(seed)
        shape = self.shape(**options)
        opt = self.options(steps, bf16, None, cfg_scale, guide)
        per_batch = self.batch_for(shape, batch_size)
        conds = self.batch_conditions(cond, n, seed)

        def batches():
            gen = torch.Generator().manual_seed(seed)
            for start in range(0, n, per_batch):
                b = min(per_batch, n - start)
                noise = torch.randn((b, *shape), generator=gen).to(self.device)  # [B, C, *axes]
                x = self.sample(noise, opt.steps, gen, opt.bf16, conds(start, b), opt.cfg_scale, opt.guide)
                yield self.decode(x, opt.bf16)

        return batches()

    def edit(self, media: torch.Tensor, mask: torch.Tensor, steps: int | None = None, seed: int = 0,
             bf16: bool | None = None, init: torch.Tensor | None = None,
             sigmas: list[float] | None = None, guidance: float = 0.0, cond: dict | None = None,
             cfg_scale: float | None = None, guide: list[str] | None = None) -> torch.Tensor:
        """Regenerate the model-space region where mask = 1 and keep the rest exactly (media [B, ...] in, out).

        `init` (media like `media`) is a first guess for the masked region, refined from `sigmas` (default: the
        model's step sigmas, which start at sigma_max and so ignore most of the guess); `guidance` > 0 adds
        reconstruction guidance (a backward pass per step); see masked_multistep."""
        if not self.is_consistency:
            raise UserError("editing needs a consistency model; this run is an EDM diffusion model")
        opt = self.options(max(self.cfg.sample.steps, 2) if steps is None else steps, bf16, None, cfg_scale, guide)
        seed = checks.seed(seed)
        guidance = checks.number(guidance, "--guidance", 0, 1e6)
        m = self.cfg.method
        if sigmas is not None:
            sigmas = [checks.number(s, "--sigmas", 0, m.sigma_max, lo_open=True) for s in sigmas]
            if not sigmas or any(b > a for a, b in zip(sigmas, sigmas[1:])):
                raise UserError(f"--sigmas must be noise levels that never rise, got {sigmas}")
        if not torch.isfinite(media).all() or (init is not None and not torch.isfinite(init).all()):
            raise UserError("the input to edit holds non-finite values (NaN or infinity)")
        known = self.codec.encode(media.to(self.device))  # [B, C, *axes]
        if mask.shape[2:] != known.shape[2:]:
            raise UserError(f"mask shape {tuple(mask.shape)} does not fit the input's model shape {tuple(known.shape)}")
        guess = None if init is None else self.codec.encode(init.to(self.device))
        gen = torch.Generator().manual_seed(seed)
        sigmas = self.step_sigmas(opt.steps) if sigmas is None else sigmas
        f = self.conditioned(self.net(opt.bf16), self.cond_tensors(cond, known.shape[0]), opt.cfg_scale,
                             opt.guide)
        held = self.held_streams(mask) if guess is None and not guidance else None
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=opt.bf16):
            if held is not None:  # whole streams kept: they enter clean, so even one step generates from them
                x = given_streams_multistep(f, known, held, streams.stream_sizes(self.model), sigmas,
                                            self.cfg.method.sigma_min, gen)
            else:
                x = masked_multistep(f, known, mask.to(self.device), sigmas, self.cfg.method.sigma_min, gen,
                                     init=guess, guidance=guidance)
        out = self.decode(x, opt.bf16)
        if out.ndim == media.ndim and all(o >= m for o, m in zip(out.shape, media.shape)):
            out = out[tuple(slice(0, m) for m in media.shape)]  # framed codecs decode to whole hops: the input's length
        return out

    def held_streams(self, mask: torch.Tensor) -> torch.Tensor | None:
        """The streams an edit keeps whole ([S] bool), where the network generates from them (the method's
        `edits_given_streams`: iCT with clean_stream_p > 0, kd); None: the edit takes the zero-shot masked sampler."""
        if not METHODS[self.cfg.method.name].edits_given_streams(self.cfg.method):
            return None
        return streams.held_by_mask(mask, streams.stream_sizes(self.model))

    def interpolate(self, n: int, seed_a: int = 0, seed_b: int = 1, steps: int | None = None, bf16: bool | None = None,
                    cond: dict | None = None, cfg_scale: float | None = None, guide: list[str] | None = None,
                    **options: Any):
        """n samples along the slerp path between the noises of two seeds (same shape options as generate)."""
        return torch.cat(list(self.interpolate_batches(n, seed_a, seed_b, steps, bf16, cond, cfg_scale,
                                                       guide=guide, **options)))

    def interpolate_batches(self, n: int, seed_a: int = 0, seed_b: int = 1, steps: int | None = None,
                            bf16: bool | None = None, cond: dict | None = None, cfg_scale: float | None = None,
                            batch_size: int | None = None, guide: list[str] | None = None,
                            **options: Any) -> Iterator[torch.Tensor]:
        """`interpolate` one decoded batch at a time; options are checked before the first batch."""
        n, seed_a, seed_b = checks.count(n), checks.seed(seed_a), checks.integer(seed_b, "seed", 0, 2**63 - 1)
        shape = self.shape(**options)
        opt = self.options(steps, bf16, None, cfg_scale, guide)
        per_batch = self.batch_for(shape, batch_size)
        conds = self.batch_conditions(cond, n)  # a slerp path keeps "no condition": a class per sample would jump

        def batches():
            z0 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_a))
            z1 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_b))
            gen = torch.Generator().manual_seed(seed_a)
            for start in range(0, n, per_batch):
                b = min(per_batch, n - start)
                alphas = [(start + i) / (n - 1) if n > 1 else 0.0 for i in range(b)]
                noise = torch.cat([slerp(z0, z1, a) for a in alphas]).to(self.device)
                x = self.sample(noise, opt.steps, gen, opt.bf16, conds(start, b), opt.cfg_scale, opt.guide)
                yield self.decode(x, opt.bf16)

        return batches()

    def open_writer(self, path: str | Path, n: int, **options: Any):
        """The modality's writer for n samples at `path` (checked now, before anything is generated)."""
        return self.modality.open_writer(Path(path), self.cfg, checks.count(n), **options)

    def save(self, media: torch.Tensor, path: str | Path, **options: Any) -> list[Path]:
        return self.modality.save(media, Path(path), self.cfg, **options)


def load(source: str | Path = "image", device: str = "auto", weights: str = "ema") -> Generator:
    """Load a run directory, checkpoint file, exported folder or bundled model name as a Generator (EMA weights)."""
    run = load_run(source, device, weights)
    if not kind_of(run.model.kind).generates:
        raise UserError(f"{run.path} is a codec run (method {run.cfg.method.name}): it generates nothing; name it in "
                        "a latent model's config (codec.kind: latent, codec.path)")
    apply_speed_options(run.model, run.cfg.sample.channels_last, run.cfg.sample.compile)
    return Generator(run.cfg, run.model, run.codec, run.modality, run.device, run.path, run.conditions)


def apply_speed_options(model: torch.nn.Module, channels_last: bool, compile: bool) -> None:
    """channels_last weights (4D/5D convs; inputs follow the weights' layout) and torch.compile of the backbone."""
    if channels_last:
        for m in model.modules():
            w = getattr(m, "weight", None)
            if isinstance(w, torch.nn.Parameter) and w.ndim in (4, 5):
                fmt = torch.channels_last if w.ndim == 4 else torch.channels_last_3d
                w.data = w.data.contiguous(memory_format=fmt)
    if compile:
        model.backbone = torch.compile(model.backbone, dynamic=True)
