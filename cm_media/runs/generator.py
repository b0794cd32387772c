"""Python API: `load(source)` -> Generator with `generate(n, steps, seed, cond=...)` and `save(media, path)`.

SOURCE is a run directory, a checkpoint file, an exported folder or the name of a bundled model.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cm_media.conditions import GUIDANCE, INTERVAL, Condition, null_like, request_tensors
from cm_media.errors import UserError
from cm_media.math.guidance import bind, classifier_free
from cm_media.math.samplers import (
    default_step_sigmas,
    edm_euler,
    edm_heun,
    edm_sigmas,
    masked_multistep,
    meanflow_sample,
    meanflow_times,
    multistep,
    onestep,
    slerp,
)
from cm_media.runs.config import RunConfig
from cm_media.runs.loader import load_run, resolve_source

__all__ = ["Generator", "SampleOptions", "apply_speed_options", "load", "resolve_source"]


@dataclass
class SampleOptions:
    """Generation options after defaults: what was asked for, else the run's `sample` section."""

    steps: int
    bf16: bool
    batch_size: int
    cfg_scale: float | None


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
                cfg_scale: float | None = None) -> SampleOptions:
        """The one place generation defaults are resolved (generate, interpolate, edit and bench use it)."""
        s = self.cfg.sample
        steps = s.steps if steps is None else steps
        if steps < 1:
            raise UserError(f"--steps must be >= 1, got {steps}")
        batch_size = s.batch_size if batch_size is None else batch_size
        if batch_size < 1:
            raise UserError(f"--batch-size must be >= 1, got {batch_size}")
        cfg_scale = s.cfg_scale if cfg_scale is None else cfg_scale
        if cfg_scale is not None and not (cfg_scale >= 0 and cfg_scale < float("inf")):
            raise UserError(f"--cfg-scale must be a finite number >= 0, got {cfg_scale}")
        return SampleOptions(steps, s.bf16 if bf16 is None else bf16, batch_size, cfg_scale)

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
    def is_consistency(self) -> bool:
        """A few-step model (consistency, TrigFlow or MeanFlow), not an EDM diffusion model."""
        return self.model.kind != "edm"

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
        return request_tensors(self.conditions, cond, n)

    def conditioned(self, net: torch.nn.Module, cond: dict[str, torch.Tensor], cfg_scale: float | None):
        """f(x, sigma) with the conditions bound: a guided student gets the scale as an input; any other
        conditional model with a scale other than 1 gets classifier-free guidance (two evaluations in one batch)."""
        cond = {k: v.to(self.device) for k, v in cond.items()}
        if self.guided_student:
            w = 1.0 if cfg_scale is None else cfg_scale
            return lambda x, s: net(x, s, {**cond, GUIDANCE: torch.full((x.shape[0],), w, device=x.device)})
        if cfg_scale is None or cfg_scale == 1 or not cond:
            return bind(net, cond)
        return classifier_free(net, cond, null_like(self.conditions, cond), cfg_scale)

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
    def sample(self, noise: torch.Tensor, steps: int, generator: torch.Generator | None = None, bf16: bool = False,
               cond: dict[str, torch.Tensor] | None = None, cfg_scale: float | None = None):
        """Model-space sample from noise [B, C, *axes]: consistency steps, or EDM Heun for a diffusion model.
        `cond` holds tensors for this batch (see cond_tensors)."""
        m = self.cfg.method
        if self.model.kind == "meanflow":
            return self.sample_meanflow(noise, steps, bf16, cond, cfg_scale)
        f = self.conditioned(self.net(bf16), cond or {}, cfg_scale)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16):
            if self.is_consistency:
                sigmas = self.step_sigmas(steps)
                if steps == 1:
                    return onestep(f, noise, sigmas[0])
                return multistep(f, noise, sigmas, m.sigma_min, generator)
            solver = edm_euler if self.cfg.sample.sampler == "euler" else edm_heun
            return solver(f, noise, edm_sigmas(steps, m.sigma_min, m.sigma_max, m.rho))

    def sample_meanflow(self, noise: torch.Tensor, steps: int, bf16: bool = False, cond: dict | None = None,
                        cfg_scale: float | None = None) -> torch.Tensor:
        """MeanFlow: z_r = z_t - (t - r) u(z_t, r, t) from t = 1 to 0 in `steps` jumps (uniform, or at the config's
        sample.sigmas converted to flow times), one evaluation each; guidance as for any conditional model."""
        net = self.net(bf16)

        def u_as_denoiser(z, rt, c=None):  # (r, t) travel as one [B, 2] "noise level" through conditioned()
            return net.average_velocity(z, rt[:, 0], rt[:, 1], c)

        u = self.conditioned(u_as_denoiser, cond or {}, cfg_scale)
        custom = self.cfg.sample.sigmas.get(steps, self.cfg.sample.sigmas.get(str(steps)))
        times = meanflow_times(steps, None if custom is None else self.step_sigmas(steps))
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16):
            return meanflow_sample(lambda z, r, t: u(z, torch.stack([r, t], dim=1)), noise, times)

    def generate(
        self, n: int = 1, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
        bf16: bool | None = None, cond: dict | None = None, cfg_scale: float | None = None, **options: Any,
    ) -> torch.Tensor:
        """Generate n samples in batches and decode them to media tensors (images/videos in [0, 1], audio in [-1, 1]).

        `cond` asks for conditions by name, e.g. {"class": ["7", "3"]} (values cycle over the samples); `cfg_scale`
        is the classifier-free guidance scale (1: unguided, 0: unconditional)."""
        if n < 1:
            raise UserError(f"-n must be >= 1, got {n}")
        opt = self.options(steps, bf16, batch_size, cfg_scale)
        shape = self.modality.sample_shape(self.cfg, self.codec, **options)
        cond_all = self.cond_tensors(cond, n)
        gen = torch.Generator().manual_seed(seed)
        out = []
        for start in range(0, n, opt.batch_size):
            b = min(opt.batch_size, n - start)
            noise = torch.randn((b, *shape), generator=gen).to(self.device)  # [B, C, *axes]
            batch_cond = {k: v[start: start + b] for k, v in cond_all.items()}
            x = self.sample(noise, opt.steps, gen, opt.bf16, batch_cond, opt.cfg_scale)
            out.append(self.codec.decode(x.float()).cpu())
        return torch.cat(out)

    def edit(self, media: torch.Tensor, mask: torch.Tensor, steps: int | None = None, seed: int = 0,
             bf16: bool | None = None, init: torch.Tensor | None = None,
             sigmas: list[float] | None = None, guidance: float = 0.0, cond: dict | None = None,
             cfg_scale: float | None = None) -> torch.Tensor:
        """Regenerate the model-space region where mask = 1 and keep the rest exactly (media [B, ...] in, out).

        `init` (media like `media`) is a first guess for the masked region, refined from `sigmas` (default: the
        model's step sigmas, which start at sigma_max and so ignore most of the guess); `guidance` > 0 adds
        reconstruction guidance (a backward pass per step); see masked_multistep."""
        if not self.is_consistency:
            raise UserError("editing needs a consistency model; this run is an EDM diffusion model")
        opt = self.options(max(self.cfg.sample.steps, 2) if steps is None else steps, bf16, None, cfg_scale)
        known = self.codec.encode(media.to(self.device))  # [B, C, *axes]
        if mask.shape[2:] != known.shape[2:]:
            raise UserError(f"mask shape {tuple(mask.shape)} does not fit the input's model shape {tuple(known.shape)}")
        guess = None if init is None else self.codec.encode(init.to(self.device))
        gen = torch.Generator().manual_seed(seed)
        sigmas = self.step_sigmas(opt.steps) if sigmas is None else [float(s) for s in sigmas]
        f = self.conditioned(self.net(opt.bf16), self.cond_tensors(cond, known.shape[0]), opt.cfg_scale)
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=opt.bf16):
            x = masked_multistep(f, known, mask.to(self.device), sigmas, self.cfg.method.sigma_min, gen,
                                 init=guess, guidance=guidance)
        return self.codec.decode(x.float()).cpu()

    def interpolate(self, n: int, seed_a: int = 0, seed_b: int = 1, steps: int | None = None, bf16: bool | None = None,
                    cond: dict | None = None, cfg_scale: float | None = None, **options: Any):
        """n samples along the slerp path between the noises of two seeds (same shape options as generate)."""
        if n < 1:
            raise UserError(f"-n must be >= 1, got {n}")
        opt = self.options(steps, bf16, None, cfg_scale)
        shape = self.modality.sample_shape(self.cfg, self.codec, **options)
        z0 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_a))
        z1 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_b))
        alphas = torch.linspace(0, 1, n).tolist() if n > 1 else [0.0]
        noise = torch.cat([slerp(z0, z1, a) for a in alphas]).to(self.device)
        x = self.sample(noise, opt.steps, torch.Generator().manual_seed(seed_a), opt.bf16, self.cond_tensors(cond, n),
                        opt.cfg_scale)
        return self.codec.decode(x.float()).cpu()

    def save(self, media: torch.Tensor, path: str | Path, **options: Any) -> list[Path]:
        return self.modality.save(media, Path(path), self.cfg, **options)


def load(source: str | Path = "image", device: str = "auto", weights: str = "ema") -> Generator:
    """Load a run directory, checkpoint file, exported folder or bundled model name as a Generator (EMA weights)."""
    run = load_run(source, device, weights)
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
