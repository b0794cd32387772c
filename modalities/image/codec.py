"""Image codec: pixels [B, C, H, W] in [0, 1] <-> model tensors in [-1, 1]; image files through Pillow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from cm_media.errors import UserError


@dataclass
class ImageCodecConfig:
    size: int = 8  # model resolution (square)
    channels: int = 1  # 1 grey, 3 RGB


class PixelCodec:
    """Pixels in [0, 1] <-> model tensors in [-1, 1] for any number of axes (images and videos share it)."""

    def __init__(self, channels: int):
        if channels not in (1, 3):
            raise UserError(f"codec.channels must be 1 or 3, got {channels}")
        self.channels = channels

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        """[B, C, *axes] in [0, 1] -> [-1, 1]."""
        return media * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> [0, 1], clamped."""
        return ((x + 1) / 2).clamp(0, 1)


class ImageCodec(PixelCodec):
    dims = 2

    def __init__(self, cfg: ImageCodecConfig):
        super().__init__(cfg.channels)
        if cfg.size < 1:
            raise UserError(f"codec.size must be >= 1, got {cfg.size}")
        self.cfg = cfg

    def fit(self, pixels: torch.Tensor) -> torch.Tensor:
        """Resize [B, C, H, W] pixels to the codec's size and channel count."""
        if pixels.shape[1] != self.channels:
            pixels = pixels.mean(1, keepdim=True) if self.channels == 1 else pixels[:, :1].expand(-1, 3, -1, -1)
        if pixels.shape[-2:] != (self.cfg.size, self.cfg.size):
            pixels = F.interpolate(pixels, size=(self.cfg.size, self.cfg.size), mode="bilinear", antialias=True,
                                   align_corners=False)
        return pixels.clamp(0, 1)

    def read(self, path: Path) -> torch.Tensor:
        """One image file -> pixels [C, H, W] in [0, 1] at the codec's size."""
        try:
            with Image.open(path) as im:
                im = im.convert("L" if self.channels == 1 else "RGB")
                arr = np.asarray(im, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise UserError(f"cannot read image {path}: {exc}") from None
        t = torch.from_numpy(arr)
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
        return self.fit(t[None])[0]
