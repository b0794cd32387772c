"""Backbone architectures by name (`backbone.arch`) and how a config section with a preset becomes a network."""

from __future__ import annotations

import dataclasses

from torch import nn

from cm_media.errors import UserError

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
    try:
        return module_cls(config_cls(**params))
    except (ValueError, TypeError) as exc:
        raise UserError(f"bad backbone config: {exc}") from None
