"""A UNet for 1, 2 or 3 data axes (waveforms, spectrograms/images, videos) conditioned on c_noise.

Any input length works: the forward pass pads each axis up to a multiple of the total downsampling and
crops the output back, so fully convolutional models generate longer clips than they were trained on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from cm_media.nn.attention import SelfAttention
from cm_media.nn.embedding import BlockCondition, NoiseEmbedding, embed_conditions, embedded_spec
from cm_media.nn.layers import (
    Downsample,
    GroupNorm,
    ResBlock,
    Upsample,
    conv_nd,
    norm_groups,
    patchify,
    unpatchify,
    zero_module,
)
from cm_media.nn.registry import register_arch


@dataclass
class UNetConfig:
    """UNet hyperparameters; `down_stride` is an int or one stride per data axis, applied at each level.

    `patch` folds non-overlapping patches into channels before the first conv (space-to-depth) and unfolds
    the output: a waveform with patch 16 runs at 1/16 of its length, which is what makes long clips cheap."""

    dims: int = 2
    in_channels: int = 1
    out_channels: int | None = None
    channels: int = 64
    channel_mult: list = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 2
    attn_levels: list = field(default_factory=list)
    num_heads: int = 4
    dropout: float = 0.0
    down_stride: int | list = 2
    kernel_size: int = 3
    dilations: list = field(default_factory=lambda: [1])
    attention_backend: str = "sdpa"
    patch: int | list = 1
    cond: list = field(default_factory=list)  # conditions (cm_media.conditions), filled in by training
    # how conditions reach the network: "embed" adds them to the noise embedding (EDM), "block" gives every
    # residual block a zero-initialized FiLM from the conditions alone (DiT's adaLN-Zero), "both" does both
    cond_mode: str = "embed"


def _per_axis(cfg: UNetConfig) -> tuple[list[int], list[int]]:
    """(down stride, patch) per data axis, from one int or a list each."""
    d = cfg.dims
    stride = [cfg.down_stride] * d if isinstance(cfg.down_stride, int) else list(cfg.down_stride)
    if len(stride) != d:
        raise ValueError(f"down_stride has {len(stride)} entries for {d} data axes")
    patch = [cfg.patch] * d if isinstance(cfg.patch, int) else list(cfg.patch)
    if len(patch) != d or min(patch) < 1:
        raise ValueError(f"patch must be a positive int or one per data axis ({d}), got {cfg.patch}")
    return stride, patch


class UNet(nn.Module):
    """Encoder-decoder with skip connections; F(x, c_noise, cond) with x [B, C, *axes], c_noise [B], cond a dict."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dims
        self.stride, self.patch = stride, patch = _per_axis(cfg)
        fold = math.prod(patch)
        levels = len(cfg.channel_mult)
        self.total_stride = [p * s ** (levels - 1) for p, s in zip(patch, stride)]
        ch = cfg.channels
        emb_dim = 4 * ch
        self.embed = NoiseEmbedding(ch, emb_dim, embedded_spec(cfg.cond, cfg.cond_mode))
        self.block_cond = BlockCondition(cfg.cond, emb_dim) if BlockCondition.wanted(cfg.cond, cfg.cond_mode) else None
        cond_dim = emb_dim if self.block_cond is not None else 0
        self.inp = conv_nd(d, cfg.in_channels * fold, ch, cfg.kernel_size, padding=cfg.kernel_size // 2)

        def res(i, o, j):
            dil = cfg.dilations[j % len(cfg.dilations)]
            return ResBlock(d, i, o, emb_dim, cfg.dropout, cfg.kernel_size, dil, cond_dim)

        def attn(c):
            return SelfAttention(c, cfg.num_heads, norm_groups(c), cfg.attention_backend)

        self.down = nn.ModuleList()
        skips = [ch]
        cur = ch
        for level, mult in enumerate(cfg.channel_mult):
            for j in range(cfg.num_res_blocks):
                blocks = [res(cur, ch * mult, j)]
                cur = ch * mult
                if level in cfg.attn_levels:
                    blocks.append(attn(cur))
                self.down.append(nn.ModuleList(blocks))
                skips.append(cur)
            if level < levels - 1:
                self.down.append(nn.ModuleList([Downsample(d, cur, stride)]))
                skips.append(cur)
        self.mid = nn.ModuleList([res(cur, cur, 0), attn(cur), res(cur, cur, 1)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for j in range(cfg.num_res_blocks + 1):
                blocks = [res(cur + skips.pop(), ch * mult, j)]
                cur = ch * mult
                if level in cfg.attn_levels:
                    blocks.append(attn(cur))
                if level > 0 and j == cfg.num_res_blocks:
                    blocks.append(Upsample(d, cur, stride))
                self.up.append(nn.ModuleList(blocks))
        self.out = nn.Sequential(
            GroupNorm(norm_groups(cur), cur),
            nn.SiLU(),
            zero_module(conv_nd(d, cur, (cfg.out_channels or cfg.in_channels) * fold, 3, padding=1)),
        )

    def _weight_format(self) -> torch.memory_format | None:
        """channels_last(_3d) when the convs' weights are stored that way (sample.channels_last), else None.

        Read off the output conv (its input channels are > 1, so its layout is unambiguous, unlike the stem's for
        a grey image): every activation must follow, or the convs and GroupNorms fall off their fast paths."""
        w = self.out[-1].weight
        fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(w.dim())
        return fmt if fmt is not None and not w.is_contiguous() and w.is_contiguous(memory_format=fmt) else None

    @staticmethod
    def _run(blocks, h, emb, cond_emb):
        for b in blocks:
            h = b(h, emb, cond_emb) if isinstance(b, ResBlock) else b(h)
        return h

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        axes = x.shape[2:]  # x: [B, C, *axes]
        pads = [(-n) % s for n, s in zip(axes, self.total_stride)]
        if any(pads):
            x = F.pad(x, [p for pad in reversed(pads) for p in (0, pad)])
        emb, cond_emb = embed_conditions(self.embed, self.block_cond, self.cfg.cond_mode, c_noise, cond)  # [B, 4 * ch]
        h = self.inp(patchify(x, self.patch))  # [B, C * prod(patch), *axes / patch]
        fmt = self._weight_format()
        if fmt is not None and not h.is_contiguous(memory_format=fmt):
            h = h.contiguous(memory_format=fmt)  # a 1-channel input leaves the stem's output in plain layout
        hs = [h]
        for blocks in self.down:
            h = self._run(blocks, h, emb, cond_emb)
            hs.append(h)
        h = self._run(self.mid, h, emb, cond_emb)
        for blocks in self.up:
            h = self._run(blocks, torch.cat([h, hs.pop()], dim=1), emb, cond_emb)
        out = unpatchify(self.out(h), self.patch)  # [B, C_out, *axes]
        return out[(slice(None), slice(None), *(slice(0, n) for n in axes))]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["UNet", "UNetConfig", "count_parameters"]

register_arch("unet", UNetConfig, UNet)
