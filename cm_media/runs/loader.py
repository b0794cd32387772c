"""One way in for every trained model: a run directory, a checkpoint file, an exported folder or a bundled model
name becomes a `Run` (config, modality, codec, network, conditions). Generation, teacher loading, export and the
benchmark all load through here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cm_media.conditions import Condition
from cm_media.errors import UserError
from cm_media.registry import bundled_models, find_bundled
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import RunConfig, check_network_size, config_from_dict
from cm_media.runs.model import assemble, resolve_device


@dataclass
class Run:
    """A loaded model: its validated config, modality, codec (on the model's device) and network."""

    cfg: RunConfig
    modality: object
    codec: object
    model: torch.nn.Module
    conditions: list[Condition]
    path: Path
    meta: dict = field(default_factory=dict)
    device: torch.device = torch.device("cpu")


def resolve_source(source: str | Path) -> Path:
    """The checkpoint file behind a run directory, a checkpoint path, an exported folder or a bundled model name."""
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
    if (bundled := find_bundled(str(source))) is not None:  # a bundled model name: image, audio, video, ...
        return bundled
    names = ", ".join(bundled_models()) or "none installed"
    raise UserError(f"source not found: {source} (a run directory, a checkpoint file, or a bundled model: {names})")


def weights_of(tensors: dict[str, torch.Tensor], weights: str = "ema") -> dict[str, torch.Tensor]:
    """The network's weights from a checkpoint (EMA by default, the raw weights where there is no EMA), in float32:
    exports may store bf16 and autocast decides the compute precision."""
    state = ckpt.prefixed(tensors, weights) or ckpt.prefixed(tensors, "model")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_codec_state(codec, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Restore a learned codec's weights saved with the run (`codec.*` tensors), where the codec has weights."""
    state = ckpt.prefixed(tensors, "codec")
    if not state:
        return
    if not isinstance(codec, torch.nn.Module):
        raise UserError(f"{path} holds codec weights but its codec {type(codec).__name__} takes none")
    try:
        codec.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    except RuntimeError as exc:
        raise UserError(f"codec weights in {path} do not match its config: {str(exc).splitlines()[0]}") from None


def checked_config(path: Path) -> RunConfig:
    """The run config a model file claims, checked against the file before anything is allocated: the config
    validates (ranges, a network of at most checks.MAX_PARAMETERS), and the network it describes is no larger
    than the weights the file holds (a small file cannot make us build a huge network)."""
    shapes, meta = ckpt.read_header(path)
    if not isinstance(meta.get("config"), dict):
        raise UserError(f"{path} has no run config in its metadata")
    cfg = config_from_dict(meta["config"])
    claimed = check_network_size(cfg)
    held = sum(math.prod(s) for name, s in shapes.items() if name.startswith(("ema.", "model.")))
    if claimed > 1.1 * held + 100_000:
        raise UserError(f"{path} is inconsistent: its config describes a network of {claimed:,} parameters but the "
                        f"file holds {held:,} weights")
    return cfg


def load_run(source: str | Path, device: str | torch.device = "cpu", weights: str = "ema") -> Run:
    """Load any model source onto `device` in eval mode (EMA weights by default)."""
    path = resolve_source(source)
    cfg = checked_config(path)
    tensors, meta = ckpt.load_checkpoint(path)
    bad = ckpt.non_finite(weights_of(tensors, weights))
    if bad:
        raise UserError(f"{path} holds non-finite weights ({bad[0]}): the run diverged; use an earlier checkpoint")
    parts = assemble(cfg)
    modality, codec, model = parts.modality, parts.codec, parts.model
    try:
        model.load_state_dict(weights_of(tensors, weights))
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path} does not match its config: {str(exc).splitlines()[0]}") from None
    load_codec_state(codec, tensors, path)
    dev = resolve_device(device) if isinstance(device, str) else device
    model.to(dev).eval()
    if isinstance(codec, torch.nn.Module):
        codec.to(dev).eval()
    return Run(cfg, modality, codec, model, parts.conditions, path, meta, dev)
