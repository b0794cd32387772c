"""Sounding-video datasets: `sounding_digits` (sounding_digits.py), made on demand from (seed, split, index).

Items are flat model tensors [1, D] (codec.py); the condition `digit` labels each clip with its digit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cm_media.conditions import Condition, Labelled
from cm_media.errors import UserError

from .codec import AVCodec, pack_media

DATASETS = ("sounding_digits",)


@dataclass
class AVDataConfig:
    dataset: str = "sounding_digits"
    clips: int = 100000  # training clips; held-out clips: a `holdout` share of it (at least 256), from held-out digits
    holdout: float = 0.01
    seed: int = 0
    cond: list = field(default_factory=list)  # "digit"
    sound: str = "note"  # what a wall hit sounds like: "note" (the digit's pitch) or "word" (the digit's word)
    small_words: bool = False  # sound "word": the few test voices of spoken_digits (seconds to render), not all


class SoundingClips(Labelled):
    """A SoundingDigits source served as model tensors [B, 1, D]; `source` keeps the clips' ground truth."""

    def __init__(self, source, codec: AVCodec):
        self.source, self.codec = source, codec

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        return self.get_batch(torch.tensor([int(i)]))[0]

    def get_media(self, indices) -> torch.Tensor:
        """Flat media [B, T*H*W + N] of the clips."""
        return pack_media(*self.source.get_clips(indices))

    def get_batch(self, indices: torch.Tensor) -> torch.Tensor:
        return self.codec.encode(self.get_media(indices))  # [B, 1, D]


def build_dataset(cfg, codec: AVCodec, part: str = "train") -> SoundingClips:
    from .sounding_digits import SoundingDigits

    dc, cc = cfg.data, cfg.codec
    if dc.dataset not in DATASETS:
        raise UserError(f"unknown data.dataset {dc.dataset!r} for av ({', '.join(DATASETS)})")
    split, n = ("train", dc.clips) if part == "train" else ("test", max(256, round(dc.clips * dc.holdout)))
    source = SoundingDigits(split, n, dc.seed, frames=cc.frames, size=cc.size, sample_rate=cc.sample_rate,
                            sound=dc.sound, small_words=dc.small_words)
    if abs(source.fps - cc.fps) > 1e-9:
        raise UserError(f"sounding_digits clips are at {source.fps:g} fps; set codec.fps: {source.fps:g}")
    digit = Condition("digit", classes=[str(d) for d in range(10)])
    return SoundingClips(source, codec).use_conditions(list(dc.cond), {"digit": (digit, source.labels)})
