"""PNG output: one image per file or a grid of many, upscaled with nearest neighbour for small images."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def make_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 1) -> torch.Tensor:
    """[B, C, H, W] -> one [C, rows*(H+pad)+pad, cols*(W+pad)+pad] image with `pad` pixels of border."""
    b, c, h, w = images.shape
    cols = nrow or math.ceil(math.sqrt(b))
    rows = math.ceil(b / cols)
    grid = torch.ones(c, rows * (h + pad) + pad, cols * (w + pad) + pad) * 0.5
    for i in range(b):
        r, q = divmod(i, cols)
        grid[:, pad + r * (h + pad): pad + r * (h + pad) + h, pad + q * (w + pad): pad + q * (w + pad) + w] = images[i]
    return grid


def to_pil(image: torch.Tensor, min_size: int = 0) -> Image.Image:
    """[C, H, W] in [0, 1] -> PIL image, upscaled by an integer factor to at least `min_size` on the short side."""
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else np.ascontiguousarray(arr))
    scale = max(1, math.ceil(min_size / min(im.size))) if min_size else 1
    return im.resize((im.width * scale, im.height * scale), Image.NEAREST) if scale > 1 else im


def save_images(images: torch.Tensor, path: Path, grid: bool | None = None, min_tile: int = 32) -> list[Path]:
    """Write [B, C, H, W] images: a grid PNG when `path` has a suffix (or grid=True), else numbered PNGs."""
    path = Path(path)
    if grid is None:
        grid = path.suffix != ""
    if grid:
        path.parent.mkdir(parents=True, exist_ok=True)
        scale = max(1, math.ceil(min_tile / min(images.shape[-2:])))
        up = images.repeat_interleave(scale, -1).repeat_interleave(scale, -2) if scale > 1 else images
        to_pil(make_grid(up.cpu(), pad=max(1, scale // 2))).save(path if path.suffix else path.with_suffix(".png"))
        return [path if path.suffix else path.with_suffix(".png")]
    path.mkdir(parents=True, exist_ok=True)
    out = []
    for i, im in enumerate(images.cpu()):
        p = path / f"{i:04d}.png"
        to_pil(im, min_tile).save(p)
        out.append(p)
    return out
