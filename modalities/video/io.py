"""Writing generated clips: one video, a grid video of many clips, numbered videos, and a frame-grid PNG;
`ClipsWriter` writes them from batches as they arrive."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cm_media import checks, files
from cm_media.errors import UserError
from cm_media.modality import MediaWriter
from modalities.image.io import MAX_GRID_SIDE, GridPNG, make_grid, to_pil

from .codec import WRITE_SUFFIXES, VideoWriter, to_uint8

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


MAX_GRID_CLIPS = 64  # clips side by side in one grid video (every frame needs them all, so they are kept)
MAX_PREVIEW_CLIPS = 64  # rows of the `<stem>_frames.png` preview written next to videos
MAX_SIDE = 4096  # pixels per side of a written video frame


def check_fps(fps: float, suffix: str) -> float:
    """A frame rate the container can store exactly enough: 0.01..1000 (GIF: 0.02..50, whole centiseconds)."""
    lo, hi = (0.02, 50.0) if suffix == ".gif" else (0.01, 1000.0)
    fps = checks.number(fps, "--fps", lo, hi)
    return fps


def frame_scale(height: int, width: int, scale: int | None) -> int:
    """The upscaling factor for frames of height x width (auto when None); the result must fit MAX_SIDE."""
    if scale is None:
        return min(auto_scale(height, width), max(1, MAX_SIDE // max(height, width)))
    scale = checks.integer(scale, "--scale", 1, MAX_SIDE)
    if max(height, width) * scale > MAX_SIDE:
        top = max(1, MAX_SIDE // max(height, width))
        raise UserError(f"--scale {scale} makes {width * scale}x{height * scale}-pixel frames; written videos are at "
                        f"most {MAX_SIDE} pixels per side (--scale {top} or less here)")
    return scale


class ClipsWriter(MediaWriter):
    """`total` clips [B, C, T, H, W] arriving in batches, written by the suffix of `path` (see
    VideoModality.save): numbered videos as each batch comes (`separate`), one grid video (at most
    MAX_GRID_CLIPS clips, written at the end), or a frame-grid PNG streamed row by row (.png). Next to videos,
    `<stem>_frames.png` previews the first MAX_PREVIEW_CLIPS clips."""

    def __init__(self, path: Path, total: int, fps: float, scale: int | None, separate: bool, size: tuple[int, int]):
        path = Path(path)
        if path.is_dir():
            raise UserError(f"--out {path} is an existing folder; name a video file inside it (e.g. "
                            f"{path / 'video.mp4'}; with --separate the clips go to {path / 'video'}/)")
        if not path.suffix:
            path = path.with_suffix(".mp4")
        suffix = path.suffix.lower()
        if suffix != ".png" and suffix not in WRITE_SUFFIXES:
            raise UserError(f"cannot write {path}: use one of {', '.join(sorted(WRITE_SUFFIXES | {'.png'}))}")
        self.fps = check_fps(fps, suffix)
        self.path, self.suffix, self.total, self.separate = path, suffix, total, separate
        self.index, self.paths = 0, []
        self._kept: list[torch.Tensor] = []  # the grid video's clips, or the preview's
        self._png: GridPNG | None = None
        h, w = size
        if suffix == ".png":
            self.scale = None
            tile = max(1, math.ceil(32 / min(h, w)))
            height = total * (h * tile + max(1, tile // 2)) + max(1, tile // 2)  # a row per clip
            if height > MAX_GRID_SIDE:
                raise UserError(f"a frame grid of {total} clips would be {height} pixels tall, above the PNG limit "
                                f"of {MAX_GRID_SIDE}: write videos with --separate instead")
            files.output_file(path)
            return
        if separate:
            self.scale = frame_scale(h, w, scale)
            self.folder = files.output_folder(path.with_suffix(""))
        else:
            if total > MAX_GRID_CLIPS:
                raise UserError(f"a grid video holds at most {MAX_GRID_CLIPS} clips (-n {total}): pass --separate "
                                "for one file per clip")
            cols = math.ceil(math.sqrt(total))
            rows = math.ceil(total / cols)
            gh, gw = (h, w) if total == 1 else (rows * (h + 1) + 1, cols * (w + 1) + 1)
            self.scale = frame_scale(gh, gw, scale)
            files.output_file(path)
        files.output_file(self._preview_path())

    def _preview_path(self) -> Path:
        return self.path.with_name(f"{self.path.stem}_frames.png")

    def add(self, media):
        media = media.cpu()
        if self.suffix == ".png":
            b, c, t, h, w = media.shape
            cols = min(t, MAX_GRID_FRAMES)
            if self._png is None:
                scale = max(1, math.ceil(32 / min(h, w)))
                with files.writing(self.path):
                    self._png = GridPNG(self.path, self.total * cols, h, w, c, cols=cols, scale=scale,
                                        pad=max(1, scale // 2))
            idx = torch.linspace(0, t - 1, cols).round().long()
            with files.writing(self.path):
                self._png.add(media[:, :, idx].permute(0, 2, 1, 3, 4).reshape(b * cols, c, h, w))
            self.index += b
            return
        if self.separate:
            for clip in media:
                p = self.folder / f"{self.index:04d}{self.suffix}"
                with files.writing(p):
                    self.paths.append(write_clips(clip[None], p, self.fps, self.scale))
                self.index += 1
            keep = MAX_PREVIEW_CLIPS - sum(k.shape[0] for k in self._kept)
            if keep > 0:
                self._kept.append(media[:keep])
        else:
            self._kept.append(media)
            self.index += media.shape[0]

    def close(self):
        if self.suffix == ".png":
            with files.writing(self.path):
                return [self._png.close()] if self._png is not None else []
        kept = torch.cat(self._kept) if self._kept else None
        if not self.separate and kept is not None:
            with files.writing(self.path):
                self.paths.append(write_clips(kept, self.path, self.fps, self.scale))
        if kept is not None:
            preview = self._preview_path()
            with files.writing(preview):
                self.paths.append(save_frame_grid(kept[:MAX_PREVIEW_CLIPS], preview))
        return self.paths

    def abort(self):
        if self._png is not None:
            self._png.abort()
