"""The models a `cm-media ui` server offers: every bundled model plus the sources named on the command line.

What the page shows for a model (its conditions, defaults, clip length) is read from the model file's header, so
building the page loads no weights; `ModelStore.get` loads a model once, on first use (or `preload`), and keeps it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from cm_media.conditions import GUIDANCE, INTERVAL, Condition
from cm_media.errors import UserError
from cm_media.modality import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from cm_media.registry import bundled_models, get_modality
from cm_media.runs.loader import checked_config, resolve_source
from cm_media.runs.model import run_conditions


@dataclass
class ModelInfo:
    """One model as the page sees it, from its header: name, modality, conditions and generation defaults."""

    name: str  # what the model menu shows (a bundled name, or the source as given)
    source: str  # what `cm_media.load` takes
    modality: str
    dataset: str
    method: str
    suffix: str  # the modality's file type: .wav, .mp4, .png
    conditions: list[Condition] = field(default_factory=list)  # the ones a user asks for (class, scalar, ...)
    frames: Condition | None = None  # a first-frame condition: a picture to animate
    guided_student: bool = False  # takes the guidance scale as an input (one evaluation per step)
    steps: int = 1
    cfg_scale: float | None = None
    length_option: str | None = None  # "seconds" (audio) or "frames" (video): the clip length a request may set
    length_default: float | None = None
    edit_region: str = ""  # the `--mask` syntax of the modality, shown as the Edit tab's hint
    edit_default: str = ""
    separate: bool = False  # the modality writes one file per sample with `separate` (images, silent video)

    @property
    def kind(self) -> str:
        """audio, video or image: how the page shows the files (by the modality's file type)."""
        if self.suffix in AUDIO_SUFFIXES:
            return "audio"
        if self.suffix in VIDEO_SUFFIXES:
            return "video"
        return "image" if self.suffix in IMAGE_SUFFIXES else "file"

    @property
    def conditional(self) -> bool:
        return bool(self.conditions or self.frames)


# what the Edit tab's region box says per file type (a modality's `--mask` syntax) and a default that works
EDIT_HINTS = {
    "audio": ("time range START:END in seconds (or continue:START)", "0.25:0.5"),
    "video": ("frames to regenerate, e.g. 6-9 or 3,4,5", "6-9"),
    "image": ("box:x0,y0,x1,y1 (pixels, end exclusive) or left / right / top / bottom / center", "center"),
    "sounding": ("audio (make the sound of the clip) or video (make the picture for its sound)", "audio"),
}


def describe(name: str, source: str) -> ModelInfo:
    """A ModelInfo from the model file's header (a UserError for a missing or broken source)."""
    path = resolve_source(source)
    cfg = checked_config(path)
    modality = get_modality(cfg.modality)
    conds = run_conditions(cfg)
    asked = [c for c in conds if c.name not in (GUIDANCE, INTERVAL) and c.kind != "frames"]
    frames = next((c for c in conds if c.kind == "frames"), None)
    flags = {flag for flag, _ in modality.generate_options}
    info = ModelInfo(name, source, cfg.modality, str(getattr(cfg.data, "dataset", "")), cfg.method.name,
                     modality.default_suffix, asked, frames, any(c.name == GUIDANCE for c in conds),
                     cfg.sample.steps, cfg.sample.cfg_scale, separate="--separate" in flags)
    if "--seconds" in flags and info.kind == "audio":
        info.length_option, info.length_default = "seconds", float(cfg.data.seconds)
    elif "--frames" in flags:
        info.length_option, info.length_default = "frames", int(cfg.codec.frames)
    sounding = info.kind == "video" and "--frames" not in flags  # a clip with its soundtrack: fixed length
    info.edit_region, info.edit_default = EDIT_HINTS["sounding" if sounding else info.kind] \
        if (sounding or info.kind in EDIT_HINTS) else ("the modality's --mask syntax", "")
    return info


def default_sources() -> dict[str, str]:
    """Every installed bundled model: name -> source (its name)."""
    return {name: name for name in bundled_models()}


class ModelStore:
    """The served models: headers read at start, networks loaded once on first use and kept (thread-safe)."""

    def __init__(self, sources: list[str] | None = None, bundled: bool = True, device: str = "auto"):
        named = default_sources() if bundled else {}
        for source in sources or []:
            label = source if source not in named else f"{source} (given)"
            named[label] = source
        if not named:
            raise UserError("no model to serve: no bundled model is installed and no SOURCE was given")
        self.device = device
        # the precision requests run in: the model's own default, which Generator.options turns into float32 where
        # bf16 is slow (an AVX2-only CPU: 3-20x slower one-step samples, runs/precision.bf16_is_fast)
        self.bf16: bool | None = None
        self.infos: dict[str, ModelInfo] = {}
        for name, source in named.items():
            self.infos[name] = describe(name, source)  # a bad SOURCE is an error before the server starts
        self._loaded: dict[str, object] = {}
        self._locks = {name: threading.Lock() for name in self.infos}

    @property
    def names(self) -> list[str]:
        return list(self.infos)

    def info(self, name: str) -> ModelInfo:
        if name not in self.infos:
            raise UserError(f"unknown model {name!r}; this server offers: {', '.join(self.infos)}")
        return self.infos[name]

    def get(self, name: str):
        """The loaded Generator of model `name` (loaded on first use, then kept)."""
        info = self.info(name)
        gen = self._loaded.get(name)
        if gen is not None:
            return gen
        with self._locks[name]:  # one load per model, however many requests arrive at once
            if name not in self._loaded:
                from cm_media.runs.generator import load

                gen = load(info.source, device=self.device)
                if self.bf16 is not False and gen.cfg.sample.bf16:
                    gen.net(True)  # build the bf16 twin now, not inside the first request
                self._loaded[name] = gen
            return self._loaded[name]

    def loaded(self) -> list[str]:
        return [n for n in self.infos if n in self._loaded]

    def preload(self, names: list[str] | None = None) -> None:
        for name in names or self.names:
            self.get(name)


def source_label(source: str) -> str:
    """A short menu label for a path source: its folder or file name."""
    p = Path(source)
    return p.name or str(p)
