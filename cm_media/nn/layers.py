"""Dims-agnostic building blocks: conv_nd, norms, the noise embedding and the residual block."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from ..parameterization import append_dims

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_nd(dims: int, *args, **kwargs) -> nn.Module:
    """nn.Conv1d / 2d / 3d by the number of data axes."""
    if dims not in _CONV:
        raise ValueError(f"conv_nd supports 1, 2 or 3 data axes, got {dims}")
    return _CONV[dims](*args, **kwargs)


def norm_groups(channels: int, max_groups: int = 32) -> int:
    """Largest group count <= max_groups that divides the channels."""
    return math.gcd(channels, max_groups)


def zero_module(module: nn.Module) -> nn.Module:
    """Zero every parameter so the block starts as the identity (residual) or as zero (output)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def sinusoidal_embedding(c_noise: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0):
    """Transformer-style sin/cos features of the scaled noise level: [B] -> [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=c_noise.device, dtype=torch.float32) / half)
    args = (scale * c_noise.float())[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class NoiseEmbedding(nn.Module):
    """c_noise [B] -> embedding [B, emb_dim] through sinusoids and a two-layer MLP."""

    def __init__(self, base: int, emb_dim: int):
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, c_noise: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(c_noise, self.base))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with a scale/shift from the noise embedding; the second conv starts at zero."""

    def __init__(self, dims, in_ch, out_ch, emb_dim, dropout=0.0, kernel_size=3, dilation=1):
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.norm1 = nn.GroupNorm(norm_groups(in_ch), in_ch)
        self.conv1 = conv_nd(dims, in_ch, out_ch, kernel_size, padding=pad, dilation=dilation)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = nn.GroupNorm(norm_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_module(conv_nd(dims, out_ch, out_ch, kernel_size, padding=pad, dilation=dilation))
        self.skip = nn.Identity() if in_ch == out_ch else conv_nd(dims, in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = append_dims(self.emb(F.silu(emb)), h.ndim).chunk(2, dim=1)  # [B, C, 1, ...] each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Downsample(nn.Module):
    """Strided conv; `stride` is per axis (e.g. (1, 2, 2) keeps the time axis of a video)."""

    def __init__(self, dims, channels, stride):
        super().__init__()
        kernel = tuple(3 if s > 1 else 1 for s in stride)
        padding = tuple(k // 2 for k in kernel)
        self.conv = conv_nd(dims, channels, channels, kernel, stride=stride, padding=padding)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by `stride` per axis, then a conv."""

    def __init__(self, dims, channels, stride):
        super().__init__()
        self.stride = tuple(stride)
        self.conv = conv_nd(dims, channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=self.stride, mode="nearest"))


def _patch_pattern(dims: int) -> tuple[str, str, dict]:
    """einops patterns '[B, C, (n0 p0), ...]' <-> '[B, (C p0 ...), n0, ...]' for `dims` data axes."""
    ns = [f"n{i}" for i in range(dims)]
    ps = [f"p{i}" for i in range(dims)]
    spread = "b c " + " ".join(f"({n} {p})" for n, p in zip(ns, ps))
    folded = f"b (c {' '.join(ps)}) " + " ".join(ns)
    return spread, folded, ps


def patchify(x: torch.Tensor, patch: list[int]) -> torch.Tensor:
    """Space-to-depth: [B, C, *axes] -> [B, C * prod(patch), *axes / patch] (axes must be multiples)."""
    spread, folded, ps = _patch_pattern(len(patch))
    return rearrange(x, f"{spread} -> {folded}", **dict(zip(ps, patch)))


def unpatchify(x: torch.Tensor, patch: list[int]) -> torch.Tensor:
    """Inverse of `patchify`: [B, C * prod(patch), *axes] -> [B, C, *axes * patch]."""
    spread, folded, ps = _patch_pattern(len(patch))
    return rearrange(x, f"{folded} -> {spread}", **dict(zip(ps, patch)))
