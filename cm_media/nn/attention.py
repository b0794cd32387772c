"""Multi-head self-attention over the flattened axes of a [B, C, *axes] tensor, with a backend choice.

Backends: torch scaled_dot_product_attention ("sdpa", default) and xformers memory-efficient attention,
used only when its kernels actually run here ("auto" probes once and falls back to sdpa).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

log = logging.getLogger(__name__)
BACKENDS = ("auto", "sdpa", "xformers")


@functools.lru_cache(maxsize=None)
def xformers_available(device_type: str) -> bool:
    """True when xformers imports and its memory-efficient kernel runs a tiny problem on this device."""
    try:
        import xformers.ops as xops  # noqa: PLC0415

        q = torch.randn(1, 4, 1, 8, device=device_type)
        xops.memory_efficient_attention(q, q, q)
        return True
    except Exception:  # any import or kernel failure means: not usable here
        return False


@functools.lru_cache(maxsize=None)
def resolve_backend(requested: str, device_type: str) -> str:
    """Map a requested backend to the one that runs; logs the choice once per (request, device)."""
    if requested not in BACKENDS:
        raise ValueError(f"unknown attention backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    chosen = "sdpa"
    if requested in ("auto", "xformers") and xformers_available(device_type):
        chosen = "xformers"
    if requested == "xformers" and chosen != "xformers":
        log.warning("xformers requested but its kernels do not run on %s; using torch sdpa", device_type)
    log.info("attention backend: %s", chosen)
    return chosen


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Softmax attention on [B, heads, L, d] tensors."""
    if resolve_backend(backend, q.device.type) == "xformers":
        import xformers.ops as xops  # noqa: PLC0415

        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v)


class SelfAttention(nn.Module):
    """Pre-norm residual self-attention over every data axis; the output projection starts at zero."""

    def __init__(self, channels: int, num_heads: int = 4, groups: int = 8, backend: str = "sdpa"):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.backend = backend
        self.norm = nn.GroupNorm(groups, channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape  # [B, C, *axes]
        tokens = rearrange(self.norm(x), "b c ... -> b (...) c")  # [B, L, C]
        q, k, v = rearrange(self.qkv(tokens), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        out = rearrange(attention(q, k, v, self.backend), "b h l d -> b l (h d)")
        out = self.proj(out).transpose(1, 2).reshape(shape)  # [B, C, *axes]
        return x + out
