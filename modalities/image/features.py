"""Image features for quality metrics that need no download: low-res pixels, gradient maps and statistics.

`features` is hand-crafted and works on any image; `learned_features` is the penultimate layer of a small
classifier shipped in this folder: the digits net (feature_net.py) for the built-in 8x8 digits, the Fashion-MNIST
net (fashion_net.py) for 28x28 `fashion_mnist` data.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .fashion_net import load_fashion_net
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


def learned_net(cfg=None, size: int | None = None) -> tuple[torch.nn.Module, int] | None:
    """(the shipped classifier for this data, its input size), or None: the Fashion-MNIST net for `fashion_mnist`
    data, the digits net for `digits` data; without a config, by image size (28: Fashion-MNIST, else digits)."""
    if cfg is None:
        dataset = "fashion_mnist" if size == 28 else "digits"
    else:
        dataset = getattr(getattr(cfg, "data", None), "dataset", None)
    if dataset == "fashion_mnist":
        net, size = load_fashion_net(), 28
    elif dataset == "digits":
        net, size = load_feature_net(), 8
    else:
        return None
    return None if net is None else (net, size)


def learned_features(media: torch.Tensor, cfg=None) -> torch.Tensor | None:
    """Penultimate-layer activations of the shipped classifier for this data, or None when none applies.

    Digits: the digits net on grey 8x8 images; fashion_mnist: the Fashion-MNIST net on grey 28x28 images.
    """
    found = learned_net(cfg, media.shape[-1])
    if found is None:
        return None
    net, size = found
    x = _resize(_gray(media.float().clamp(0, 1)), size).cpu()
    with torch.no_grad():
        return torch.cat([net.embed(x[i:i + 1024]) for i in range(0, max(len(x), 1), 1024)])


def classify(media: torch.Tensor, cfg=None) -> torch.Tensor | None:
    """Class logits [B, 10] of the shipped classifier for this data (see learned_net), or None."""
    found = learned_net(cfg, media.shape[-1])
    if found is None:
        return None
    net, size = found
    x = _resize(_gray(media.float().clamp(0, 1)), size).cpu()
    with torch.no_grad():
        return torch.cat([net(x[i:i + 1024]) for i in range(0, max(len(x), 1), 1024)])
