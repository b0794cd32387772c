"""Video for `cm-media edit`: frame masks for interpolation and prediction.

`--mask` takes frame indices (`3,4,5`, ranges `3-5`), `interpolate` (all frames but the first and last),
or `predict:K` (keep the first K frames, generate the rest).
"""

from __future__ import annotations

from itertools import groupby

import torch

from cm_media.errors import UserError


def frame_ranges(spec: str, frames: int) -> list[tuple[int, int]]:
    """The frames a --mask spec selects as sorted, merged inclusive ranges [(a, b), ...] within 0..frames-1;
    ranges are never enumerated, so `2-99999999999` costs nothing (and is an error: outside the clip)."""
    spec = spec.strip().lower()
    usage = f"video --mask takes frame indices like 3,4,5 or 3-5, interpolate or predict:K; got {spec!r}"
    ranges: list[tuple[int, int]] = []
    try:
        if spec == "interpolate":
            ranges = [(1, frames - 2)]
        elif spec.startswith("predict:"):
            ranges = [(int(spec.split(":", 1)[1]), frames - 1)]
        else:
            for part in spec.split(","):
                a, sep, b = part.strip().partition("-")
                lo, hi = (int(a), int(b)) if sep else (int(a), int(a))
                if hi < lo:
                    raise UserError(f"video --mask range {part.strip()} runs backwards")
                ranges.append((lo, hi))
    except ValueError:
        raise UserError(usage) from None
    if not ranges or any(a > b for a, b in ranges):
        raise UserError(f"video --mask {spec} selects no frame of the {frames}-frame clip")
    if min(a for a, _ in ranges) < 0 or max(b for _, b in ranges) >= frames:
        raise UserError(f"video --mask {spec} must select frames within 0..{frames - 1}")
    merged: list[tuple[int, int]] = []
    for a, b in sorted(ranges):
        if merged and a <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def frame_mask(spec: str, model_shape: tuple[int, ...]) -> torch.Tensor:
    """Mask [1, 1, T, H, W] with 1 on the frames to regenerate."""
    mask = torch.zeros(1, 1, *model_shape[2:])
    for a, b in frame_ranges(spec, model_shape[2]):
        mask[:, :, a: b + 1] = 1
    return mask


def runs_of(frames: list[int] | torch.Tensor) -> list[tuple[int, int]]:
    """Runs of consecutive frame indices as inclusive ranges: [2, 3, 4, 7] -> [(2, 4), (7, 7)]. A 0/1 vector
    over the frames (a mask's time axis) is read as the frames where it is 1."""
    if torch.is_tensor(frames):
        on = frames.flatten().to(torch.int8)
        edges = torch.diff(torch.cat([on.new_zeros(1), on, on.new_zeros(1)])).nonzero().flatten().tolist()
        return [(a, b - 1) for a, b in zip(edges[::2], edges[1::2])]
    chosen = sorted(set(frames))
    # consecutive frames share t - index, so each group is one run [a, b]
    groups = [[t for _, t in g] for _, g in groupby(enumerate(chosen), key=lambda p: p[1] - p[0])]
    return [(g[0], g[-1]) for g in groups]


def crossfade_fill(clips: torch.Tensor, frames: list[int] | list[tuple[int, int]]) -> torch.Tensor:
    """A first guess for regenerated frames [B, C, T, H, W]: each run of listed frames (indices, or inclusive
    (first, last) ranges) becomes a linear cross-fade between the kept frames around it (the nearest kept frame
    where the run touches an end)."""
    out = clips.clone()
    total = clips.shape[2]
    ranges = list(frames) if frames and isinstance(frames[0], tuple) else runs_of(list(frames))
    for first, last in ranges:
        run = range(first, last + 1)
        before, after = first - 1, last + 1
        if before < 0 and after >= total:
            continue  # nothing kept to fade from
        left = clips[:, :, before if before >= 0 else after]
        right = clips[:, :, after if after < total else before]
        for t in run:
            w = (t - before) / (after - before)  # 0 at the kept frame before, 1 at the one after
            out[:, :, t] = (1 - w) * left + w * right
    return out
