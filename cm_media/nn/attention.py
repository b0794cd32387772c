"""Multi-head softmax attention with a backend choice, for conv feature maps and for token sequences.

Backends: torch scaled_dot_product_attention ("sdpa", the default) and xformers memory-efficient attention.
Inside `forward_ad_safe()` every backend gives way to plain tensor ops, which have forward-mode derivatives: a
Jacobian-vector product through a backbone (sCM, MeanFlow) runs there, since PyTorch's fused SDPA kernels (flash,
memory-efficient, the CPU flash kernel) and xformers have none.
xformers wheels target one torch build, so it is used only after a tiny probe of its kernels (forward and
backward) succeeds on the device; "auto" then picks it on CUDA, and a kernel that fails later (a dtype or
head size it lacks) falls back to sdpa. Every choice is logged once per (request, device).
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from cm_media.nn.layers import GroupNorm

log = logging.getLogger(__name__)
BACKENDS = ("auto", "sdpa", "xformers")

_PROBED: dict[str, bool] = {}  # device type -> xformers kernels run there
_RESOLVED: dict[tuple[str, str], str] = {}  # (requested, device type) -> backend that runs
_FAILED: set[tuple] = set()  # (device type, dtype, head dim) where an xformers call raised
_MATH_ONLY = [0]  # depth of nested forward_ad_safe() contexts


@contextlib.contextmanager
def forward_ad_safe():
    """Within this context `attention` computes softmax(q k^T / sqrt(d)) v with plain tensor ops (forward-mode AD
    works through them: torch.func.jvp, torch.autograd.forward_ad)."""
    _MATH_ONLY[0] += 1
    try:
        yield
    finally:
        _MATH_ONLY[0] -= 1


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v on [B, heads, L, d] with ops that all have forward-mode derivatives."""
    weights = torch.softmax((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5, dim=-1)
    return weights.to(v.dtype) @ v


def xformers_available(device_type: str) -> bool:
    """True when xformers imports and its memory-efficient kernel runs forward and backward here."""
    if device_type not in _PROBED:
        try:
            import xformers.ops as xops

            q = torch.randn(1, 4, 1, 8, device=device_type, requires_grad=True)  # [B, L, heads, d]
            xops.memory_efficient_attention(q, q, q).sum().backward()
            _PROBED[device_type] = bool(torch.isfinite(q.grad).all())
        except Exception as exc:
            log.debug("xformers unusable on %s: %s", device_type, exc)
            _PROBED[device_type] = False
    return _PROBED[device_type]


def resolve_backend(requested: str, device_type: str) -> str:
    """Map a requested backend to the one that runs on `device_type`; logs the choice once.

    "auto" takes xformers on CUDA when its kernels run (torch's CPU sdpa is the faster CPU path), else sdpa.
    """
    key = (requested, device_type)
    if key in _RESOLVED:
        return _RESOLVED[key]
    if requested not in BACKENDS:
        raise ValueError(f"unknown attention backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    wants_xformers = requested == "xformers" or (requested == "auto" and device_type == "cuda")
    chosen = "xformers" if wants_xformers and xformers_available(device_type) else "sdpa"
    if requested == "xformers" and chosen != "xformers":
        log.warning("attention backend: sdpa (xformers requested but its kernels do not run on %s)", device_type)
    else:
        log.info("attention backend: %s (requested %s, device %s)", chosen, requested, device_type)
    _RESOLVED[key] = chosen
    return chosen


def _xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """xformers on [B, heads, L, d]; None when its kernel rejects this call (then sdpa runs instead)."""
    sig = (q.device.type, q.dtype, q.shape[-1])
    if sig in _FAILED:
        return None
    import xformers.ops as xops

    try:
        out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    except (NotImplementedError, RuntimeError, ValueError) as exc:
        _FAILED.add(sig)
        log.warning("attention backend: xformers failed for %s %s head dim %d (%s); using sdpa",
                    sig[0], sig[1], sig[2], str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return None
    return out.transpose(1, 2)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "sdpa") -> torch.Tensor:
    """Softmax attention softmax(q k^T / sqrt(d)) v on [B, heads, L, d] tensors."""
    if _MATH_ONLY[0]:
        return math_attention(q, k, v)
    if resolve_backend(backend, q.device.type) == "xformers":
        out = _xformers_attention(q, k, v)
        if out is not None:
            return out
    return F.scaled_dot_product_attention(q, k, v)


class TokenAttention(nn.Module):
    """Multi-head self-attention on a token sequence [B, L, width] (no norm, no residual: the caller's)."""

    def __init__(self, width: int, num_heads: int, backend: str = "sdpa", dropout: float = 0.0):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"attention width {width} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.backend = backend
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.num_heads)
        out = rearrange(attention(q, k, v, self.backend), "b h l d -> b l (h d)")  # [B, L, width]
        return self.dropout(self.proj(out))


class SelfAttention(nn.Module):
    """Pre-norm residual self-attention over every data axis; the output projection starts at zero."""

    def __init__(self, channels: int, num_heads: int = 4, groups: int = 8, backend: str = "sdpa"):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention channels {channels} not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.backend = backend
        self.norm = GroupNorm(groups, channels)
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
