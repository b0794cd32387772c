"""Backbone architectures by name (`backbone.arch`) and how a config section with a preset becomes a network."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from cm_media.conditions import as_conditions
from cm_media.errors import UserError
from cm_media.nn.embedding import FrameInputs

MAX_INT_VALUE = 65_536  # any integer in a backbone section (channels, blocks, heads, patch sizes, ...)
MAX_LIST_LENGTH = 64  # entries of a list in a backbone section (channel_mult, attention levels, ...)
# keys that multiply the module count: far lower limits, so even a dry build stays quick
MAX_BY_KEY = {"num_res_blocks": 64, "depth": 512, "num_heads": 1024}

# arch name -> (config dataclass, module class); other issues add the patch transformer and space-time nets.
ARCHS: dict[str, tuple[type, type]] = {}


def register_arch(name: str, config_cls: type, module_cls: type) -> None:
    """Make a backbone architecture available to configs as `backbone.arch: name`."""
    ARCHS[name] = (config_cls, module_cls)


def resolve_backbone(section: dict, presets: dict) -> dict:
    """The preset's arguments with the section's overrides on top, without the `preset` key.

    Runs store this resolved form, so editing a preset later never breaks their checkpoints."""
    section = dict(section)
    preset_name = section.pop("preset", None)
    params: dict = {}
    if preset_name is not None:
        if preset_name not in presets:
            known = ", ".join(sorted(presets)) or "none"
            raise UserError(f"unknown backbone preset {preset_name!r} (known: {known})")
        params.update(presets[preset_name])
    params.update(section)
    params.setdefault("arch", "unet")
    return params


def build_backbone(section: dict, presets: dict, dims: int, in_channels: int) -> nn.Module:
    """Build the backbone from a config section `{arch, preset, **overrides}` and a modality's presets."""
    params = resolve_backbone(section, presets)
    arch = params.pop("arch")
    if arch not in ARCHS:
        raise UserError(f"unknown backbone.arch {arch!r} (known: {', '.join(sorted(ARCHS))})")
    config_cls, module_cls = ARCHS[arch]
    names = {f.name for f in dataclasses.fields(config_cls)}
    for key in params:
        if key not in names:
            raise UserError(f"unknown config key backbone.{key} for arch {arch!r}")
    params.setdefault("dims", dims)
    params.setdefault("in_channels", in_channels)
    # typed conditions (the assembler's; a section straight from a config is parsed here); frame conditions
    # (a first frame to animate) join as extra input channels, the output keeps the data's channels
    conditions = as_conditions(params.get("cond"))
    frames = [c for c in conditions if c.kind == "frames"]
    if "cond" in params:
        params["cond"] = [c for c in conditions if c.kind != "frames"]
    if frames:
        if "out_channels" not in names:
            raise UserError(f"backbone.arch {arch!r} cannot take frame conditions ({', '.join(c.name for c in frames)})")
        params["out_channels"] = params.get("out_channels") or params["in_channels"]
        params["in_channels"] += sum(c.dim + 1 for c in frames)
    try:
        module = module_cls(config_cls(**params))
        return FrameInputs(module, frames) if frames else module
    except (ValueError, TypeError, RuntimeError, ZeroDivisionError, IndexError, KeyError, AssertionError) as exc:
        raise UserError(f"bad backbone config: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def _check_value(key: str, value, depth: int = 0) -> None:
    """Integers in 0..MAX_INT_VALUE, finite numbers, lists of at most MAX_LIST_LENGTH such values."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return
    if isinstance(value, int):
        top = MAX_BY_KEY.get(key, MAX_INT_VALUE)
        if not 0 <= value <= top:
            raise UserError(f"backbone.{key} must be in 0..{top}, got {value}")
    elif isinstance(value, float):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"backbone.{key} must be a finite number >= 0, got {value}")
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_LIST_LENGTH or depth > 2:
            raise UserError(f"backbone.{key} is too long: at most {MAX_LIST_LENGTH} entries, got {len(value)}")
        for v in value:
            _check_value(key, v, depth + 1)


class _NoInit(TorchFunctionMode):
    """On the meta device, skip in-place initializers (normal_ there would import torch._dynamo: 1.5 s)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        first = args[0] if args else next(iter(kwargs.values()), None)
        if name.endswith("_") and not name.endswith("__") and isinstance(first, torch.Tensor) and first.is_meta:
            return first
        return func(*args, **kwargs)


def count_backbone_parameters(section: dict, presets: dict, dims: int, in_channels: int) -> int:
    """The parameter count of the backbone a config describes, found without allocating it (built on the meta
    device after checking every value's range): how configs and model files are checked before any real
    allocation. Any construction error is a UserError."""
    params = resolve_backbone(section, presets)
    for key, value in params.items():
        if key != "cond":
            _check_value(key, value)
    with torch.device("meta"), _NoInit():
        module = build_backbone(params, {}, dims, in_channels)
    try:
        return sum(p.numel() for p in module.parameters())
    except RuntimeError as exc:
        raise UserError(f"bad backbone config: {str(exc).splitlines()[0]}") from None
