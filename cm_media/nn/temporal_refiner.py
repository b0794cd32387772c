"""Temporal layers in front of a per-frame decoder: a residual stack of 3D convolutions over a clip's latents
[B, C, T, h, w] that ties neighbouring frames together before each frame is decoded on its own.

Video latent-diffusion decoders gain temporal layers for the same reason (Blattmann et al. 2023, "Align your
Latents"): a generator's latents jitter from frame to frame off the codec's manifold, and a per-frame decoder
turns that jitter into flicker. Trained on noise-augmented latents of real clips (`method.latent_noise` of a
codec run) the stack maps them back towards the clean latents. Its output convolution starts at zero, so a
codec that gains it decodes exactly as before until it is trained; padding repeats the edge frames, so a single
frame is refined as a still clip.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import GroupNorm, norm_groups, zero_module


def _conv(cin: int, cout: int) -> nn.Conv3d:
    """3x3x3 over (time, height, width), edges repeated."""
    return nn.Conv3d(cin, cout, 3, padding=1, padding_mode="replicate")


class TemporalBlock(nn.Module):
    """x + conv(SiLU(norm(conv(SiLU(norm(x)))))) over (time, height, width)."""

    def __init__(self, width: int):
        super().__init__()
        self.norm1, self.conv1 = GroupNorm(norm_groups(width), width), _conv(width, width)
        self.norm2, self.conv2 = GroupNorm(norm_groups(width), width), _conv(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.norm1.modulated(h, silu=True))
        return h + self.conv2(self.norm2.modulated(out, silu=True))


class TemporalRefiner(nn.Module):
    """Latents [B, C, T, h, w] -> refined latents of the same shape: z + stack(z), the identity at initialization."""

    def __init__(self, channels: int, width: int = 32, blocks: int = 2):
        super().__init__()
        self.conv_in = _conv(channels, width)
        self.blocks = nn.ModuleList(TemporalBlock(width) for _ in range(blocks))
        self.norm_out = GroupNorm(norm_groups(width), width)
        self.conv_out = zero_module(_conv(width, channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # [B, C, T, h, w]
        h = self.conv_in(z)
        for block in self.blocks:
            h = block(h)
        return z + self.conv_out(self.norm_out.modulated(h, silu=True))
