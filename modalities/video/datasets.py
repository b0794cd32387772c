"""Video datasets: built-in `moving-digits` (Moving-MNIST style, made in code), `moving_mnist` (the benchmark's
setting with OpenCV's handwritten digits, moving_mnist.py), `footage` (real camera footage from Debian packages,
footage.py) and a folder of video files.

Items are model tensors [C, T, H, W] in [-1, 1] at the codec's frames, size and fps; with a learned codec (an
`nn.Module`) they are pixels [C, T, H, W] in [0, 1] instead (`encoded = False`), which the training loop encodes
on the model's device. Every dataset offers the condition `first_frame` (the clip's own first frame, cut from
each encoded clip by the training loop) besides its labels.
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

from .codec import frame_size
from .io import VIDEO_SUFFIXES, probe

log = logging.getLogger(__name__)


@dataclass
class VideoDataConfig:
    dataset: str = "moving-digits"  # moving-digits | moving_mnist | footage | folder
    root: str | None = None  # the folder, for dataset: folder
    holdout: float = 0.1  # share kept out of training for evaluation
    clips: int = 2000  # moving-digits: clips made (train + eval)
    max_digits: int = 2  # moving-digits: each clip shows 1..max_digits digits
    digit_size: int = 14  # moving-digits: digit height and width in pixels (upscaled from 8x8)
    speed: list = field(default_factory=lambda: [1.0, 2.5])  # moving-digits: pixels per frame, min and max
    seed: int = 0  # moving-digits: the clips are a function of this seed
    clip_hop: float = 0.5  # folder: clip starts are this share of a clip length apart
    cache_clips: int = 512  # folder: decoded clips kept in memory (uint8)
    sources: list = field(default_factory=list)  # footage: source names (default: cockatoo, city, vtest)
    pictures: float = 0.0  # footage, training part: share of clips that are still pictures (pictures.py)
    # conditions: moving-digits and moving_mnist label "digit1", "digit2"; every dataset has "first_frame"
    cond: list = field(default_factory=list)


def learned(codec) -> bool:
    """A codec with weights encodes on the model's device in the training loop: datasets serve pixels."""
    return isinstance(codec, torch.nn.Module)


def serve(codec, pixels: torch.Tensor) -> torch.Tensor:
    """Pixels [..., C, T, H, W] in [0, 1] as dataset items: model tensors, or the pixels for a learned codec."""
    return pixels if learned(codec) else codec.encode(pixels)


def fit_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """[B, C, T, H, W] with C 1 or 3 -> the codec's channels (grey repeated, or RGB to luma)."""
    if pixels.shape[1] == channels:
        return pixels
    if channels == 3:
        return pixels.expand(-1, 3, *pixels.shape[2:]).contiguous()
    luma = torch.tensor([0.299, 0.587, 0.114], dtype=pixels.dtype).view(1, 3, 1, 1, 1)
    return (pixels * luma).sum(1, keepdim=True)


def first_frame_condition(codec) -> dict[str, tuple[Condition, None]]:
    """The `first_frame` condition of every video dataset: cut from each (encoded) clip by the training loop."""
    return {"first_frame": (Condition("first_frame", kind="frames", dim=codec.channels, frames=1), None)}


class ClipDataset(Labelled):
    """uint8 clips [N, C, T, H, W] in memory, served as model tensors."""

    def __init__(self, clips: torch.Tensor, codec):
        self.clips, self.codec = clips, codec
        self.encoded = not learned(codec)

    def __len__(self):
        return self.clips.shape[0]

    def __getitem__(self, i):
        return serve(self.codec, self.clips[i].float() / 255.0)

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return serve(self.codec, self.clips[indices].float() / 255.0)  # [B, C, T, H, W]


class GeneratedClips(Labelled):
    """Clips a source makes on demand (`get_clips(indices)` -> pixels [B, C, T, H, W] in [0, 1]: Moving MNIST,
    footage crops), fitted to the codec's channels and served as model tensors (pixels for a learned codec)."""

    def __init__(self, source, codec, channels: int):
        self.source, self.codec, self.channels = source, codec, channels
        self.encoded = not learned(codec)

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return self.get_batch(torch.tensor([int(i)]))[0]

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return serve(self.codec, fit_channels(self.source.get_clips(indices), self.channels))


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
    h, w = frame_size(codec.cfg.size)
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
    if codec.cfg.channels == 3:
        clips = clips.expand(-1, 3, -1, -1, -1).contiguous()
    available = first_frame_condition(codec)
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
        self.encoded = not learned(codec)
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
        return serve(self.codec, self._clip(int(i)).float() / 255.0)

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
    return FolderClips(windows, codec, dc.cache_clips).use_conditions(list(dc.cond), first_frame_condition(codec))


def _square_size(cfg) -> int:
    h, w = frame_size(cfg.codec.size)
    if h != w:
        raise UserError(f"data.dataset {cfg.data.dataset} makes square frames: codec.size must be one number, got "
                        f"{cfg.codec.size}")
    return h


def _part_clips(dc, part: str) -> tuple[str, int]:
    """(source split, clip count): training clips are `data.clips`; held-out ones a `data.holdout` share of it
    (at least 256), drawn from held-out digits or footage."""
    if part == "train":
        return "train", dc.clips
    return "test", max(256, round(dc.clips * dc.holdout))


def moving_mnist_dataset(cfg, codec, part: str) -> GeneratedClips:
    """Moving MNIST at the codec's size and clip length, labelled digit1 / digit2 (the two digits shown)."""
    from .moving_mnist import MovingMNIST

    dc = cfg.data
    split_name, n = _part_clips(dc, part)
    source = MovingMNIST(split_name, num_clips=n, frames=cfg.codec.frames, size=_square_size(cfg), seed=dc.seed)
    labels = source.labels  # [N, 2]
    available = first_frame_condition(codec)
    for k in range(labels.shape[1]):
        cond = Condition(f"digit{k + 1}", classes=[str(d) for d in range(10)])
        available[cond.name] = (cond, labels[:, k])
    return GeneratedClips(source, codec, codec.cfg.channels).use_conditions(list(dc.cond), available)


def footage_dataset(cfg, codec, part: str) -> GeneratedClips:
    """Random crops of real footage (footage.py); held out: the last 20% of each file."""
    from .footage import DEFAULT_SOURCES, Footage

    dc = cfg.data
    split_name, n = _part_clips(dc, part)
    source = Footage(split_name, num_clips=n, frames=cfg.codec.frames, size=_square_size(cfg), seed=dc.seed,
                     fps=cfg.codec.fps, sources=tuple(dc.sources) or DEFAULT_SOURCES)
    if dc.pictures > 0 and part == "train":
        from .pictures import Pictures, WithPictures
        stills = Pictures(n, frames=cfg.codec.frames, size=_square_size(cfg), seed=dc.seed)
        source = WithPictures(source, stills, dc.pictures, dc.seed)
    return GeneratedClips(source, codec, codec.cfg.channels).use_conditions(list(dc.cond), first_frame_condition(codec))


DATASETS = {"moving-digits": moving_digits_dataset, "moving_mnist": moving_mnist_dataset,
            "footage": footage_dataset, "folder": folder_dataset}


def build_dataset(cfg, codec, part: str = "train"):
    name = cfg.data.dataset
    if name not in DATASETS:
        raise UserError(f"unknown data.dataset {name!r} for video ({', '.join(DATASETS)})")
    return DATASETS[name](cfg, codec, part)
