"""Modality registry: the one place the core reaches the modality packages (imported lazily by name).

Modalities are found without naming them here: every subpackage of the `modalities` package (modalities/image,
modalities/audio, ...), then the `cm_media.modalities` entry-point group of installed distributions (a third-party
package declares `[project.entry-points."cm_media.modalities"] mymod = "my_package.mymod"`), then whatever
`register_modality` adds. Each names a module that defines `MODALITY`, a `cm_media.modality.Modality`.
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from importlib import metadata
from pathlib import Path

from cm_media.errors import UserError

ENTRY_POINT_GROUP = "cm_media.modalities"


def _discover() -> dict[str, str]:
    """name -> module: the `modalities` subpackages (sorted), then entry points that do not shadow them."""
    found: dict[str, str] = {}
    try:
        package = importlib.import_module("modalities")
        found.update({info.name: f"modalities.{info.name}"
                      for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name)
                      if info.ispkg and not info.name.startswith("_")})
    except ModuleNotFoundError as exc:
        if exc.name != "modalities":
            raise
    try:
        points = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:
        points = []
    for ep in sorted(points, key=lambda e: e.name):
        found.setdefault(ep.name, ep.value)
    return found


# name -> module that defines `MODALITY` (or "module:ATTRIBUTE"); third parties may add entries with
# `register_modality` or the `cm_media.modalities` entry-point group.
MODALITIES: dict[str, str] = _discover()


def register_modality(name: str, module: str) -> None:
    """Make `module.MODALITY` (or `module:ATTRIBUTE`) available under `name` (configs say `modality: name`)."""
    MODALITIES[name] = module
    get_modality.cache_clear()


@cache
def get_modality(name: str):
    """The Modality object registered under `name`; a clear UserError when unknown or not installed."""
    if name not in MODALITIES:
        raise UserError(f"unknown modality {name!r} (known: {', '.join(sorted(MODALITIES))})")
    target, _, attribute = MODALITIES[name].partition(":")
    try:
        module = importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise UserError(f"modality {name!r} is not installed in this version of cm-media") from None
        raise UserError(f"modality {name!r} needs the package {exc.name!r}, which is not installed") from None
    return getattr(module, attribute or "MODALITY")


def available_modalities() -> list[str]:
    """Names of the registered modalities whose package imports."""
    names = []
    for name in sorted(MODALITIES):
        try:
            get_modality(name)
            names.append(name)
        except UserError:
            pass
    return names


def ordered_modalities() -> list[str]:
    """The available modalities in display order (`Modality.demo_order`, then name): demo sections, help texts."""
    return sorted(available_modalities(), key=lambda n: (get_modality(n).demo_order, n))


def modality_options(attribute: str) -> list[tuple[str, dict]]:
    """Every available modality's (flag, argparse kwargs) from `attribute` (e.g. "bench_options"), first flag wins."""
    out, seen = [], set()
    for name in ordered_modalities():
        for flag, kwargs in getattr(get_modality(name), attribute):
            if flag not in seen:
                seen.add(flag)
                out.append((flag, kwargs))
    return out


def option_dest(flag: str, kwargs: dict) -> str:
    """The argparse attribute name of a (flag, kwargs) option: --audio-format -> audio_format."""
    return kwargs.get("dest") or flag.lstrip("-").replace("-", "_")


# ---------------------------------------------------------------- bundled models


def bundled_models() -> dict[str, tuple[str, Path]]:
    """Every installed bundled model: name -> (modality, folder holding model.safetensors), in display order."""
    out: dict[str, tuple[str, Path]] = {}
    for modality in ordered_modalities():
        for name, folder in get_modality(modality).bundled_models().items():
            out.setdefault(name, (modality, Path(folder)))
    return out


def bundled_model_dir(name: str) -> Path | None:
    """Folder of the bundled model called `name` (e.g. "image", "notes"), searching every modality; None if none."""
    if name in MODALITIES:  # a modality's own name: its default model, even when another modality reuses the name
        try:
            folder = get_modality(name).bundled_models().get(name)
        except UserError:
            folder = None
        if folder is not None:
            return Path(folder)
    entry = bundled_models().get(name)
    return None if entry is None else entry[1]


def find_bundled(name: str) -> Path | None:
    """model.safetensors of the bundled model `name`; None when `name` names no bundled model nor modality.

    A modality name without an installed bundled model is a UserError (the model does not ship)."""
    folder = bundled_model_dir(name)
    if folder is not None:
        return folder / "model.safetensors"
    if name in MODALITIES:
        raise UserError(f"no bundled pretrained {name} model ships with this version")
    return None
