"""Video features for quality metrics that need no download: per-frame image features plus motion statistics.

Appearance is the time-average of the image features of every frame; motion comes from frame differences
(how much, where, and how steadily things change) and from the path of the intensity centroid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from modalities.image.features import features as image_features

MOTION_GRID = 4  # where motion happens, pooled to MOTION_GRID x MOTION_GRID
CHANGE_LEVELS = (0.05, 0.1, 0.25, 0.5)  # shares of pixels whose change exceeds each level


def centroid_path(gray: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centroid per frame, in frame-size units: [B, T, H, W] -> [B, T, 2] (y, x)."""
    h, w = gray.shape[-2:]
    mass = gray.sum((-2, -1)).clamp(min=1e-6)  # [B, T]
    ys = torch.linspace(0, 1, h, device=gray.device, dtype=gray.dtype)
    xs = torch.linspace(0, 1, w, device=gray.device, dtype=gray.dtype)
    cy = (gray.sum(-1) * ys).sum(-1) / mass
    cx = (gray.sum(-2) * xs).sum(-1) / mass
    return torch.stack([cy, cx], -1)


def motion_features(video: torch.Tensor) -> torch.Tensor:
    """Videos [B, C, T, H, W] in [0, 1] -> motion statistics [B, 2 + 2*MOTION_GRID^2 + 3 + len(CHANGE_LEVELS)]."""
    t = video.shape[2]
    gray = video.mean(1)  # [B, T, H, W]
    if t < 3:  # too short to move: pad with repeats so the statistics below are defined (and zero)
        gray = torch.cat([gray, gray[:, -1:].expand(-1, 3 - t, -1, -1)], 1)
    diff = (gray[:, 1:] - gray[:, :-1]).abs()  # [B, T-1, H, W]
    per_step = diff.mean((-2, -1))  # [B, T-1]
    where = F.adaptive_avg_pool2d(diff.mean(1, keepdim=True), MOTION_GRID).flatten(1)  # [B, G^2]
    flicker = F.adaptive_avg_pool2d(gray.std(1, keepdim=True), MOTION_GRID).flatten(1)  # [B, G^2]
    path = centroid_path(gray)  # [B, T, 2]
    velocity = path[:, 1:] - path[:, :-1]
    speed = velocity.norm(dim=-1)  # [B, T-1]
    accel = (velocity[:, 1:] - velocity[:, :-1]).norm(dim=-1).mean(1)  # [B]
    change = torch.stack([(diff > level).float().mean((1, 2, 3)) for level in CHANGE_LEVELS], 1)
    scalars = torch.stack([per_step.mean(1), per_step.std(1), speed.mean(1) * 4, speed.std(1) * 4, accel * 4], 1)
    return torch.cat([scalars, where, flicker, change], 1)


def features(media: torch.Tensor, cfg=None) -> torch.Tensor:
    """Videos [B, C, T, H, W] in [0, 1] -> [B, D]: time-averaged image features, then motion statistics."""
    x = media.float().clamp(0, 1)
    b, c, t, h, w = x.shape
    frames = x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w)  # [B*T, C, H, W]
    appearance = image_features(frames, cfg).reshape(b, t, -1).mean(1)
    return torch.cat([appearance, motion_features(x)], 1)
