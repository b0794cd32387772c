"""The sounding-video codec: a grey clip and its soundtrack <-> one flat model tensor [B, 1, D].

The model sees the clip's pixels in [-1, 1] and the soundtrack's compressed complex STFT (the audio modality's
STFTCodec: n_fft 512, hop 250, Nyquist bin dropped; 2 s give 128 frames, 8 per video frame) side by side in one
vector, so every core method noises and denoises both at once, and an edit mask can keep one stream and
regenerate the other. The joint backbone (joint_net.py) unpacks the vector into the two streams.

Decoded media is flat too, [B, T*H*W + N]: the clip's pixels, then the N audio samples; `split_media` and
`pack_media` convert, and only the writers and metrics look inside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cm_media.errors import UserError
from modalities.audio.codec import AudioCodecConfig, STFTCodec


@dataclass
class AVCodecConfig:
    size: int = 64  # square frames, pixels per side
    frames: int = 16  # frames per clip
    fps: float = 8.0
    sample_rate: int = 16000  # Hz of the mono soundtrack
    n_fft: int = 512  # 256 bins of 31 Hz once the Nyquist bin is dropped
    hop: int = 250  # audio frames of 15.6 ms; must divide samples-per-video-frame
    compress: float = 0.5  # |X|^a e^{i phase}
    spec_scale: float = 1.0


@dataclass(frozen=True)
class AVLayout:
    """Where each stream sits in the flat model tensor and in flat media."""

    frames: int
    size: int
    samples: int  # audio samples per clip
    bins: int  # STFT bins kept
    spec_frames: int  # STFT frames kept (one per hop)

    @property
    def video_numel(self) -> int:
        return self.frames * self.size * self.size

    @property
    def audio_numel(self) -> int:
        return 2 * self.bins * self.spec_frames

    @property
    def numel(self) -> int:
        return self.video_numel + self.audio_numel


def layout_of(cfg: AVCodecConfig) -> AVLayout:
    """The stream layout of a config; a UserError when the audio frames do not tile the video frames."""
    samples = cfg.frames / cfg.fps * cfg.sample_rate
    per_frame = cfg.sample_rate / cfg.fps
    if abs(samples - round(samples)) > 1e-6 or abs(per_frame / cfg.hop - round(per_frame / cfg.hop)) > 1e-6:
        raise UserError(f"codec.hop {cfg.hop} must divide the {per_frame:g} audio samples of one video frame "
                        f"(codec.sample_rate / codec.fps)")
    samples = round(samples)
    return AVLayout(cfg.frames, cfg.size, samples, cfg.n_fft // 2, samples // cfg.hop)


def split_media(media: torch.Tensor, layout: AVLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat media [B, T*H*W + N] -> (video [B, 1, T, H, W] in [0, 1], audio [B, 1, N])."""
    b, v = media.shape[0], layout.video_numel
    video = media[:, :v].reshape(b, 1, layout.frames, layout.size, layout.size)
    return video, media[:, v:].reshape(b, 1, -1)


def pack_media(video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
    """(video [B, 1, T, H, W], audio [B, 1, N]) -> flat media [B, T*H*W + N]."""
    return torch.cat([video.flatten(1).float(), audio.flatten(1).float()], 1)


def split_model(x: torch.Tensor, layout: AVLayout) -> tuple[torch.Tensor, torch.Tensor]:
    """Model tensor [B, 1, D] -> (pixels [B, 1, T, H, W] in [-1, 1], compressed STFT [B, 2, F, frames])."""
    b, v = x.shape[0], layout.video_numel
    flat = x.reshape(b, -1)
    video = flat[:, :v].reshape(b, 1, layout.frames, layout.size, layout.size)
    return video, flat[:, v:].reshape(b, 2, layout.bins, layout.spec_frames)


def pack_model(video: torch.Tensor, spec: torch.Tensor) -> torch.Tensor:
    """(pixels [B, 1, T, H, W], STFT [B, 2, F, frames]) -> model tensor [B, 1, D]."""
    return torch.cat([video.flatten(1), spec.flatten(1)], 1).unsqueeze(1)


class AVCodec:
    """Flat media <-> flat model tensor; exact for the video, and for the audio up to the last half hop."""

    channels = 1
    dims = 1

    def __init__(self, cfg: AVCodecConfig):
        self.cfg = cfg
        self.layout = layout_of(cfg)
        self.stft = STFTCodec(AudioCodecConfig(sample_rate=cfg.sample_rate, representation="stft", n_fft=cfg.n_fft,
                                               hop=cfg.hop, compress=cfg.compress, spec_scale=cfg.spec_scale))

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        video, audio = split_media(media, self.layout)
        spec = self.stft.encode(audio)[..., : self.layout.spec_frames]  # [B, 2, F, frames]; drop the end frame
        return pack_model(video * 2 - 1, spec)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        video, spec = split_model(x.float(), self.layout)
        audio = self.stft.decode(F.pad(spec, (0, 1)))[..., : self.layout.samples]  # [B, 1, N]
        return pack_media(((video + 1) / 2).clamp(0, 1), audio.clamp(-1, 1))


def build_codec(cfg: AVCodecConfig) -> AVCodec:
    if cfg.size < 8 or cfg.size % 4:
        raise UserError(f"codec.size must be a multiple of 4 and at least 8, got {cfg.size}")
    if cfg.n_fft < 8 or cfg.n_fft % 8:
        raise UserError(f"codec.n_fft must be a multiple of 8, got {cfg.n_fft}")
    if not math.isfinite(cfg.fps) or cfg.fps <= 0:
        raise UserError(f"codec.fps must be a positive number, got {cfg.fps}")
    return AVCodec(cfg)
