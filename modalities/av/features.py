"""Metric features of sounding video: the video modality's features of the clip beside the audio modality's of
the soundtrack, so FD sees both streams (per-stream FDs: `stream_features`)."""

from __future__ import annotations

import torch

from modalities.audio.features import features as audio_features
from modalities.video.features import features as video_features

from .codec import layout_of, split_media


def stream_features(media: torch.Tensor, cfg) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat media [B, D] -> (video features [B, Dv], audio features [B, Da])."""
    video, audio = split_media(media, layout_of(cfg.codec))
    return video_features(video, cfg), audio_features(audio, cfg)


def features(media: torch.Tensor, cfg) -> torch.Tensor:
    """Flat media [B, D] -> [B, Dv + Da]."""
    return torch.cat(stream_features(media, cfg), 1)
