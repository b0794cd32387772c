"""Where the digit is, told to the audio tower at the soundtrack's own time resolution (sounding video, issue 18).

The pooled Exchange summary (a 4x4 grid of averaged features per video frame, repeated over the frame's STFT
frames) times a sound only to within a frame or two: sound made for real clips puts 19% of its onsets 1-2 frames
from the bounce. A wall hit is a position event, so this module reads positions: K learned heat maps per frame,
each a softmax over the frame's cells, give K expected coordinates (spatial soft-argmax, Levine et al. 2016,
"End-to-End Training of Deep Visuomotor Policies"); a small temporal conv over the frames turns the coordinates and
their distances to the walls into features, which are linearly interpolated to the centre time of each audio
frame of the level (not repeated, so the audio sees the motion between frames) and added to the audio features
through a zero-initialized conv (a trained model gains it unchanged).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cm_media.nn.layers import GroupNorm, norm_groups, zero_module


def soft_argmax(heat: torch.Tensor) -> torch.Tensor:
    """Expected (y, x) in [-1, 1] of each map's softmax over its cells: heat [B, K, T, h, w] -> [B, K, T, 2]."""
    b, k, t, h, w = heat.shape
    p = heat.float().flatten(3).softmax(-1).view(b, k, t, h, w)  # [B, K, T, h, w]
    ys = torch.linspace(-1.0, 1.0, h, device=heat.device)
    xs = torch.linspace(-1.0, 1.0, w, device=heat.device)
    y = (p.sum(-1) * ys).sum(-1)  # [B, K, T]
    x = (p.sum(-2) * xs).sum(-1)  # [B, K, T]
    return torch.stack([y, x], -1).to(heat.dtype)


def frame_to_audio_times(frames: int, audio_frames: int, spec_frames: int) -> torch.Tensor:
    """Each audio frame's centre time in video frames, [audio_frames]: audio frame j of a level covers the
    s = spec_frames / audio_frames STFT frames js .. js + s - 1; STFT frame i is centred on the same instant as
    video frame i * frames / spec_frames (the clip's frames and STFT frames span the same seconds, the STFT
    centred); clamped to [0, frames - 1] (before the first frame, the first frame holds)."""
    s = spec_frames / audio_frames
    centre = torch.arange(audio_frames, dtype=torch.float32) * s + (s - 1) / 2  # [Ta] in STFT frames
    return (centre * frames / spec_frames).clamp(0, frames - 1)


def lerp_frames(feats: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    """Linear interpolation of per-frame features [B, C, T] at fractional frame times [Ta] -> [B, C, Ta]."""
    lo = times.floor().long().clamp(max=feats.shape[-1] - 1)  # [Ta]
    hi = (lo + 1).clamp(max=feats.shape[-1] - 1)
    w = (times - lo.to(times.dtype)).to(feats.dtype)  # [Ta]
    return feats[..., lo] * (1 - w) + feats[..., hi] * w


class KeypointExchange(nn.Module):
    """Video features [B, Cv, T, h, w] -> audio features [B, Ca, F, Ta] plus the digit's interpolated motion."""

    def __init__(self, cv: int, ca: int, keypoints: int, hidden: int, times: torch.Tensor):
        super().__init__()
        self.norm = GroupNorm(norm_groups(cv), cv)
        self.heat = nn.Conv3d(cv, keypoints, 1)
        self.motion = nn.Sequential(nn.Conv1d(4 * keypoints, hidden, 3, padding=1), nn.SiLU(),
                                    nn.Conv1d(hidden, hidden, 3, padding=1), nn.SiLU())
        self.to_audio = zero_module(nn.Conv1d(hidden, ca, 3, padding=1))
        self.register_buffer("times", times, persistent=False)  # [Ta] frame time of each audio frame

    def forward(self, hv: torch.Tensor, ha: torch.Tensor) -> torch.Tensor:
        yx = soft_argmax(self.heat(F.silu(self.norm(hv))))  # [B, K, T, 2]
        walls = 1.0 - yx.abs()  # distance to the nearer wall on each axis, 0 at the wall
        feats = torch.cat([yx, walls], -1).permute(0, 1, 3, 2).flatten(1, 2)  # [B, 4K, T]
        motion = lerp_frames(self.motion(feats), self.times)  # [B, hidden, Ta]
        return ha + self.to_audio(motion)[:, :, None]  # [B, Ca, F, Ta]
