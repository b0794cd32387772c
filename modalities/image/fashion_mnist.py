"""Fashion-MNIST (Xiao et al. 2017) from Debian's `dataset-fashion-mnist`: 28x28 grey clothing, 10 classes.

The package installs the four idx files under /usr/share/datasets/fashion-mnist (60,000 train + 10,000 test
images); the environment variable CM_MEDIA_FASHION_MNIST names another folder holding the same files. The train
split is the train file, the eval split the test file. Reading both takes well under a second (gzip + numpy).
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cm_media.conditions import Condition
from cm_media.errors import UserError

ROOT = Path("/usr/share/datasets/fashion-mnist")
ROOT_ENV = "CM_MEDIA_FASHION_MNIST"
PACKAGE = "dataset-fashion-mnist"
# t-shirt/top, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot: one word each for --class
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
FASHION_CLASSES = Condition("class", classes=CLASSES)
FILES = {"train": "train", "eval": "t10k"}  # split -> file prefix
SIZE = 28


def root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or ROOT)


def read_idx(path: Path) -> np.ndarray:
    """A gzipped idx file (big-endian header: 0, 0, dtype 0x08 = uint8, ndim; then ndim uint32 sizes) -> array."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an idx file of unsigned bytes")
    ndim = raw[3]
    shape = tuple(int(v) for v in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise UserError(f"{path} is truncated: {data.size} bytes for shape {shape}")
    return data.reshape(shape)


@lru_cache(maxsize=4)
def _arrays(folder: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = Path(folder) / FILES[split]
    images = read_idx(prefix.with_name(prefix.name + "-images-idx3-ubyte.gz"))  # [N, 28, 28] uint8
    labels = read_idx(prefix.with_name(prefix.name + "-labels-idx1-ubyte.gz"))  # [N] uint8
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (SIZE, SIZE):
        raise UserError(f"Fashion-MNIST files in {folder} disagree: images {images.shape}, labels {labels.shape}")
    return images, labels


def fashion_pixels(split: str = "train", limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels [N, 1, 28, 28] in [0, 1] and labels [N] (int64) of the `train` (60,000) or `eval` (10,000, the test
    file) split; `limit` keeps the first items only (the files are in shuffled class order)."""
    if split not in FILES:
        raise UserError(f"unknown Fashion-MNIST split {split!r} (train or eval)")
    folder = root()
    missing = [p.name for p in (folder / f"{FILES[split]}-{k}-ubyte.gz" for k in ("images-idx3", "labels-idx1"))
               if not p.is_file()]
    if missing:
        raise UserError(f"Fashion-MNIST is not installed ({folder / missing[0]} is missing): "
                        f"apt-get install {PACKAGE}")
    images, labels = _arrays(str(folder), split)
    if limit:
        images, labels = images[:limit], labels[:limit]
    pixels = torch.from_numpy(images.astype(np.float32) / 255.0)[:, None]
    return pixels, torch.from_numpy(labels.astype(np.int64))


def available() -> bool:
    """Whether the idx files are readable here (tests skip without them)."""
    return all((root() / f"{p}-{k}-ubyte.gz").is_file() for p in FILES.values() for k in ("images-idx3", "labels-idx1"))
