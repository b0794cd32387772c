"""Video for `cm-media edit`: frame masks for interpolation and prediction.

`--mask` takes frame indices (`3,4,5`, ranges `3-5`), `interpolate` (all frames but the first and last),
or `predict:K` (keep the first K frames, generate the rest).
"""

from __future__ import annotations

from itertools import groupby

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


def crossfade_fill(clips: torch.Tensor, frames: list[int]) -> torch.Tensor:
    """A first guess for regenerated frames [B, C, T, H, W]: each run of listed frames becomes a linear
    cross-fade between the kept frames around it (the nearest kept frame where the run touches an end)."""
    out = clips.clone()
    total = clips.shape[2]
    chosen = sorted(set(frames))
    # consecutive frames share t - index, so each group is one run [a, b]
    for _, group in groupby(enumerate(chosen), key=lambda p: p[1] - p[0]):
        run = [t for _, t in group]
        before, after = run[0] - 1, run[-1] + 1
        if before < 0 and after >= total:
            continue  # nothing kept to fade from
        left = clips[:, :, before if before >= 0 else after]
        right = clips[:, :, after if after < total else before]
        for t in run:
            w = (t - before) / (after - before)  # 0 at the kept frame before, 1 at the one after
            out[:, :, t] = (1 - w) * left + w * right
    return out
