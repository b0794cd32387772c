"""Image datasets: built-in `digits` (scikit-learn's bundled 8x8 digits), `fashion_mnist` (28x28, Debian's
dataset-fashion-mnist) and a folder of png/jpg files."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cm_media.conditions import Condition, Labelled
from cm_media.errors import UserError

from .fashion_mnist import FASHION_CLASSES, fashion_pixels

log = logging.getLogger(__name__)
DIGIT_CLASSES = Condition("class", classes=[str(d) for d in range(10)])
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


@dataclass
class ImageDataConfig:
    dataset: str = "digits"  # digits | fashion_mnist | folder
    root: str | None = None  # the folder, for dataset: folder
    # share kept out of training for evaluation (the last items); fashion_mnist's eval split is its test file
    holdout: float = 0.1
    # labels to condition on: digits has "class" (0-9), fashion_mnist "class" (tshirt, trouser, ..., boot)
    cond: list = field(default_factory=list)
    limit: int = 0  # fashion_mnist: only the first `limit` images of each split (0: all), for quick tests


class TensorDataset(Labelled):
    """Model tensors held in memory: [N, C, H, W], with their class labels [N] where the data has them."""

    def __init__(self, data: torch.Tensor, labels: torch.Tensor | None = None):
        self.data = data
        self.labels = labels

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, i):
        return self.data[i]

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.data[indices]


def split(n: int, holdout: float, part: str) -> slice:
    """Deterministic split: the last `holdout` share is the eval part."""
    cut = n - int(round(n * holdout))
    return slice(0, cut) if part == "train" else slice(cut, n)


def digits_pixels() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1797 handwritten 8x8 digits as pixels [N, 1, 8, 8] in [0, 1] and labels [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    return pixels, torch.tensor(d.target)


def folder_pixels(root: Path, codec) -> torch.Tensor:
    """Every readable image under `root` (recursively) at the codec's size; unreadable files are skipped by name."""
    if not root.is_dir():
        raise UserError(f"data.root is not a folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    items = []
    for p in files:
        try:
            items.append(codec.read(p))
        except UserError as exc:
            log.warning("skipping %s", exc)
    if not items:
        raise UserError(f"no readable images (png, jpg, ...) in {root}")
    return torch.stack(items)


def build_dataset(cfg, codec, part: str = "train") -> TensorDataset:
    data_cfg: ImageDataConfig = cfg.data
    if data_cfg.dataset == "fashion_mnist":  # the train file / the test file, no holdout
        pixels, labels = fashion_pixels(part if part == "train" else "eval", data_cfg.limit or None)
        dataset = TensorDataset(codec.encode(codec.fit(pixels)), labels)
        return dataset.use_conditions(list(data_cfg.cond), {"class": (FASHION_CLASSES, labels)})
    if data_cfg.dataset == "digits":
        pixels, labels = digits_pixels()
        pixels = codec.fit(pixels)
    elif data_cfg.dataset == "folder":
        if not data_cfg.root:
            raise UserError("data.root must name a folder when data.dataset is 'folder'")
        pixels, labels = folder_pixels(Path(data_cfg.root), codec), None
    else:
        raise UserError(f"unknown data.dataset {data_cfg.dataset!r} for images (digits, fashion_mnist or folder)")
    s = split(pixels.shape[0], data_cfg.holdout, part)
    dataset = TensorDataset(codec.encode(pixels[s]), None if labels is None else labels[s])
    available = {} if labels is None else {"class": (DIGIT_CLASSES, labels[s])}
    return dataset.use_conditions(list(data_cfg.cond), available)
