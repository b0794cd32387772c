"""A DiT-style patch transformer for 1, 2 or 3 data axes, conditioned on c_noise through adaLN-zero.

Tokens are non-overlapping patches cut with einops: 1D patches of a waveform [B, C, T], 2D patches of a
spectrogram or image [B, C, H, W], spatiotemporal tubelets of a video [B, C, T, H, W]. Each axis is padded up
to a multiple of its patch and the output cropped back, and the default sin-cos position embedding is
computed for whatever grid arrives, so clips longer than the training ones still run. `attention:
factorized` replaces joint attention over all tokens by attention across the first axis (time) followed by
attention within each frame (divided space-time attention), which scales to long videos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cm_media.nn.attention import BACKENDS, TokenAttention
from cm_media.nn.embedding import NoiseEmbedding
from cm_media.nn.registry import register_arch

# name -> (depth, width, heads); dit-s / dit-b / dit-l / dit-xl follow the DiT paper's table 1.
SIZES: dict[str, tuple[int, int, int]] = {
    "dit-micro": (2, 32, 2),  # tests
    "dit-tiny": (6, 128, 4),  # small data on a CPU (8x8 digits, short tones)
    "dit-s": (12, 384, 6),
    "dit-b": (12, 768, 12),
    "dit-l": (24, 1024, 16),
    "dit-xl": (28, 1152, 16),
}


@dataclass
class DiTConfig:
    """Patch transformer hyperparameters; depth / width / num_heads left at None come from `size`."""

    dims: int = 2
    in_channels: int = 1
    out_channels: int | None = None
    size: str = "dit-s"
    depth: int | None = None
    width: int | None = None
    num_heads: int | None = None
    patch_size: int | list = 2  # an int or one size per data axis, e.g. [2, 4, 4] tubelets
    mlp_ratio: float = 4.0
    pos_embed: str = "sincos"  # sincos (fixed, any grid) | learned (per-axis tables, interpolated)
    pos_len: int | list = 32  # learned: table length in tokens per axis
    attention: str = "joint"  # joint | factorized (time, then space; needs >= 2 axes)
    attention_backend: str = "sdpa"  # sdpa | xformers | auto
    dropout: float = 0.0
    noise_freqs: int = 256  # sinusoid features of c_noise before the embedding MLP
    cond: list = field(default_factory=list)  # conditions (cm_media.conditions), filled in by training

    def resolved(self) -> tuple[int, int, int]:
        """(depth, width, heads) after applying the size preset."""
        if self.size not in SIZES:
            raise ValueError(f"unknown DiT size {self.size!r} (known: {', '.join(SIZES)})")
        depth, width, heads = SIZES[self.size]
        return self.depth or depth, self.width or width, self.num_heads or heads


def per_axis(value: int | list, dims: int, name: str) -> list[int]:
    """Broadcast an int to one entry per data axis, or check a list has exactly one."""
    values = [value] * dims if isinstance(value, int) else [int(v) for v in value]
    if len(values) != dims or min(values) < 1:
        raise ValueError(f"{name} needs one positive entry per data axis ({dims}), got {value!r}")
    return values


def axis_channels(width: int, dims: int) -> int:
    """Even number of position channels each axis gets; the remaining width - dims * n stay zero."""
    return 2 * (width // (2 * dims))


def sincos_1d(length: int, channels: int, device=None) -> torch.Tensor:
    """Fixed sin/cos features of positions 0..length-1: [length, channels]."""
    half = channels // 2
    omega = 1.0 / 10000 ** (torch.arange(half, device=device, dtype=torch.float64) / max(half, 1))
    pos = torch.arange(length, device=device, dtype=torch.float64)[:, None] * omega[None]
    return torch.cat([torch.sin(pos), torch.cos(pos)], dim=1).float()


def grid_embedding(tables: list[torch.Tensor], width: int) -> torch.Tensor:
    """Concatenate per-axis tables [g_i, n] over the grid, zero-pad to width: [prod(g), width]."""
    grid = [t.shape[0] for t in tables]
    parts = []
    for i, table in enumerate(tables):
        shape = [1] * len(grid) + [table.shape[1]]
        shape[i] = grid[i]
        parts.append(table.reshape(shape).expand(*grid, table.shape[1]))
    emb = torch.cat(parts, dim=-1).reshape(math.prod(grid), -1)
    return F.pad(emb, (0, width - emb.shape[1]))


class PositionEmbedding(nn.Module):
    """Position features for a token grid: fixed sin-cos for any size, or learned per-axis tables."""

    def __init__(self, kind: str, width: int, dims: int, lengths: list[int]):
        super().__init__()
        if kind not in ("sincos", "learned"):
            raise ValueError(f"unknown pos_embed {kind!r} (sincos or learned)")
        self.kind, self.width, self.channels = kind, width, axis_channels(width, dims)
        self._cache: dict[tuple, torch.Tensor] = {}  # sincos: (grid, device) -> [L, width], not saved
        if kind == "learned":  # start from the sin-cos values so both kinds begin alike
            self.tables = nn.ParameterList([nn.Parameter(sincos_1d(n, self.channels)) for n in lengths])

    def forward(self, grid: list[int], device) -> torch.Tensor:
        if self.kind == "sincos":
            key = (tuple(grid), str(device))
            if key not in self._cache:
                with torch.inference_mode(False):  # a normal tensor, reusable by later training forwards
                    tables = [sincos_1d(n, self.channels, device) for n in grid]
                    self._cache[key] = grid_embedding(tables, self.width)
            return self._cache[key]  # [L, width]
        tables = [  # learned: linear interpolation when the grid differs from the table (ViT-style resizing)
            t if t.shape[0] == n else F.interpolate(t.T[None], size=n, mode="linear", align_corners=True)[0].T
            for t, n in zip(self.tables, grid)
        ]
        return grid_embedding(tables, self.width)  # [L, width]


def plain_norm(width: int) -> nn.LayerNorm:
    """LayerNorm without its own scale and shift: adaLN supplies them from the noise embedding."""
    return nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: x [B, L, W] scaled and shifted per sample by [B, 1, W], i.e. x * (1 + scale) + shift."""
    return torch.addcmul(shift, x, 1 + scale)


def gated(x: torch.Tensor, gate: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Residual update x + gate * h with a per-sample gate [B, 1, W] (zero at init: the block is the identity)."""
    return torch.addcmul(x, gate, h.to(x.dtype))


class DiTBlock(nn.Module):
    """Pre-norm transformer block whose norms are modulated by the noise embedding, gates start at zero."""

    def __init__(self, width, heads, mlp_ratio, factorized, backend, dropout):
        super().__init__()
        self.factorized = factorized
        self.norm1, self.attn = plain_norm(width), TokenAttention(width, heads, backend, dropout)
        if factorized:
            self.norm_t, self.attn_t = plain_norm(width), TokenAttention(width, heads, backend, dropout)
        hidden = int(width * mlp_ratio)
        self.norm2 = plain_norm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, hidden), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(hidden, width)
        )
        self.n_mod = 9 if factorized else 6
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, self.n_mod * width))

    def forward(self, x: torch.Tensor, c: torch.Tensor, grid: list[int]) -> torch.Tensor:
        mods = self.ada(c)[:, None].chunk(self.n_mod, dim=-1)  # each [B, 1, W]
        if self.factorized:  # attention across time for each spatial position, then within each frame
            shift, scale, gate = mods[6:9]
            h = rearrange(modulate(self.norm_t(x), shift, scale), "b (t s) w -> (b s) t w", t=grid[0])
            h = rearrange(self.attn_t(h), "(b s) t w -> b (t s) w", b=x.shape[0])
            x = gated(x, gate, h)
            shift, scale, gate = mods[0:3]
            h = rearrange(modulate(self.norm1(x), shift, scale), "b (t s) w -> (b t) s w", t=grid[0])
            h = rearrange(self.attn(h), "(b t) s w -> b (t s) w", b=x.shape[0])
            x = gated(x, gate, h)
        else:
            shift, scale, gate = mods[0:3]
            x = gated(x, gate, self.attn(modulate(self.norm1(x), shift, scale)))
        shift, scale, gate = mods[3:6]
        return gated(x, gate, self.mlp(modulate(self.norm2(x), shift, scale)))


class FinalLayer(nn.Module):
    """Modulated norm and a linear map from tokens back to patch values; both start at zero."""

    def __init__(self, width: int, out_features: int):
        super().__init__()
        self.norm = plain_norm(width)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.linear = nn.Linear(width, out_features)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """Patch transformer F(x, c_noise) with x [B, C, *axes] (1-3 axes) and c_noise [B]."""

    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dims
        if d not in (1, 2, 3):
            raise ValueError(f"DiT supports 1, 2 or 3 data axes, got {d}")
        if cfg.attention not in ("joint", "factorized"):
            raise ValueError(f"unknown attention {cfg.attention!r} (joint or factorized)")
        if cfg.attention == "factorized" and d < 2:
            raise ValueError("factorized attention needs at least 2 data axes (time and space)")
        if cfg.attention_backend not in BACKENDS:
            raise ValueError(f"unknown attention_backend {cfg.attention_backend!r} ({', '.join(BACKENDS)})")
        depth, width, heads = cfg.resolved()
        if width % heads:
            raise ValueError(f"DiT width {width} not divisible by num_heads {heads}")
        self.patch = per_axis(cfg.patch_size, d, "patch_size")
        self.out_channels = cfg.out_channels or cfg.in_channels
        patch_volume = math.prod(self.patch)
        g = [f"g{i}" for i in range(d)]
        p = [f"p{i}" for i in range(d)]
        cut = " ".join(f"({gi} {pi})" for gi, pi in zip(g, p))
        self._to_tokens = f"b c {cut} -> b ({' '.join(g)}) ({' '.join(p)} c)"
        self._from_tokens = f"b ({' '.join(g)}) ({' '.join(p)} c) -> b c {cut}"

        self.embed = NoiseEmbedding(cfg.noise_freqs, width, cfg.cond)
        self.patch_embed = nn.Linear(patch_volume * cfg.in_channels, width)
        self.pos = PositionEmbedding(cfg.pos_embed, width, d, per_axis(cfg.pos_len, d, "pos_len"))
        factorized = cfg.attention == "factorized"
        self.blocks = nn.ModuleList(
            DiTBlock(width, heads, cfg.mlp_ratio, factorized, cfg.attention_backend, cfg.dropout)
            for _ in range(depth)
        )
        self.final = FinalLayer(width, patch_volume * self.out_channels)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier linears, small noise-MLP weights, and zero adaLN and output maps (adaLN-zero, DiT sec. 3.2)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        for m in self.embed.mlp:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.ada[-1].weight)
            nn.init.zeros_(block.ada[-1].bias)
        for m in (self.final.ada[-1], self.final.linear):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        axes = x.shape[2:]  # x: [B, C, *axes]
        if len(axes) != self.cfg.dims:
            raise ValueError(f"DiT built for {self.cfg.dims} data axes got input of shape {tuple(x.shape)}")
        pads = [(-n) % p for n, p in zip(axes, self.patch)]
        if any(pads):
            x = F.pad(x, [q for pad in reversed(pads) for q in (0, pad)])
        grid = [(n + pad) // p for n, pad, p in zip(axes, pads, self.patch)]
        sizes = {f"p{i}": p for i, p in enumerate(self.patch)}
        tokens = rearrange(x, self._to_tokens, **sizes)  # [B, L, patch_volume * C]
        h = self.patch_embed(tokens) + self.pos(grid, x.device).to(tokens.dtype)  # [B, L, W]
        c = self.embed(c_noise, cond)  # [B, W]
        for block in self.blocks:
            h = block(h, c, grid)
        out = self.final(h, c)  # [B, L, patch_volume * C_out]
        out = rearrange(out, self._from_tokens, **sizes, **{f"g{i}": n for i, n in enumerate(grid)})
        return out[(slice(None), slice(None), *(slice(0, n) for n in axes))]


__all__ = ["SIZES", "DiT", "DiTConfig"]

register_arch("dit", DiTConfig, DiT)
