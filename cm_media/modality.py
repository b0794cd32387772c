"""The small interface every modality supplies to the core: codec, datasets, backbone presets, file output.

Model tensors are [B, C, *axes]; the core never looks inside them beyond that.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Protocol

import torch


class Codec(Protocol):
    """Media tensors <-> model tensors. `channels` and `dims` describe the model tensor [B, channels, *dims axes]."""

    channels: int
    dims: int

    def encode(self, media: torch.Tensor) -> torch.Tensor: ...

    def decode(self, x: torch.Tensor) -> torch.Tensor: ...


class Modality:
    """Base class: subclasses set the class attributes and implement the methods below."""

    name: str = ""
    DataConfig: type = object  # dataclass for the `data` section
    CodecConfig: type = object  # dataclass for the `codec` section
    backbone_presets: dict[str, dict] = {}
    default_suffix: str = ""
    # extra `cm-media generate` options: (flag, argparse kwargs); the parsed values reach sample_shape/save
    generate_options: list[tuple[str, dict]] = []

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

    def read(self, path: Path, cfg, codec: Codec) -> torch.Tensor:
        """One media file as a media tensor [1, ...] fitted to the config (for `cm-media edit`)."""
        raise NotImplementedError(f"modality {self.name!r} cannot read files for editing")

    def edit_mask(self, spec: str, model_shape: tuple[int, ...], cfg) -> torch.Tensor:
        """Parse a `--mask` spec into a model-space mask [1, 1, *axes] (1 = regenerate, 0 = keep)."""
        raise NotImplementedError(f"modality {self.name!r} has no edit masks")

    def edit_guess(self, media: torch.Tensor, mask: torch.Tensor, cfg) -> torch.Tensor:
        """A first guess for the masked region of media [B, ...] (e.g. a video cross-fade), for `edit --from-guess`."""
        raise NotImplementedError(f"modality {self.name!r} has no first-guess fill for editing")

    def pretrained_dir(self) -> Path | None:
        """Folder of the bundled pretrained model for `cm-media generate <modality>`, if one ships."""
        return None

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
