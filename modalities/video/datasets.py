"""Video datasets: built-in `moving-digits` (Moving-MNIST style, made in code) and a folder of video files.

Items are model tensors [C, T, H, W] in [-1, 1] at the codec's frames, size and fps.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cm_media.conditions import Condition, Labelled
from cm_media.errors import UserError
from modalities.image.datasets import digits_pixels, split

from .codec import VIDEO_SUFFIXES, probe

log = logging.getLogger(__name__)


@dataclass
class VideoDataConfig:
    dataset: str = "moving-digits"  # moving-digits | folder
    root: str | None = None  # the folder, for dataset: folder
    holdout: float = 0.1  # share kept out of training for evaluation
    clips: int = 2000  # moving-digits: clips made (train + eval)
    max_digits: int = 2  # moving-digits: each clip shows 1..max_digits digits
    digit_size: int = 14  # moving-digits: digit height and width in pixels (upscaled from 8x8)
    speed: list = field(default_factory=lambda: [1.0, 2.5])  # moving-digits: pixels per frame, min and max
    seed: int = 0  # moving-digits: the clips are a function of this seed
    clip_hop: float = 0.5  # folder: clip starts are this share of a clip length apart
    cache_clips: int = 512  # folder: decoded clips kept in memory (uint8)
    cond: list = field(default_factory=list)  # labels to condition on: moving-digits has "digit1", "digit2"


class ClipDataset(Labelled):
    """uint8 clips [N, C, T, H, W] in memory, served as model tensors."""

    def __init__(self, clips: torch.Tensor, codec):
        self.clips, self.codec = clips, codec

    def __len__(self):
        return self.clips.shape[0]

    def __getitem__(self, i):
        return self.codec.encode(self.clips[i].float() / 255.0)

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(self.clips[indices].float() / 255.0)  # [B, C, T, H, W]


def _trajectory(rng: np.random.Generator, frames: int, room: tuple[int, int], speed) -> np.ndarray:
    """Top-left corners [T, 2] (y, x) of a digit moving in a straight line and bouncing off the walls."""
    pos = rng.uniform(0, 1, 2) * np.array(room, dtype=np.float64)
    angle = rng.uniform(0, 2 * np.pi)
    vel = rng.uniform(*speed) * np.array([np.sin(angle), np.cos(angle)])
    out = np.empty((frames, 2))
    for t in range(frames):
        out[t] = pos
        pos = pos + vel
        for a in range(2):  # reflect at 0 and at room[a] (clipped, for rooms narrower than a step)
            if pos[a] < 0:
                pos[a], vel[a] = -pos[a], -vel[a]
            elif pos[a] > room[a]:
                pos[a], vel[a] = 2 * room[a] - pos[a], -vel[a]
        pos = np.clip(pos, 0, room)
    return np.rint(out).astype(np.int64)


def moving_digits(
    n: int, frames: int, size: tuple[int, int], digits: torch.Tensor, max_digits: int, speed, seed: int,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n clips uint8 [n, 1, T, H, W]: 1..max_digits of `digits` ([N, d, d] uint8) bouncing, combined by max; and
    the label of each digit shown [n, max_digits] in drawing order (-1 where a clip shows fewer)."""
    h, w = size
    d = digits.shape[-1]
    room = (h - d, w - d)
    rng = np.random.default_rng(seed)
    src = digits.numpy()
    out = np.zeros((n, frames, h, w), dtype=np.uint8)
    shown = np.full((n, max_digits), -1, dtype=np.int64)
    for i in range(n):
        for k in range(int(rng.integers(1, max_digits + 1))):
            pick = rng.integers(len(src))
            glyph = src[pick]
            shown[i, k] = -1 if labels is None else int(labels[pick])
            for t, (y, x) in enumerate(_trajectory(rng, frames, room, speed)):
                np.maximum(out[i, t, y: y + d, x: x + d], glyph, out=out[i, t, y: y + d, x: x + d])
    return torch.from_numpy(out)[:, None], torch.from_numpy(shown)


def moving_digits_dataset(cfg, codec, part: str) -> ClipDataset:
    """The built-in dataset; eval clips use held-out digit images and their own seed."""
    dc = cfg.data
    h, w = codec.size
    if not 1 <= dc.digit_size <= min(h, w):
        raise UserError(f"data.digit_size must be between 1 and the frame size {min(h, w)}, got {dc.digit_size}")
    if dc.max_digits < 1:
        raise UserError(f"data.max_digits must be >= 1, got {dc.max_digits}")
    if len(dc.speed) != 2 or not 0 <= dc.speed[0] <= dc.speed[1]:
        raise UserError(f"data.speed must be [min, max] pixels per frame, got {dc.speed}")
    if dc.clips < 1:
        raise UserError(f"data.clips must be >= 1, got {dc.clips}")
    pixels, labels = digits_pixels()  # [N, 1, 8, 8] in [0, 1], [N]
    glyphs = F.interpolate(pixels, size=(dc.digit_size, dc.digit_size), mode="bilinear", align_corners=False)
    glyphs = (glyphs.clamp(0, 1)[:, 0] * 255).round().to(torch.uint8)  # [N, d, d]
    glyphs, labels = glyphs[split(len(glyphs), dc.holdout, part)], labels[split(len(glyphs), dc.holdout, part)]
    counts = split(dc.clips, dc.holdout, part)
    n = counts.stop - counts.start
    clips, shown = moving_digits(n, codec.cfg.frames, (h, w), glyphs, dc.max_digits, dc.speed,
                                 seed=dc.seed * 2 + (part != "train"), labels=labels)
    if codec.channels == 3:
        clips = clips.expand(-1, 3, -1, -1, -1).contiguous()
    available = {}
    for k in range(dc.max_digits):  # digit k of a clip; "no condition" where the clip shows fewer digits
        cond = Condition(f"digit{k + 1}", classes=[str(d) for d in range(10)])
        available[cond.name] = (cond, torch.where(shown[:, k] < 0, 10, shown[:, k]))
    return ClipDataset(clips, codec).use_conditions(list(dc.cond), available)


class FolderClips(Labelled):
    """Clips cut from the video files of a folder, decoded when first used and kept in a small LRU cache.

    Each file gives clips starting every `clip_hop` clip lengths (at least one per file); training draws clips
    at random through the loop's random indices, so a long file contributes many different windows.
    """

    def __init__(self, windows: list[tuple[Path, float]], codec, cache_clips: int):
        self.windows, self.codec = windows, codec
        self.cache_clips = cache_clips
        self._cache: OrderedDict[int, torch.Tensor] = OrderedDict()

    def __len__(self):
        return len(self.windows)

    def _clip(self, i: int) -> torch.Tensor:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        path, start = self.windows[i]
        clip = (self.codec.read(path, start) * 255).round().to(torch.uint8)  # [C, T, H, W]
        if self.cache_clips > 0:
            self._cache[i] = clip
            if len(self._cache) > self.cache_clips:
                self._cache.popitem(last=False)
        return clip

    def __getitem__(self, i):
        return self.codec.encode(self._clip(int(i)).float() / 255.0)

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([self[int(i)] for i in indices])  # [B, C, T, H, W]


def usable_videos(root: Path, codec) -> list[tuple[Path, float]]:
    """(path, duration) of every video under `root` that opens and decodes a frame; others are skipped by name."""
    if not root.is_dir():
        raise UserError(f"data.root is not a folder: {root}")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    found = []
    for p in files:
        try:
            info = probe(p)
            codec.read(p, frames=1)  # the first frame must decode
        except UserError as exc:
            log.warning("skipping %s", exc)
            continue
        found.append((p, info.duration))
    if not found:
        raise UserError(f"no readable videos ({', '.join(sorted(VIDEO_SUFFIXES))}) in {root}")
    return found


def folder_dataset(cfg, codec, part: str) -> FolderClips:
    dc = cfg.data
    if not dc.root:
        raise UserError("data.root must name a folder when data.dataset is 'folder'")
    if dc.clip_hop <= 0:
        raise UserError(f"data.clip_hop must be > 0, got {dc.clip_hop}")
    videos = usable_videos(Path(dc.root), codec)
    clip_s = codec.cfg.frames / codec.cfg.fps
    hop = dc.clip_hop * clip_s
    per_file = []
    for path, duration in videos:
        count = max(1, int((duration - clip_s) / hop + 1e-6) + 1) if duration > clip_s else 1
        per_file.append([(path, k * hop) for k in range(count)])
    eval_files = int(round(len(per_file) * dc.holdout))
    if eval_files >= 1 and eval_files < len(per_file):  # whole files held out
        chosen = per_file[split(len(per_file), dc.holdout, part)]
        windows = [w for f in chosen for w in f]
    else:  # too few files: hold out the last clips instead
        flat = [w for f in per_file for w in f]
        windows = flat[split(len(flat), dc.holdout, part)]
    return FolderClips(windows, codec, dc.cache_clips).use_conditions(list(dc.cond), {})


def build_dataset(cfg, codec, part: str = "train"):
    name = cfg.data.dataset
    if name == "moving-digits":
        return moving_digits_dataset(cfg, codec, part)
    if name == "folder":
        return folder_dataset(cfg, codec, part)
    raise UserError(f"unknown data.dataset {name!r} for video (moving-digits or folder)")
