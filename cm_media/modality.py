"""The small interface every modality supplies to the core: codec, datasets, backbone presets, file output.

Model tensors are [B, C, *axes]; the core never looks inside them beyond that. Whatever else differs between
modalities (bundled models, what `cm-media demo` makes and how its report shows it, the real-time rates and
extra options of `cm-media bench`) is a hook below with a generic default, so a new modality needs no core edit.
"""

from __future__ import annotations

import html
import importlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Protocol

import torch

from cm_media import files

# how the demo report shows a file by its suffix (the default of `Modality.report_html` / `report_markdown`)
AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".mp3", ".ogg", ".opus"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".webm", ".mov", ".mkv"})
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})


def html_audio(rel: str) -> str:
    """An inline audio player for the file at relative path `rel`, captioned with its name."""
    src, name = html.escape(rel, quote=True), html.escape(PurePosixPath(rel).name)
    return f'<figure><audio controls preload="auto" src="{src}"></audio><figcaption>{name}</figcaption></figure>'


def html_video(rel: str, width: int = 256) -> str:
    """A looping, muted inline video player, captioned with the file name."""
    src, name = html.escape(rel, quote=True), html.escape(PurePosixPath(rel).name)
    return (f'<figure><video controls loop muted playsinline preload="auto" width="{width}" src="{src}"></video>'
            f"<figcaption>{name}</figcaption></figure>")


def html_image(rel: str, alt: str, width: int | None = None, pixel: bool = True) -> str:
    """An <img> (pixelated when scaled up, for the small generated images)."""
    cls = ' class="pixel"' if pixel else ""
    size = f' width="{width}"' if width else ""
    return f'<img{cls} src="{html.escape(rel, quote=True)}" alt="{html.escape(alt, quote=True)}"{size}>'


@dataclass
class DemoRequest:
    """What `cm-media demo` generates for one modality: `n` samples written to `target` inside the demo folder."""

    n: int
    target: str  # file or folder name, e.g. "images.png" or "audio" (a folder of numbered clips)
    generate: dict = field(default_factory=dict)  # keyword options for Generator.generate (e.g. seconds, cond)
    save: dict = field(default_factory=dict)  # keyword options for Generator.save (e.g. separate)
    # what each sample was asked for (e.g. "class=seven"), one per sample: the report writes it beside the sample
    labels: list[str] = field(default_factory=list)


class Codec(Protocol):
    """Media tensors <-> model tensors. `channels` and `dims` describe the model tensor [B, channels, *dims axes]."""

    channels: int
    dims: int

    def encode(self, media: torch.Tensor) -> torch.Tensor: ...

    def decode(self, x: torch.Tensor) -> torch.Tensor: ...


class MediaWriter:
    """Writes decoded batches [b, ...] as they arrive (`add`), so memory holds one batch whatever the total;
    `close` finishes the files and returns their paths. Opened before any sample is made, which is where the
    output path, its format and its folder are checked. Use as a context manager: an error aborts the write."""

    def add(self, media: torch.Tensor) -> None:
        raise NotImplementedError

    def close(self) -> list[Path]:
        raise NotImplementedError

    def abort(self) -> None:
        """Stop after an error: remove what is half-written (finished files stay)."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.abort()


class CollectingWriter(MediaWriter):
    """For a modality without streaming output: keeps every batch and calls `write(media)` once at the end."""

    def __init__(self, write):
        self._write, self._parts = write, []

    def add(self, media):
        self._parts.append(media)

    def close(self):
        return self._write(torch.cat(self._parts))


class Modality:
    """Base class: subclasses set the class attributes and implement the methods below."""

    name: str = ""
    DataConfig: type = object  # dataclass for the `data` section
    CodecConfig: type = object  # dataclass for the `codec` section
    backbone_presets: ClassVar[dict[str, dict]] = {}
    default_suffix: str = ""
    # extra `cm-media generate` options: (flag, argparse kwargs); the parsed values reach sample_shape/save
    generate_options: ClassVar[list[tuple[str, dict]]] = []
    # extra `cm-media bench` options (flag, argparse kwargs), e.g. --seconds: the parsed values reach sample_shape
    # as the timed and memory-measured shape (quality is always measured at the training shape)
    bench_options: ClassVar[list[tuple[str, dict]]] = []
    # bundled models besides the default one in pretrained/: name -> folder relative to the package directory
    extra_bundled: ClassVar[dict[str, str]] = {}
    # `cm-media bench` table columns for keys `media_rates` returns: record key -> column header, e.g. RTF
    rate_columns: ClassVar[dict[str, str]] = {}
    # `cm-media demo`: sections, --only and help texts list modalities by this priority (lower first), then name
    demo_order: int = 100
    # `cm-media demo`'s speed-vs-quality table: timing batch, generated samples, held-out references
    demo_bench_sizes: ClassVar[dict[str, int]] = {"batch": 8, "num_samples": 32, "max_references": 64}
    # the `method.name` a config that names none trains with: "from_data" without `method.teacher`, "from_teacher"
    # with one; each modality sets the winner of benchmarks/method_comparison.py on its data sets
    default_methods: ClassVar[dict[str, str]] = {"from_data": "ict", "from_teacher": "cmt"}
    # model tensors [B, C, T, ...] with the clip's frames on axis 2 (codec.frames of them): `train.clip_frames` may
    # cut windows of frames from them (a flat packing such as the sounding-video codec's must say False)
    frame_axis: bool = False
    # codec keys that change only how model tensors decode to media, not the tensors a model was trained on
    # (audio's Griffin-Lim iterations): `cm-media export --set codec.KEY=...` may change these, like sample.*
    decode_keys: ClassVar[tuple[str, ...]] = ()

    def build_codec(self, cfg) -> Codec:
        raise NotImplementedError

    def build_dataset(self, cfg, codec: Codec, split: str = "train"):
        """A dataset of model tensors [C, *axes]: `len()`, `[i]`, and optionally `get_batch(indices)`."""
        raise NotImplementedError

    def sample_shape(self, cfg, codec: Codec, **options: Any) -> tuple[int, ...]:
        """(C, *axes) of one generated model tensor, honouring generate options such as --seconds."""
        raise NotImplementedError

    def save(self, media: torch.Tensor, path: Path, cfg, **options: Any) -> list[Path]:
        """Write decoded media [B, ...] to `path` (one file, a grid, or numbered files); returns the paths."""
        raise NotImplementedError

    def open_writer(self, path: Path, cfg, total: int, **options: Any) -> MediaWriter:
        """A writer for `total` samples arriving in batches (what `cm-media generate` streams into). It checks
        `path` now, before anything is generated. Default: the folder must be writable, and every batch is kept
        until `save` writes them at the end; the built-in modalities write each batch as it comes."""
        path = Path(path)
        files.output_folder(path.parent if str(path.parent) else Path("."))
        return CollectingWriter(lambda media: self.save(media, path, cfg, **options))

    def codec_source(self, path: str) -> str:
        """Where a learned codec's `codec.path` points (a modality may resolve names of codecs it ships)."""
        return path

    def option_names(self) -> set[str]:
        """The generate options this modality honours: its declared ones and the keywords its sample_shape, save
        and open_writer name (video takes the shared --seconds). Any other option is refused, not ignored."""
        names = {kwargs.get("dest") or flag.lstrip("-").replace("-", "_") for flag, kwargs in self.generate_options}
        for method in (self.sample_shape, self.save, self.open_writer):
            names |= {p.name for p in inspect.signature(method).parameters.values()
                      if p.kind is p.KEYWORD_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty)}
        return names

    def validate_config(self, cfg) -> None:
        """Range checks of the `data` and `codec` sections (a UserError naming the key), run when a config is
        read, before anything is built. Default: none beyond the types."""

    def read(self, path: Path, cfg, codec: Codec) -> torch.Tensor:
        """One media file as a media tensor [1, ...] fitted to the config (for `cm-media edit`)."""
        raise NotImplementedError(f"modality {self.name!r} cannot read files for editing")

    def edit_mask(self, spec: str, model_shape: tuple[int, ...], cfg) -> torch.Tensor:
        """Parse a `--mask` spec into a model-space mask [1, 1, *axes] (1 = regenerate, 0 = keep)."""
        raise NotImplementedError(f"modality {self.name!r} has no edit masks")

    def edit_guess(self, media: torch.Tensor, mask: torch.Tensor, cfg) -> torch.Tensor:
        """A first guess for the masked region of media [B, ...] (e.g. a video cross-fade), for `edit --from-guess`."""
        raise NotImplementedError(f"modality {self.name!r} has no first-guess fill for editing")

    # ------------------------------------------------------------ bundled models

    def package_dir(self) -> Path:
        """The folder of the module that defines this modality (modalities/<name>/ for the built-in ones)."""
        return Path(sys.modules[type(self).__module__].__file__).resolve().parent

    def pretrained_dir(self) -> Path | None:
        """Folder of the default bundled model, named like the modality (`cm-media generate <modality>`)."""
        return self.package_dir() / "pretrained"

    def bundled_models(self) -> dict[str, Path]:
        """Installed bundled models, name -> folder holding model.safetensors: the default one (named like the
        modality, in `pretrained_dir()`) and those of `extra_bundled`; a folder without weights is left out."""
        folders = {self.name: self.pretrained_dir()}
        folders.update({name: self.package_dir() / folder for name, folder in self.extra_bundled.items()})
        return {name: Path(folder) for name, folder in folders.items()
                if folder is not None and (Path(folder) / "model.safetensors").is_file()}

    # ------------------------------------------------------------ cm-media demo and bench

    def demo_model(self) -> str:
        """The bundled model `cm-media demo` shows for this modality (default: the one named like it)."""
        return self.name

    def demo_models(self) -> list[str]:
        """The bundled models `cm-media demo` shows for this modality, a report section each (default: demo_model);
        one that is not installed is skipped with a note."""
        return [self.demo_model()]

    def data_note(self, cfg) -> str | None:
        """Why the real data of config `cfg` cannot be read now without a long preparation (e.g. a set that is not
        rendered yet), or None. `cm-media demo` then skips that model's benchmark with this note."""
        return None

    def demo_request(self, cfg) -> DemoRequest:
        """How many samples the demo generates with the model of config `cfg`, where and with which options."""
        return DemoRequest(4, f"{self.name}{self.default_suffix}")

    def demo_files(self, paths: list[Path]) -> tuple[list[Path], list[Path]]:
        """Split what `save` wrote into (the media the report shows, extra pictures such as a frame grid)."""
        return list(paths), []

    def demo_describe(self, cfg, media: torch.Tensor, n: int, steps: int) -> str:
        """One line for the demo's output and report: what the `n` generated media [n, ...] are."""
        shape = "x".join(str(s) for s in media.shape[1:])
        return f"{n} samples ({shape}), {steps} step(s)"

    def report_markdown(self, rel: str, extra: bool = False) -> str:
        """Markdown for one demo file at relative path `rel`: shown media (joined by ", " on one line) or, with
        `extra`, a picture on its own line."""
        name = PurePosixPath(rel).name
        embed = extra or PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES
        return f"![{name}]({rel})" if embed else f"[{name}]({rel})"

    def report_html(self, rel: str, extra: bool = False) -> str:
        """HTML for one demo file at relative path `rel`: a <figure> in the row of media, or with `extra`, the
        content of a paragraph below it. Default by suffix: <audio>, <video>, <img>, else a link."""
        suffix = PurePosixPath(rel).suffix.lower()
        if extra or suffix in IMAGE_SUFFIXES:
            img = html_image(rel, PurePosixPath(rel).name)
            return img if extra else f"<figure>{img}</figure>"
        if suffix in AUDIO_SUFFIXES:
            return html_audio(rel)
        if suffix in VIDEO_SUFFIXES:
            return html_video(rel)
        return f'<figure><a href="{html.escape(rel, quote=True)}">{html.escape(PurePosixPath(rel).name)}</a></figure>'

    def media_rates(self, cfg, media: torch.Tensor, seconds_per_batch: float) -> dict:
        """Extra `cm-media bench` speed columns for a decoded batch [B, ...] made in `seconds_per_batch`
        (audio: audio_seconds and real_time_factor; video: frames and frames_per_s); none by default."""
        return {}

    def _features_module(self):
        """The `features` module of the subclass's package (e.g. modalities.image.features), or None."""
        module = sys.modules.get(type(self).__module__)
        package = getattr(module, "__package__", None) or type(self).__module__
        try:
            return importlib.import_module(f"{package}.features")
        except ModuleNotFoundError as exc:
            if exc.name == f"{package}.features":
                return None
            raise

    def features(self, media: torch.Tensor, cfg) -> torch.Tensor:
        """Hand-crafted metric features [B, D] of decoded media (the package's `features.features`)."""
        module = self._features_module()
        if module is None:
            raise NotImplementedError(f"modality {self.name!r} has no features module")
        return module.features(media, cfg)

    def learned_features(self, media: torch.Tensor, cfg) -> torch.Tensor | None:
        """Features from a small shipped network [B, D], or None where none applies to this data."""
        module = self._features_module()
        fn = getattr(module, "learned_features", None) if module is not None else None
        return fn(media, cfg) if fn is not None else None
