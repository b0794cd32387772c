"""Moving MNIST (Srivastava et al. 2015): two 28x28 handwritten digits bouncing in a 64x64 frame, 16 frames.

The digits are the 5,000 MNIST-derived 20x20 digits of OpenCV's sample `digits.png` (Debian package
`opencv-doc`; covered by the package's `Files: *` stanza, Apache-2.0 AND BSD-3-Clause), zero-padded by 4 px to
28x28 as MNIST centres its 20x20 digits in a 28x28 box. Each class has 500 digits; the last 50 of each class are
held out for the "test" split, so train and test clips never share a digit image.

As in the original generator, each digit starts at a uniform position, moves in a uniform direction at a fixed
speed (0.1 of the free range per frame: 3.6 px), and reflects off the walls; frames are max-combined. Clip i is
a function of (seed, split, i) alone, so any clip can be made on demand in any order.
"""

from __future__ import annotations

import gzip
import io
import subprocess
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from cm_media.errors import UserError

DIGITS_PACKAGE = "opencv-doc"
DIGITS_CANDIDATES = [
    "/usr/share/doc/opencv-doc/examples/data/digits.png",
    "/usr/share/doc/opencv-doc/examples/data/digits.png.gz",
]
SPRITE = 28  # digit sprite height and width, as in MNIST
PER_CLASS = 500  # digits per class in digits.png
HELD_OUT = 50  # the last digits of each class, kept for the test split
_SPLITS = {"train": 0, "test": 1}


def dpkg_files(package: str) -> list[str]:
    """Paths `dpkg -L package` lists ([] when dpkg or the package is missing)."""
    try:
        out = subprocess.run(["dpkg", "-L", package], check=False, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return []
    return out.stdout.splitlines() if out.returncode == 0 else []


def find_debian_file(package: str, names: list[str], candidates: list[str]) -> Path | None:
    """The first existing candidate path, else a file of the package named like one of `names`, else None."""
    for c in candidates:
        if Path(c).is_file():
            return Path(c)
    for line in dpkg_files(package):
        if Path(line).name in names and Path(line).is_file():
            return Path(line)
    return None


def digits_png_path() -> Path:
    """OpenCV's digits.png (or digits.png.gz); a UserError naming the Debian package when it is missing."""
    path = find_debian_file(DIGITS_PACKAGE, ["digits.png", "digits.png.gz"], DIGITS_CANDIDATES)
    if path is None:
        raise UserError(f"Moving MNIST needs digits.png from the Debian package {DIGITS_PACKAGE}: "
                        f"apt-get install {DIGITS_PACKAGE}")
    return path


@lru_cache(maxsize=2)
def _load_sprites(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """All 5,000 digits as 28x28 sprites in [0, 1] [5000, 28, 28] (class-major) and their labels [5000]."""
    from PIL import Image

    data = Path(path).read_bytes()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    img = np.asarray(Image.open(io.BytesIO(data)).convert("L"))  # [1000, 2000]
    if img.shape != (1000, 2000):
        raise UserError(f"{path}: expected a 2000x1000 grid of 20x20 digits, got {img.shape[1]}x{img.shape[0]}")
    cells = img.reshape(50, 20, 100, 20).transpose(0, 2, 1, 3).reshape(5000, 20, 20)  # row-major over the grid
    pad = (SPRITE - 20) // 2
    sprites = np.zeros((5000, SPRITE, SPRITE), np.float32)
    sprites[:, pad:pad + 20, pad:pad + 20] = cells / 255.0
    labels = np.repeat(np.arange(10), PER_CLASS)  # one class per 5 rows = 500 digits
    return torch.from_numpy(sprites), torch.from_numpy(labels)


def fold(p: np.ndarray, room: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflect unbounded positions into [0, room]: (positions, direction sign +1/-1 of the reflected motion)."""
    m = np.mod(p, 2 * room)
    return np.where(m <= room, m, 2 * room - m), np.where(m < room, 1.0, -1.0)


class MovingMNIST:
    """Moving MNIST clips made on demand: `get_clips(indices)` -> [B, 1, T, H, W] in [0, 1]."""

    fps = 8.0

    def __init__(self, split: str = "train", num_clips: int = 10000, frames: int = 16, size: int = 64,
                 seed: int = 0, num_digits: int = 2, speed: float = 3.6):
        if split not in _SPLITS:
            raise UserError(f"Moving MNIST split must be one of {sorted(_SPLITS)}, got {split!r}")
        if size <= SPRITE:
            raise UserError(f"Moving MNIST frames must be larger than the {SPRITE}px digits, got size {size}")
        self.split, self.num_clips, self.frames, self.size = split, int(num_clips), int(frames), int(size)
        self.seed, self.num_digits, self.speed = int(seed), int(num_digits), float(speed)
        sprites, labels = _load_sprites(str(digits_png_path()))
        keep = torch.arange(5000) % PER_CLASS >= PER_CLASS - HELD_OUT  # the last 50 of each class
        if split == "train":
            keep = ~keep
        self.sprite_ids = torch.nonzero(keep).squeeze(1)  # indices into digits.png's 5,000 digits
        self.sprites, self.sprite_labels = sprites[self.sprite_ids], labels[self.sprite_ids]
        self._labels = None

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.get_clips([i])[0]  # [1, T, H, W]

    @property
    def room(self) -> int:
        """The free range of a digit's top-left corner: [0, room] on each axis."""
        return self.size - SPRITE

    def _specs(self, indices) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per clip: sprite rows [B, D] (into this split's sprites), start corners [B, D, 2], velocities [B, D, 2]."""
        idx = self._check(indices)
        d = self.num_digits
        sprite, start, vel = (np.empty((len(idx), d), np.int64), np.empty((len(idx), d, 2)),
                              np.empty((len(idx), d, 2)))
        for b, i in enumerate(idx):
            rng = np.random.default_rng([self.seed, _SPLITS[self.split], int(i)])
            sprite[b] = rng.integers(0, len(self.sprites), d)
            start[b] = rng.uniform(0, self.room, (d, 2))
            angle = rng.uniform(0, 2 * np.pi, d)
            vel[b] = self.speed * np.stack([np.sin(angle), np.cos(angle)], -1)  # (y, x) pixels per frame
        return sprite, start, vel

    def _check(self, indices) -> np.ndarray:
        idx = np.asarray(indices.tolist() if torch.is_tensor(indices) else indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_clips):
            raise IndexError(f"clip indices must be in [0, {self.num_clips}), got {idx.min()}..{idx.max()}")
        return idx

    def _trajectories(self, start: np.ndarray, vel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-left corners [B, D, T, 2] and per-axis motion signs [B, D, T, 2] (flip when a digit bounces)."""
        t = np.arange(self.frames, dtype=np.float64)[:, None]  # [T, 1]
        return fold(start[:, :, None] + vel[:, :, None] * t, self.room)

    def positions(self, indices) -> torch.Tensor:
        """Exact top-left corners (y, x) in pixels of each digit [B, D, T, 2]; frames draw them rounded."""
        _, start, vel = self._specs(indices)
        return torch.from_numpy(self._trajectories(start, vel)[0]).float()

    def directions(self, indices) -> torch.Tensor:
        """Sign (+1 / -1) of each digit's motion along (y, x) [B, D, T, 2]: it flips at a wall."""
        _, start, vel = self._specs(indices)
        return torch.from_numpy(self._trajectories(start, vel)[1] * np.sign(vel)[:, :, None]).float()

    def clip_labels(self, indices) -> torch.Tensor:
        """The digit classes shown in each clip [B, D]."""
        sprite, _, _ = self._specs(indices)
        return self.sprite_labels[torch.from_numpy(sprite)]

    @property
    def labels(self) -> torch.Tensor:
        """The digit classes of every clip [N, D] (LongTensor), computed once."""
        if self._labels is None:
            self._labels = self.clip_labels(np.arange(self.num_clips))
        return self._labels

    def get_clips(self, indices) -> torch.Tensor:
        """Clips [B, 1, T, H, W] in [0, 1]: each digit pasted at its rounded corner, frames max-combined."""
        sprite, start, vel = self._specs(indices)
        b, d, t, s = len(sprite), self.num_digits, self.frames, SPRITE
        corner = torch.from_numpy(np.rint(self._trajectories(start, vel)[0]).astype(np.int64))  # [B, D, T, 2]
        canvas = torch.zeros(b, t, self.size, self.size)  # [B, T, H, W]
        bi = torch.arange(b).view(b, 1, 1, 1)
        ti = torch.arange(t).view(1, t, 1, 1)
        off = torch.arange(s)
        for k in range(d):
            ys = (corner[:, k, :, 0, None] + off).unsqueeze(-1)  # [B, T, S, 1]
            xs = (corner[:, k, :, 1, None] + off).unsqueeze(-2)  # [B, T, 1, S]
            pix = self.sprites[torch.from_numpy(sprite[:, k])].unsqueeze(1)  # [B, 1, S, S]
            canvas[bi, ti, ys, xs] = torch.maximum(canvas[bi, ti, ys, xs], pix)
        return canvas.unsqueeze(1)  # [B, 1, T, H, W]
