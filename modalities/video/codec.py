"""Video codecs: pixels [B, C, T, H, W] in [0, 1] <-> model tensors in [-1, 1] (`VideoCodec`), or with
`codec.kind: latent` a trained autoencoder coding each frame (`codec.path`: a codec run or its export,
cm_media/nn/latent.py): model tensors are its scaled latents [B, latent_channels, T, H/f, W/f]. Reading and
writing video files (PyAV) is io.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from cm_media.errors import UserError
from cm_media.nn.latent import LatentCodec
from modalities.image.codec import PixelCodec

from .io import read_clip


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
    """Check a latent codec config: its autoencoder's config, recorded from `codec.path` when the run config was
    loaded (cm_media/runs/codec_runs.py; a run keeps it, so generation rebuilds the codec without the codec run)."""
    if cfg.kind not in ("pixel", "latent"):
        raise UserError(f"unknown codec.kind {cfg.kind!r} for video (pixel or latent)")
    if cfg.kind == "pixel":
        return
    if not cfg.autoencoder:
        if not cfg.path:
            raise UserError("codec.kind latent needs codec.path: a codec run (method.name: autoencoder) or its export")
        raise UserError(f"codec.path {cfg.path}: its autoencoder's config was not read (load the run config "
                        "with cm_media.runs.config, which records it)")
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
