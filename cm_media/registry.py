"""Modality registry: the one place the core reaches the `modalities/` packages (imported lazily by name)."""

from __future__ import annotations

import importlib
from functools import lru_cache

from cm_media.errors import UserError

# name -> module that defines `MODALITY`; third parties may add entries with `register_modality`.
MODALITIES: dict[str, str] = {
    "image": "modalities.image",
    "audio": "modalities.audio",
    "video": "modalities.video",
}


def register_modality(name: str, module: str) -> None:
    """Make `module.MODALITY` available under `name` (configs say `modality: name`)."""
    MODALITIES[name] = module
    get_modality.cache_clear()


@lru_cache(maxsize=None)
def get_modality(name: str):
    """The Modality object registered under `name`; a clear UserError when unknown or not installed."""
    if name not in MODALITIES:
        raise UserError(f"unknown modality {name!r} (known: {', '.join(sorted(MODALITIES))})")
    try:
        module = importlib.import_module(MODALITIES[name])
    except ModuleNotFoundError as exc:
        if exc.name and MODALITIES[name].startswith(exc.name):
            raise UserError(f"modality {name!r} is not installed in this version of cm-media") from None
        raise UserError(f"modality {name!r} needs the package {exc.name!r}, which is not installed") from None
    return module.MODALITY


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
