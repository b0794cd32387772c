"""Video for `cm-media edit`: frame masks for interpolation and prediction.

`--mask` takes frame indices (`3,4,5`, ranges `3-5`), `interpolate` (all frames but the first and last),
or `predict:K` (keep the first K frames, generate the rest).
"""

from __future__ import annotations

import torch

from cm_media.errors import UserError


def frame_mask(spec: str, model_shape: tuple[int, ...]) -> torch.Tensor:
    """Mask [1, 1, T, H, W] with 1 on the frames to regenerate."""
    frames = model_shape[2]
    spec = spec.strip().lower()
    chosen: set[int] = set()
    try:
        if spec == "interpolate":
            chosen = set(range(1, frames - 1))
        elif spec.startswith("predict:"):
            chosen = set(range(int(spec.split(":", 1)[1]), frames))
        else:
            for part in spec.split(","):
                if "-" in part:
                    a, b = (int(v) for v in part.split("-"))
                    chosen |= set(range(a, b + 1))
                else:
                    chosen.add(int(part))
    except ValueError:
        raise UserError(f"video --mask takes frame indices like 3,4,5 or 3-5, interpolate or predict:K; got {spec!r}") from None
    if not chosen or min(chosen) < 0 or max(chosen) >= frames:
        raise UserError(f"video --mask {spec} must select frames within 0..{frames - 1}")
    mask = torch.zeros(1, 1, *model_shape[2:])
    mask[:, :, sorted(chosen)] = 1
    return mask
