"""Image features for quality metrics that need no download: low-res pixels, gradient maps and statistics.

`features` is hand-crafted and works on any image; `learned_features` is the penultimate layer of the small
digits classifier shipped in this folder (see feature_net.py), used only for the built-in digits data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .feature_net import load_feature_net

GRID = 8  # pixels are compared at GRID x GRID
GRAD_GRID = 4  # gradient energy is pooled to GRAD_GRID x GRAD_GRID
ORIENT_BINS = 8


def _gray(images: torch.Tensor) -> torch.Tensor:
    return images.mean(1, keepdim=True)  # [B, 1, H, W]


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def gradients(gray: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central-difference gradients (dx, dy) of [B, 1, H, W], replicate-padded: each [B, 1, H, W]."""
    p = F.pad(gray, (1, 1, 1, 1), mode="replicate")
    dx = (p[..., 1:-1, 2:] - p[..., 1:-1, :-2]) / 2
    dy = (p[..., 2:, 1:-1] - p[..., :-2, 1:-1]) / 2
    return dx, dy


def orientation_histogram(dx: torch.Tensor, dy: torch.Tensor, bins: int = ORIENT_BINS) -> torch.Tensor:
    """Magnitude-weighted histogram of gradient orientation (mod pi), normalized per image: [B, bins]."""
    mag = (dx.square() + dy.square()).sqrt().flatten(1)  # [B, HW]
    angle = torch.atan2(dy, dx).flatten(1) % math.pi
    idx = (angle / math.pi * bins).long().clamp(max=bins - 1)
    hist = torch.zeros(mag.shape[0], bins, dtype=mag.dtype, device=mag.device).scatter_add_(1, idx, mag)
    return hist / hist.sum(1, keepdim=True).clamp(min=1e-8)


def features(media: torch.Tensor, cfg=None) -> torch.Tensor:
    """Images [B, C, H, W] in [0, 1] -> hand-crafted features [B, D].

    D = C*GRID^2 pixels + 2*GRAD_GRID^2 pooled |dx|, |dy| + ORIENT_BINS orientations + 4 global statistics
    (mean, std, mean gradient magnitude, share of bright pixels).
    """
    x = media.float().clamp(0, 1)
    b = x.shape[0]
    pixels = _resize(x, GRID).reshape(b, -1)  # [B, C*GRID^2]
    gray = _gray(x)
    dx, dy = gradients(gray)
    pooled = F.adaptive_avg_pool2d(torch.cat([dx.abs(), dy.abs()], 1), GRAD_GRID).reshape(b, -1)  # [B, 2*G^2]
    orient = orientation_histogram(dx, dy)
    mag = (dx.square() + dy.square()).sqrt()
    stats = torch.stack([
        gray.mean((1, 2, 3)), gray.std((1, 2, 3)), mag.mean((1, 2, 3)), (gray > 0.5).float().mean((1, 2, 3)),
    ], 1)
    return torch.cat([pixels, pooled, orient, stats], 1)


def learned_features(media: torch.Tensor, cfg=None) -> torch.Tensor | None:
    """Penultimate-layer activations of the shipped digits classifier, or None when it does not apply.

    It applies to the built-in digits dataset only (single-channel images resized to 8x8).
    """
    if cfg is not None and getattr(getattr(cfg, "data", None), "dataset", None) != "digits":
        return None
    net = load_feature_net()
    if net is None:
        return None
    x = _resize(_gray(media.float().clamp(0, 1)), 8)
    with torch.no_grad():
        return net.embed(x.cpu())
