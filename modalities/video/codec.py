"""Video codec: pixels [B, C, T, H, W] in [0, 1] <-> model tensors in [-1, 1]; video files through PyAV.

`codec.kind: latent` instead codes each frame with a trained autoencoder (`codec.path`: a codec run or its
export, cm_media/nn/latent.py): model tensors are its scaled latents [B, latent_channels, T, H/f, W/f].

Reading streams frames out of the container and stops once the clip is full, so a long file is never decoded
whole. Frame rates are resampled by sample-and-hold (each output time shows the latest source frame, allowing a quarter of an
output period for rounded timestamps), sizes by
scaling to cover the target and cropping the centre; a clip that runs past the end of the file repeats its
last frame, so a one-frame video or a still image reads as a still clip. Writing streams one frame at a time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from cm_media.errors import UserError
from cm_media.nn.latent import LatentCodec, autoencoder_arch, read_codec_config
from modalities.image.codec import PixelCodec

VIDEO_SUFFIXES = {".mp4", ".m4v", ".webm", ".mkv", ".mov", ".avi", ".gif"}
_H264_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv"}
WRITE_SUFFIXES = _H264_SUFFIXES | {".webm", ".gif"}
_LATE = 0.25  # a frame stamped up to this share of an output frame period after a target time still counts


@dataclass
class VideoCodecConfig:
    size: int | list = 32  # frame size: an int (square) or [height, width]
    frames: int = 16  # clip length in frames
    fps: float = 8.0  # clip frame rate: input files are resampled to it, generated clips play at it
    channels: int = 1  # 1 grey, 3 RGB
    kind: str = "pixel"  # pixel | latent (a trained autoencoder per frame)
    path: str | None = None  # latent: the codec run (its checkpoint or export, or a shipped codec's name) to use
    autoencoder: dict = field(default_factory=dict)  # latent: its config, read from `path` once and recorded
    latent_scale: float | None = None  # latent: replaces the scale the codec run fitted (unit-std latents)


def frame_size(size) -> tuple[int, int]:
    """(height, width) from the config's `size` (an int or [height, width])."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if len(hw) != 2 or not all(isinstance(v, int) and v >= 1 for v in hw):
        raise UserError(f"codec.size must be a positive int or [height, width], got {size!r}")
    return hw


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


class VideoCodec(PixelCodec):
    """Pixels in [0, 1] <-> model tensors in [-1, 1], both [B, C, T, H, W]; file reading at the config's format."""

    dims = 3

    def __init__(self, cfg: VideoCodecConfig):
        super().__init__(cfg.channels)
        if cfg.frames < 1:
            raise UserError(f"codec.frames must be >= 1, got {cfg.frames}")
        if cfg.fps <= 0:
            raise UserError(f"codec.fps must be > 0, got {cfg.fps}")
        self.cfg = cfg
        self.size = frame_size(cfg.size)

    def read(self, path: str | Path, start: float = 0.0, frames: int | None = None) -> torch.Tensor:
        """A clip of `frames` (default codec.frames) from `start` seconds: pixels [C, T, H, W] in [0, 1]."""
        clip = read_clip(path, self.cfg.fps, frames or self.cfg.frames, self.size, self.channels, start)
        return clip.float() / 255.0


CODECS_DIR = Path(__file__).resolve().parent / "codecs"  # trained codecs shipped with the package, by name


def shipped_codecs() -> list[str]:
    """Names of the codecs in CODECS_DIR (each an exported codec run)."""
    return sorted(p.parent.name for p in CODECS_DIR.glob("*/model.safetensors"))


def codec_source(path: str) -> str:
    """`codec.path` as a file or folder: as given when it exists, else a shipped codec of that name."""
    if Path(path).exists():
        return path
    if (CODECS_DIR / path / "model.safetensors").is_file():
        return str(CODECS_DIR / path)
    raise UserError(f"codec.path not found: {path} (a codec run directory, one of its checkpoints or exports, or a "
                    f"shipped codec: {', '.join(shipped_codecs()) or 'none'})")


def resolve_latent(cfg: VideoCodecConfig) -> None:
    """Check a latent codec config and record its autoencoder's config from `codec.path` (read once: a run keeps
    it, so generation rebuilds the codec without the codec run)."""
    if cfg.kind not in ("pixel", "latent"):
        raise UserError(f"unknown codec.kind {cfg.kind!r} for video (pixel or latent)")
    if cfg.kind == "pixel":
        return
    if not cfg.autoencoder:
        if not cfg.path:
            raise UserError("codec.kind latent needs codec.path: a codec run (method.name: autoencoder) or its export")
        run = read_codec_config(codec_source(cfg.path))
        if (run.get("codec") or {}).get("kind", "pixel") != "pixel" or run.get("modality") != "video":
            raise UserError(f"codec.path {cfg.path} is not a video codec run on pixels")
        cfg.autoencoder = {"in_channels": (run.get("codec") or {}).get("channels", 1), **autoencoder_arch(run)}
    arch = cfg.autoencoder
    if arch.get("dims", 2) != 2:
        raise UserError(f"a video latent codec codes frames: its autoencoder must be 2D, got dims {arch.get('dims')}")
    if arch.get("in_channels", 1) != cfg.channels:
        raise UserError(f"codec.channels is {cfg.channels} but the codec at {cfg.path} codes "
                        f"{arch.get('in_channels', 1)}-channel frames")


class LatentVideoCodec(LatentCodec):
    """Pixels [B, C, T, H, W] in [0, 1] <-> latents [B, latent_channels, T, H/f, W/f], frame by frame with the
    autoencoder of a codec run (trained on pixels in [-1, 1], the pixel codec's model tensors)."""

    dims = 3

    def __init__(self, cfg: VideoCodecConfig):
        resolve_latent(cfg)
        super().__init__(cfg.autoencoder, cfg.path, cfg.latent_scale, in_scale=2.0, in_shift=-1.0, clamp=(0.0, 1.0))
        self.cfg = cfg
        self.pixel_size = frame_size(cfg.size)
        if any(n % self.factor for n in self.pixel_size):
            raise UserError(f"codec.size {cfg.size} must be a multiple of the latent codec's downsampling {self.factor}")
        self.size = tuple(n // self.factor for n in self.pixel_size)  # of the model tensor

    def weights_source(self) -> str:
        return codec_source(self.path)  # a shipped codec by name, else the path

    def read(self, path: str | Path, start: float = 0.0, frames: int | None = None) -> torch.Tensor:
        """A clip of `frames` (default codec.frames) from `start` seconds: pixels [C, T, H, W] in [0, 1]."""
        clip = read_clip(path, self.cfg.fps, frames or self.cfg.frames, self.pixel_size, self.cfg.channels, start)
        return clip.float() / 255.0


def build_video_codec(cfg: VideoCodecConfig):
    """The codec of `codec.kind`: pixels, or a trained autoencoder's latents."""
    if cfg.kind == "latent":
        return LatentVideoCodec(cfg)
    resolve_latent(cfg)  # checks the kind
    return VideoCodec(cfg)
