"""`--mask` specs for image inpainting: a pixel box or a named half, in the model's resolution."""

from __future__ import annotations

import torch

from cm_media.errors import UserError

NAMED = ("left", "right", "top", "bottom", "center")


def image_mask(spec: str, height: int, width: int) -> torch.Tensor:
    """'box:x0,y0,x1,y1' (pixels, end exclusive) or left/right/top/bottom/center -> mask [1, 1, H, W], 1 = regenerate."""
    mask = torch.zeros(1, 1, height, width)
    spec = spec.strip().lower()
    if spec == "left":
        mask[..., : width // 2] = 1
    elif spec == "right":
        mask[..., width // 2:] = 1
    elif spec == "top":
        mask[..., : height // 2, :] = 1
    elif spec == "bottom":
        mask[..., height // 2:, :] = 1
    elif spec == "center":
        mask[..., height // 4: height - height // 4, width // 4: width - width // 4] = 1
    elif spec.startswith("box:"):
        try:
            x0, y0, x1, y1 = (int(v) for v in spec[4:].split(","))
        except ValueError:
            raise UserError(f"--mask box needs four integers box:x0,y0,x1,y1, got {spec!r}") from None
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise UserError(f"--mask {spec} is outside the {width}x{height} image or empty")
        mask[..., y0:y1, x0:x1] = 1
    else:
        raise UserError(f"unknown --mask {spec!r} for images (box:x0,y0,x1,y1 or {', '.join(NAMED)})")
    return mask
