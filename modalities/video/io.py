"""Writing generated clips: one video, a grid video of many clips, numbered videos, and a frame-grid PNG."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from modalities.image.io import make_grid, to_pil

from .codec import VideoWriter, to_uint8

MIN_SHORT_SIDE = 128  # default upscaling target for written videos, in pixels
MAX_GRID_FRAMES = 16  # columns of a frame-grid PNG; longer clips show evenly spaced frames


def auto_scale(height: int, width: int, short_side: int = MIN_SHORT_SIDE) -> int:
    """Smallest integer nearest-neighbour factor that brings the short side to `short_side` pixels (at least 1)."""
    return max(1, math.ceil(short_side / min(height, width)))


def _upscale(frame: torch.Tensor, scale: int) -> torch.Tensor:
    """[C, H, W] -> [C, H*scale, W*scale] by pixel repetition (keeps small clips crisp)."""
    return frame.repeat_interleave(scale, -1).repeat_interleave(scale, -2) if scale > 1 else frame


def tile_frame(clips: torch.Tensor, t: int) -> torch.Tensor:
    """Frame t of every clip [B, C, T, H, W] side by side: one clip gives its frame, several a bordered grid."""
    return clips[0, :, t] if clips.shape[0] == 1 else make_grid(clips[:, :, t], pad=1)


def write_clips(clips: torch.Tensor, path: Path, fps: float, scale: int | None = None) -> Path:
    """Write clips [B, C, T, H, W] in [0, 1] as one video (a grid when B > 1), streaming frame by frame."""
    first = tile_frame(clips, 0)
    scale = scale or auto_scale(*first.shape[-2:])
    h, w = first.shape[-2] * scale, first.shape[-1] * scale
    with VideoWriter(path, fps, h, w, channels=clips.shape[1]) as writer:
        for t in range(clips.shape[2]):
            writer.write(to_uint8(_upscale(tile_frame(clips, t), scale)))
    return Path(path)


def save_frame_grid(clips: torch.Tensor, path: Path, min_tile: int = 32) -> Path:
    """PNG with one row per clip and one column per frame (at most MAX_GRID_FRAMES, evenly spaced)."""
    b, c, t, h, w = clips.shape
    cols = min(t, MAX_GRID_FRAMES)
    idx = torch.linspace(0, t - 1, cols).round().long()
    frames = clips[:, :, idx].permute(0, 2, 1, 3, 4).reshape(b * cols, c, h, w)  # [B*cols, C, H, W], row-major
    scale = max(1, math.ceil(min_tile / min(h, w)))
    grid = make_grid(_upscale(frames.cpu(), scale), nrow=cols, pad=max(1, scale // 2))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(grid).save(path)
    return path
