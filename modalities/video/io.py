"""Video file reading and writing through PyAV, and writing generated clips: one video, a grid video of many
clips, numbered videos, and a frame-grid PNG; `ClipsWriter` writes them from batches as they arrive.

Reading streams frames out of the container and stops once the clip is full, so a long file is never decoded
whole. Frame rates are resampled by sample-and-hold (each output time shows the latest source frame, allowing a quarter of an
output period for rounded timestamps), sizes by
scaling to cover the target and cropping the centre; a clip that runs past the end of the file repeats its
last frame, so a one-frame video or a still image reads as a still clip. Writing streams one frame at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from cm_media import checks, files
from cm_media.errors import UserError
from cm_media.modality import MediaWriter
from modalities.image.io import MAX_GRID_SIDE, GridPNG, make_grid, to_pil

VIDEO_SUFFIXES = {".mp4", ".m4v", ".webm", ".mkv", ".mov", ".avi", ".gif"}
_H264_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv"}
WRITE_SUFFIXES = _H264_SUFFIXES | {".webm", ".gif"}
_LATE = 0.25  # a frame stamped up to this share of an output frame period after a target time still counts


@dataclass
class VideoInfo:
    """What a container says about its first video stream (duration and fps may be estimates)."""

    path: Path
    width: int
    height: int
    fps: float
    duration: float  # seconds, 0 when the container does not say


def _open(path: Path):
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UserError(f"cannot read video {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise UserError(f"cannot read video {path}: no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and duration of a video file, without decoding it."""
    path = Path(path)
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        return VideoInfo(path, stream.codec_context.width, stream.codec_context.height, fps, max(duration, 0.0))


def _fit_frame(frame: av.VideoFrame, height: int, width: int, channels: int) -> np.ndarray:
    """Scale a decoded frame to cover (height, width) keeping its aspect, crop the centre: uint8 [H, W, C]."""
    scale = max(height / frame.height, width / frame.width)
    sh, sw = max(height, round(frame.height * scale)), max(width, round(frame.width * scale))
    method = "AREA" if scale < 1 else "BICUBIC"
    fmt = "gray" if channels == 1 else "rgb24"
    arr = frame.reformat(width=sw, height=sh, format=fmt, interpolation=method).to_ndarray()
    arr = arr.reshape(sh, sw, channels)
    top, left = (sh - height) // 2, (sw - width) // 2
    return arr[top: top + height, left: left + width]


def iter_clip_frames(
    path: str | Path, fps: float, count: int, size: tuple[int, int], channels: int = 1, start: float = 0.0,
) -> Iterator[np.ndarray]:
    """Yield `count` frames (uint8 [H, W, C]) at times start + i/fps, decoding only as far as needed."""
    path = Path(path)
    if fps <= 0 or count < 1:
        raise UserError(f"cannot read video {path}: fps must be > 0 and the clip at least one frame")
    height, width = size
    container = _open(path)
    emitted = 0
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if start > 0:
            try:
                offset = stream.start_time or 0
                container.seek(offset + int(start / stream.time_base), stream=stream, backward=True)
            except (av.FFmpegError, OSError, ValueError):
                container.seek(0)
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        late = _LATE / fps  # absorbs rounded timestamps (gif stores 1/100 s)
        prev = None
        for k, frame in enumerate(container.decode(stream)):
            t = frame.time if frame.time is not None else k / rate
            # every target time before this frame shows the previous one (or this one, before the first)
            while emitted < count and start + emitted / fps + late < t:
                yield _fit_frame(prev if prev is not None else frame, height, width, channels)
                emitted += 1
            if emitted >= count:
                break
            prev = frame
        if prev is None and emitted == 0:
            raise UserError(f"cannot read video {path}: no frames decoded")
        while emitted < count:  # past the end: hold the last frame
            yield _fit_frame(prev, height, width, channels)
            emitted += 1
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise UserError(f"cannot read video {path}: {exc}") from None
    finally:
        container.close()


def read_clip(
    path: str | Path, fps: float, count: int, size: tuple[int, int], channels: int = 1, start: float = 0.0,
) -> torch.Tensor:
    """One clip as uint8 [C, T, H, W] (see iter_clip_frames)."""
    frames = list(iter_clip_frames(path, fps, count, size, channels, start))
    return torch.from_numpy(np.stack(frames)).permute(3, 0, 1, 2).contiguous()


def to_uint8(frame: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [0, 1] -> uint8 [H, W, C]."""
    return (frame.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()


class VideoWriter:
    """Streams uint8 frames [H, W, C] (C = 1 or 3) into a file chosen by suffix.

    mp4/m4v/mov/mkv: H.264 (libx264) yuv420p, with +faststart for mp4, so browsers play it; webm: VP9 yuv420p;
    gif: 8-bit grey for one-channel frames, 3-3-2 bit colour otherwise. yuv420p needs even sizes, so an odd height or width gets one more row/column repeating the edge.
    """

    def __init__(self, path: str | Path, fps: float, height: int, width: int, channels: int = 3, crf: int = 18):
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_SUFFIXES:
            raise UserError(f"cannot write video {self.path}: unknown suffix (use {', '.join(sorted(WRITE_SUFFIXES))})")
        if fps <= 0:
            raise UserError(f"cannot write video {self.path}: fps must be > 0, got {fps}")
        self.height, self.width = height, width
        self.gif = suffix == ".gif"
        self.pad = (0, 0) if self.gif else (height % 2, width % 2)
        rate = Fraction(fps).limit_denominator(1001)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = {"movflags": "+faststart"} if suffix in (".mp4", ".m4v", ".mov") else {}
        self.container = av.open(str(self.path), "w", options=options)
        if self.gif:
            self.stream = self.container.add_stream("gif", rate=rate)
            self.stream.pix_fmt = "gray" if channels == 1 else "rgb8"
        elif suffix == ".webm":
            self.stream = self.container.add_stream("libvpx-vp9", rate=rate,
                                                    options={"crf": str(crf + 12), "b:v": "0", "row-mt": "1"})
            self.stream.pix_fmt = "yuv420p"
        else:
            self.stream = self.container.add_stream("libx264", rate=rate, options={"crf": str(crf), "preset": "fast"})
            self.stream.pix_fmt = "yuv420p"
        self.stream.height, self.stream.width = height + self.pad[0], width + self.pad[1]
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        """Encode one uint8 frame [H, W, C]."""
        if frame.ndim == 2:
            frame = frame[..., None]
        if frame.shape[:2] != (self.height, self.width):
            raise ValueError(f"frame size {frame.shape[:2]} != writer size {(self.height, self.width)}")
        if frame.shape[2] == 1:
            frame = np.repeat(frame, 3, axis=2)
        if any(self.pad):
            frame = np.pad(frame, ((0, self.pad[0]), (0, self.pad[1]), (0, 0)), mode="edge")
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        if self.gif:
            video_frame = video_frame.reformat(format=self.stream.pix_fmt)
        for packet in self.stream.encode(video_frame):
            self.container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        self.container.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_video(path: str | Path, frames: torch.Tensor | Iterable[torch.Tensor], fps: float) -> Path:
    """Write a clip [C, T, H, W] in [0, 1] (or an iterable of [C, H, W] frames) to a video file, frame by frame."""
    it = frames.unbind(1) if torch.is_tensor(frames) else iter(frames)
    writer = None
    try:
        for frame in it:
            if writer is None:
                writer = VideoWriter(path, fps, frame.shape[-2], frame.shape[-1], frame.shape[0])
            writer.write(to_uint8(frame))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise UserError(f"cannot write video {path}: no frames")
    return Path(path)


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
