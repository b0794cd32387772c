"""A factorized space-time UNet for video tensors [B, C, T, H, W].

Each block is a 2D residual block applied to every frame (the core ResBlock on [B*T, C, H, W]) followed by a
1D temporal convolution over frames (a (k, 1, 1) conv); chosen levels add temporal self-attention, where each
pixel attends over the frames, and optionally per-frame spatial attention. Factorizing costs about
(9 + k) / 27 of a full 3x3x3 convolution and keeps the spatial filters shared by every frame (Ho et al. 2022,
Video Diffusion Models; Singer et al. 2022, Make-A-Video). Like the core UNet, any clip length and frame size
works: axes are padded up to the total downsampling and the output is cropped back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cm_media.nn.attention import SelfAttention, attention
from cm_media.nn.embedding import BlockCondition, NoiseEmbedding, embed_conditions, embedded_spec
from cm_media.nn.layers import Downsample, GroupNorm, ResBlock, conv_nd, norm_groups, zero_module
from cm_media.nn.registry import register_arch


@dataclass
class SpaceTimeUNetConfig:
    """Hyperparameters; `down_stride` is (time, height, width) per level, [1, 2, 2] keeps every frame."""

    dims: int = 3
    in_channels: int = 1
    out_channels: int | None = None
    channels: int = 32
    channel_mult: list = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    temporal_kernel: int = 3
    temporal_attn_levels: list = field(default_factory=lambda: [1, 2])  # the middle block always has one
    spatial_attn_levels: list = field(default_factory=list)  # per-frame attention (costly at high resolution)
    num_heads: int = 4
    max_frames: int = 128  # length of the learned frame-position table of temporal attention (longer clips repeat it)
    dropout: float = 0.0
    down_stride: int | list = field(default_factory=lambda: [1, 2, 2])
    patch_size: int = 1  # fold p x p pixel patches into channels first (pixel unshuffle): p^2 fewer positions
    attention_backend: str = "sdpa"
    cond: list = field(default_factory=list)  # conditions (cm_media.conditions), filled in by training
    cond_mode: str = "embed"  # "embed" (noise embedding), "block" (per-block FiLM) or "both": see UNetConfig


class TemporalConv(nn.Module):
    """Residual 1D convolution over frames, applied at every pixel; starts as the identity."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.norm = GroupNorm(norm_groups(channels), channels)
        self.conv = zero_module(conv_nd(3, channels, channels, (kernel, 1, 1), padding=(kernel // 2, 0, 0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, C, T, H, W]
        return x + self.conv(F.silu(self.norm(x)))


class TemporalAttention(nn.Module):
    """Residual self-attention over the frames of each pixel, with learned frame positions; starts as the identity."""

    def __init__(self, channels: int, num_heads: int, max_frames: int, backend: str = "sdpa"):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads, self.backend = num_heads, backend
        self.norm = GroupNorm(norm_groups(channels), channels)
        self.pos = nn.Parameter(torch.zeros(max_frames, channels))
        nn.init.normal_(self.pos, std=0.02)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = zero_module(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        tokens = rearrange(self.norm(x), "b c t h w -> (b h w) t c")  # [B*H*W, T, C]
        pos = self.pos[torch.arange(t, device=x.device) % self.pos.shape[0]]  # [T, C]
        q, k, v = rearrange(self.qkv(tokens + pos.to(tokens.dtype)), "n t (three h d) -> three n h t d",
                            three=3, h=self.num_heads)
        out = self.proj(rearrange(attention(q, k, v, self.backend), "n h t d -> n t (h d)"))
        return x + rearrange(out, "(b h w) t c -> b c t h w", b=b, h=h, w=w)


class SpatialAttention(nn.Module):
    """The core's self-attention applied to each frame separately."""

    def __init__(self, channels: int, num_heads: int, backend: str = "sdpa"):
        super().__init__()
        self.attn = SelfAttention(channels, num_heads, norm_groups(channels), backend)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[2]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        return rearrange(self.attn(frames), "(b t) c h w -> b c t h w", t=t)


class SpaceTimeBlock(nn.Module):
    """Per-frame 2D residual block, then a temporal conv, then the optional attentions."""

    def __init__(self, in_ch, out_ch, emb_dim, cfg: SpaceTimeUNetConfig, temporal_attn: bool, spatial_attn: bool,
                 cond_dim: int = 0):
        super().__init__()
        self.spatial = ResBlock(2, in_ch, out_ch, emb_dim, cfg.dropout, 3, cond_dim=cond_dim)
        self.temporal = TemporalConv(out_ch, cfg.temporal_kernel)
        self.extra = nn.ModuleList()
        if spatial_attn:
            self.extra.append(SpatialAttention(out_ch, cfg.num_heads, cfg.attention_backend))
        if temporal_attn:
            self.extra.append(TemporalAttention(out_ch, cfg.num_heads, cfg.max_frames, cfg.attention_backend))

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond_emb: torch.Tensor | None = None) -> torch.Tensor:
        t = x.shape[2]
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        per_frame = None if cond_emb is None else cond_emb.repeat_interleave(t, dim=0)
        h = self.spatial(frames, emb.repeat_interleave(t, dim=0), per_frame)
        h = rearrange(h, "(b t) c h w -> b c t h w", t=t)
        h = self.temporal(h)
        for block in self.extra:
            h = block(h)
        return h


class SpaceTimeUpsample(nn.Module):
    """Nearest-neighbour upsampling by (time, height, width), then a per-frame 3x3 conv (3x3x3 if time grows)."""

    def __init__(self, channels: int, stride):
        super().__init__()
        self.stride = tuple(stride)
        kt = 3 if self.stride[0] > 1 else 1
        self.conv = conv_nd(3, channels, channels, (kt, 3, 3), padding=(kt // 2, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=self.stride, mode="nearest"))


class SpaceTimeUNet(nn.Module):
    """F(x [B, C, T, H, W], c_noise [B]) -> [B, C_out, T, H, W] with factorized space-time blocks."""

    def __init__(self, cfg: SpaceTimeUNetConfig):
        super().__init__()
        if cfg.dims != 3:
            raise ValueError(f"spacetime_unet needs video tensors (dims 3), got dims {cfg.dims}")
        self.cfg = cfg
        stride = [cfg.down_stride] * 3 if isinstance(cfg.down_stride, int) else list(cfg.down_stride)
        if len(stride) != 3:
            raise ValueError(f"down_stride has {len(stride)} entries for 3 data axes (time, height, width)")
        if cfg.temporal_kernel < 1 or cfg.temporal_kernel % 2 == 0:
            raise ValueError(f"temporal_kernel must be odd and >= 1, got {cfg.temporal_kernel}")
        if cfg.patch_size < 1:
            raise ValueError(f"patch_size must be >= 1, got {cfg.patch_size}")
        levels = len(cfg.channel_mult)
        p = self.patch = cfg.patch_size
        self.total_stride = [s ** (levels - 1) * f for s, f in zip(stride, (1, p, p))]
        ch = cfg.channels
        emb_dim = 4 * ch
        self.embed = NoiseEmbedding(ch, emb_dim, embedded_spec(cfg.cond, cfg.cond_mode))
        self.block_cond = BlockCondition(cfg.cond, emb_dim) if BlockCondition.wanted(cfg.cond, cfg.cond_mode) else None
        cond_dim = emb_dim if self.block_cond is not None else 0
        self.inp = conv_nd(3, cfg.in_channels * p * p, ch, (1, 3, 3), padding=(0, 1, 1))

        def block(i, o, level):
            return SpaceTimeBlock(i, o, emb_dim, cfg, level in cfg.temporal_attn_levels, level in cfg.spatial_attn_levels,
                                  cond_dim)

        self.down = nn.ModuleList()
        skips, cur = [ch], ch
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                self.down.append(block(cur, ch * mult, level))
                cur = ch * mult
                skips.append(cur)
            if level < levels - 1:
                self.down.append(Downsample(3, cur, stride))
                skips.append(cur)
        self.mid = nn.ModuleList([
            SpaceTimeBlock(cur, cur, emb_dim, cfg, True, levels - 1 in cfg.spatial_attn_levels, cond_dim),
            SpaceTimeBlock(cur, cur, emb_dim, cfg, False, False, cond_dim),
        ])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for j in range(cfg.num_res_blocks + 1):
                self.up.append(block(cur + skips.pop(), ch * mult, level))
                cur = ch * mult
                if level > 0 and j == cfg.num_res_blocks:
                    self.up.append(SpaceTimeUpsample(cur, stride))
        self.out = nn.Sequential(
            GroupNorm(norm_groups(cur), cur),
            nn.SiLU(),
            zero_module(conv_nd(3, cur, (cfg.out_channels or cfg.in_channels) * p * p, (1, 3, 3), padding=(0, 1, 1))),
        )

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        axes = x.shape[2:]  # x: [B, C, T, H, W]
        pads = [(-n) % s for n, s in zip(axes, self.total_stride)]
        if any(pads):
            x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)])
        emb, cond_emb = embed_conditions(self.embed, self.block_cond, self.cfg.cond_mode, c_noise, cond)  # [B, 4*ch]
        p = self.patch
        if p > 1:
            x = rearrange(x, "b c t (h p1) (w p2) -> b (c p1 p2) t h w", p1=p, p2=p)
        h = self.inp(x)
        hs = [h]
        for layer in self.down:
            h = layer(h, emb, cond_emb) if isinstance(layer, SpaceTimeBlock) else layer(h)
            hs.append(h)
        for layer in self.mid:
            h = layer(h, emb, cond_emb)
        for layer in self.up:
            if isinstance(layer, SpaceTimeBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), emb, cond_emb)
            else:
                h = layer(h)
        out = self.out(h)
        if p > 1:
            out = rearrange(out, "b (c p1 p2) t h w -> b c t (h p1) (w p2)", p1=p, p2=p)
        return out[(slice(None), slice(None), *(slice(0, n) for n in axes))]


__all__ = ["SpaceTimeUNet", "SpaceTimeUNetConfig", "TemporalAttention", "TemporalConv"]

register_arch("spacetime_unet", SpaceTimeUNetConfig, SpaceTimeUNet)
