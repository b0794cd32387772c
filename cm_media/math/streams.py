"""Per-stream noise levels for a model tensor made of several streams (sounding video: the pixels, then the
soundtrack's STFT, side by side in one flat vector).

A backbone with `stream_sizes` (elements per stream over the flattened non-batch axes, summing to one sample's
numel) takes c_noise [B, S], one level per stream, and its consistency function takes sigma [B, S]: a stream at
sigma_min is clean and passes through exactly (the boundary condition), so the others are generated *given* it.
Training some samples that way (UniDiffuser's independent per-modality times, Bao et al. 2023, restricted to one
stream at its boundary) is what teaches the net to read one stream for the other; shared sigma never needs it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def per_element(sigma: torch.Tensor, like: torch.Tensor, sizes: Sequence[int] | None = None) -> torch.Tensor:
    """sigma [B] -> [B, 1, ...] (broadcasting), or per stream [B, S] -> [B, *like.shape[1:]] by `sizes`."""
    if sigma.ndim <= 1:
        return sigma.reshape(*sigma.shape, *([1] * (like.ndim - sigma.ndim)))
    if sizes is None or sigma.shape[1] != len(sizes) or sum(sizes) != like[0].numel():
        raise ValueError(f"per-stream sigma {tuple(sigma.shape)} does not fit streams {list(sizes or [])} of a "
                         f"{like[0].numel()}-element sample")
    counts = torch.tensor(list(sizes), device=sigma.device)
    return sigma.repeat_interleave(counts, dim=1).reshape(like.shape)  # [B, D] -> like's shape


def complex_streams(model) -> list[bool] | None:
    """The `complex_streams` flags of a network (like `stream_sizes`): True for a stream whose elements are complex
    values, all real parts then all imaginary parts (an STFT as [2, F, T]); None when it declares none."""
    flags = _declared(model, "complex_streams")
    return [bool(f) for f in flags] if flags else None


def with_magnitude(phase_of: torch.Tensor, magnitude_of: torch.Tensor) -> torch.Tensor:
    """Complex values laid out [B, 2n] (real parts, then imaginary) with the magnitudes of `magnitude_of` and the
    phases of `phase_of` (where phase_of is ~0 its phase is undefined: magnitude_of's own is kept)."""
    n = phase_of.shape[1] // 2
    p = torch.complex(phase_of[:, :n].float(), phase_of[:, n:].float())  # [B, n]
    m = torch.complex(magnitude_of[:, :n].float(), magnitude_of[:, n:].float())
    out = torch.where(p.abs() > 1e-6, p / p.abs().clamp_min(1e-6) * m.abs(), m)
    return torch.cat([out.real, out.imag], 1).to(magnitude_of.dtype)


def magnitudes(values: torch.Tensor) -> torch.Tensor:
    """|complex values| [B, n] of values laid out [B, 2n] (real parts, then imaginary), differentiable at zero."""
    n = values.shape[1] // 2
    return (values[:, :n].float().pow(2) + values[:, n:].float().pow(2) + 1e-12).sqrt()


def _declared(model, attribute: str):
    """A backbone's declaration `attribute`, found through its preconditioning and a DDP wrapper (None: absent)."""
    for name in ("module", "backbone", "net"):
        inner = getattr(model, name, None)
        if isinstance(inner, torch.nn.Module):
            found = _declared(inner, attribute)
            if found:
                return found
    return getattr(model, attribute, None) or None


def stream_sizes(model) -> list[int] | None:
    """The `stream_sizes` of a network (through its preconditioning and a DDP wrapper), or None for one stream."""
    sizes = _declared(model, "stream_sizes")
    return list(sizes) if sizes else None


def clean_stream_mask(batch: int, streams: int, p: float, gen: torch.Generator) -> torch.Tensor:
    """[B, S] bool: with probability p a sample holds one stream (uniform over the S) clean."""
    clean = torch.rand(batch, generator=gen) < p  # [B]
    which = torch.randint(0, streams, (batch,), generator=gen)  # [B]
    held = torch.zeros(batch, streams, dtype=torch.bool)
    held[torch.arange(batch), which] = clean
    return held


def hold_streams(sigma: torch.Tensor, held: torch.Tensor, sigma_min: float) -> torch.Tensor:
    """sigma [B] -> [B, S]: each stream at the sample's sigma, the held ones at sigma_min (clean)."""
    held = held.to(sigma.device)
    return torch.where(held, torch.full(held.shape, sigma_min, dtype=sigma.dtype, device=sigma.device), sigma[:, None])


def held_by_mask(mask: torch.Tensor, sizes: Sequence[int] | None) -> torch.Tensor | None:
    """An edit mask (1 = regenerate) that keeps or regenerates whole streams, the same for every sample -> the
    held (kept) streams [S] bool; None when it cuts through a stream, keeps none or regenerates none."""
    if not sizes:
        return None
    flat = mask.reshape(mask.shape[0], -1)
    if flat.shape[1] != sum(sizes):
        return None
    parts = flat.split(list(sizes), dim=1)
    if any(not bool((p == p[:1, :1]).all()) for p in parts):  # not constant over a stream and the batch
        return None
    held = torch.tensor([bool(p[0, 0] == 0) for p in parts])
    return held if 0 < int(held.sum()) < len(sizes) else None
