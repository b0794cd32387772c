"""Python API: `load(source)` -> Generator with `generate(n, steps, seed)` and `save(media, path)`.

SOURCE is a run directory, a checkpoint file, or the name of a bundled pretrained model (a modality name).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import RunConfig, config_from_dict
from cm_media.errors import UserError
from cm_media.runs.model import build_model, resolve_device
from cm_media.registry import MODALITIES, get_modality
from cm_media.math.samplers import default_step_sigmas, edm_euler, edm_heun, edm_sigmas, masked_multistep, multistep, onestep, slerp


def resolve_source(source: str | Path) -> Path:
    """The checkpoint file behind a run directory, a checkpoint path or a bundled model name."""
    path = Path(source)
    if path.is_dir():
        latest = ckpt.latest_checkpoint(path)
        if latest is None:
            bundled = path / "model.safetensors"
            if bundled.is_file():
                return bundled
            raise UserError(f"no checkpoint in run directory {path}")
        return latest
    if path.is_file():
        return path
    if str(source) in MODALITIES:
        folder = get_modality(str(source)).pretrained_dir()
        if folder is None or not (folder / "model.safetensors").is_file():
            raise UserError(f"no bundled pretrained {source} model ships with this version")
        return folder / "model.safetensors"
    raise UserError(f"source not found: {source} (a run directory, a checkpoint file, or image/audio/video)")


class Generator:
    """A trained model ready to sample: EMA weights, codec and the modality's file writers."""

    def __init__(self, cfg: RunConfig, model: torch.nn.Module, codec, modality, device, source: Path):
        self.cfg, self.model, self.codec, self.modality = cfg, model, codec, modality
        self.device, self.source = device, source
        self._bf16_twin: torch.nn.Module | None = None

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
        return self.model.kind == "consistency"

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
    def sample(self, noise: torch.Tensor, steps: int, generator: torch.Generator | None = None, bf16: bool = False):
        """Model-space sample from noise [B, C, *axes]: consistency steps, or EDM Heun for a diffusion model."""
        m, net = self.cfg.method, self.net(bf16)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16):
            if self.is_consistency:
                sigmas = self.step_sigmas(steps)
                if steps == 1:
                    return onestep(net, noise, sigmas[0])
                return multistep(net, noise, sigmas, m.sigma_min, generator)
            solver = edm_euler if self.cfg.sample.sampler == "euler" else edm_heun
            return solver(net, noise, edm_sigmas(steps, m.sigma_min, m.sigma_max, m.rho))

    def generate(
        self, n: int = 1, steps: int | None = None, seed: int = 0, batch_size: int | None = None,
        bf16: bool | None = None, **options: Any,
    ) -> torch.Tensor:
        """Generate n samples in batches and decode them to media tensors (images/videos in [0, 1], audio in [-1, 1])."""
        if n < 1:
            raise UserError("-n must be >= 1")
        steps = steps or self.cfg.sample.steps
        if steps < 1:
            raise UserError("--steps must be >= 1")
        shape = self.modality.sample_shape(self.cfg, self.codec, **options)
        gen = torch.Generator().manual_seed(seed)
        batch_size = batch_size or self.cfg.sample.batch_size
        bf16 = self.cfg.sample.bf16 if bf16 is None else bf16
        out = []
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            noise = torch.randn((b, *shape), generator=gen).to(self.device)  # [B, C, *axes]
            x = self.sample(noise, steps, gen, bf16)
            out.append(self.codec.decode(x.float()).cpu())
        return torch.cat(out)

    def edit(self, media: torch.Tensor, mask: torch.Tensor, steps: int | None = None, seed: int = 0,
             bf16: bool | None = None, init: torch.Tensor | None = None,
             sigmas: list[float] | None = None, guidance: float = 0.0) -> torch.Tensor:
        """Regenerate the model-space region where mask = 1 and keep the rest exactly (media [B, ...] in, out).

        `init` (media like `media`) is a first guess for the masked region, refined from `sigmas` (default: the
        model's step sigmas, which start at sigma_max and so ignore most of the guess); `guidance` > 0 adds
        reconstruction guidance (a backward pass per step); see masked_multistep."""
        if not self.is_consistency:
            raise UserError("editing needs a consistency model; this run is an EDM diffusion model")
        steps = steps or max(self.cfg.sample.steps, 2)
        known = self.codec.encode(media.to(self.device))  # [B, C, *axes]
        if mask.shape[2:] != known.shape[2:]:
            raise UserError(f"mask shape {tuple(mask.shape)} does not fit the input's model shape {tuple(known.shape)}")
        guess = None if init is None else self.codec.encode(init.to(self.device))
        gen = torch.Generator().manual_seed(seed)
        sigmas = self.step_sigmas(steps) if sigmas is None else [float(s) for s in sigmas]
        bf16 = self.cfg.sample.bf16 if bf16 is None else bf16
        with torch.no_grad(), torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16):
            x = masked_multistep(self.net(bf16), known, mask.to(self.device), sigmas, self.cfg.method.sigma_min, gen,
                                 init=guess, guidance=guidance)
        return self.codec.decode(x.float()).cpu()

    def interpolate(self, n: int, seed_a: int = 0, seed_b: int = 1, steps: int | None = None, **options: Any):
        """n samples along the slerp path between the noises of two seeds (same shape options as generate)."""
        shape = self.modality.sample_shape(self.cfg, self.codec, **options)
        z0 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_a))
        z1 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(seed_b))
        alphas = torch.linspace(0, 1, n).tolist() if n > 1 else [0.0]
        noise = torch.cat([slerp(z0, z1, a) for a in alphas]).to(self.device)
        x = self.sample(noise, steps or self.cfg.sample.steps, torch.Generator().manual_seed(seed_a))
        return self.codec.decode(x.float()).cpu()

    def save(self, media: torch.Tensor, path: str | Path, **options: Any) -> list[Path]:
        return self.modality.save(media, Path(path), self.cfg, **options)


def load(source: str | Path = "image", device: str = "auto", weights: str = "ema") -> Generator:
    """Load a run directory, checkpoint file or bundled model name as a Generator (EMA weights by default)."""
    path = resolve_source(source)
    tensors, meta = ckpt.load_checkpoint(path)
    if "config" not in meta:
        raise UserError(f"{path} has no run config in its metadata")
    cfg = config_from_dict(meta["config"])
    modality, codec, model = build_model(cfg)
    state = ckpt.prefixed(tensors, weights) or ckpt.prefixed(tensors, "model")
    # exported models may store bf16 weights; compute in float32 (autocast decides the matmul precision)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path} does not match its config: {str(exc).splitlines()[0]}") from None
    dev = resolve_device(device)
    model.to(dev).eval()
    apply_speed_options(model, cfg.sample.channels_last, cfg.sample.compile)
    return Generator(cfg, model, codec, modality, dev, path)


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
