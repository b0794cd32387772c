"""The noise embedding and condition embedders: class labels, vectors and scalars (a guidance scale) -> features added to the noise features.

As EDM's `class_labels` and DiT's `y`, a condition joins the network through the noise embedding: each embedder
returns [B, dim], summed with the sinusoidal c_noise features before the embedding MLP. A class condition has
one extra "no condition" row (index = number of classes), initialized at zero, so a conditional network asked for
nothing starts as the unconditional one (classifier-free guidance needs that entry).

Frame conditions (kind "frames": known frames of the sample, such as the first frame of a clip) are not embedded:
`FrameInputs` concatenates them to the input as extra channels, with their mask channel (design notes, section 8).
"""

from __future__ import annotations

import torch
from torch import nn

from cm_media.conditions import Condition, as_conditions
from cm_media.nn.layers import sinusoidal_embedding


class ClassEmbedding(nn.Module):
    """Class index [B] (num_classes = no condition) -> [B, dim]."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)
        nn.init.normal_(self.table.weight, std=1.0)  # the scale of the sinusoidal features it joins
        with torch.no_grad():
            self.table.weight[num_classes].zero_()

    def null(self, batch: int, device) -> torch.Tensor:
        return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.table(labels.long())


class VectorEmbedding(nn.Module):
    """Vector [B, D] (zeros = no condition) -> [B, dim] through a linear map without bias."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.in_dim = in_dim
        self.proj = nn.Linear(in_dim, dim, bias=False)

    def null(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(batch, self.in_dim, device=device)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.proj(v.float().reshape(v.shape[0], -1))


class ScalarEmbedding(nn.Module):
    """Scalar [B] (e.g. the guidance scale w of a guided-distilled student) -> [B, dim] through sinusoids and a
    zero-initialized linear map, so a student initialized from its teacher starts out ignoring it."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.proj = nn.Linear(dim, dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def null(self, batch: int, device) -> torch.Tensor:
        return torch.zeros(batch, device=device)

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.proj(sinusoidal_embedding(s.float().reshape(-1), self.dim, scale=100.0))


def _embedder(c: Condition, dim: int) -> nn.Module:
    if c.kind == "class":
        return ClassEmbedding(len(c.classes), dim)
    if c.kind == "vector":
        return VectorEmbedding(c.dim, dim)
    return ScalarEmbedding(dim)


class ConditionEmbedding(nn.Module):
    """Every condition of a backbone, summed: cond {name: tensor [B] or [B, D]} -> [B, dim]; a missing name (or
    cond=None) takes that condition's "no condition" value."""

    def __init__(self, spec: list, dim: int):
        super().__init__()
        all_conditions = as_conditions(spec)
        self.frames = {c.name for c in all_conditions if c.kind == "frames"}  # input channels, see FrameInputs
        self.conditions = [c for c in all_conditions if c.kind != "frames"]
        self.embedders = nn.ModuleDict({c.name: _embedder(c, dim) for c in self.conditions})

    def forward(self, cond: dict | None, batch: int, device) -> torch.Tensor | None:
        cond = {k: v for k, v in (cond or {}).items() if k not in self.frames}
        unknown = set(cond) - set(self.embedders)
        if unknown:
            raise ValueError(f"unknown condition(s) {sorted(unknown)} (this model takes: {sorted(self.embedders) or 'none'})")
        out = None
        for name, emb in self.embedders.items():
            value = cond.get(name)
            e = emb(emb.null(batch, device) if value is None else value.to(device))
            out = e if out is None else out + e
        return out


class NoiseEmbedding(nn.Module):
    """c_noise [B] (+ conditions) -> embedding [B, emb_dim] through sinusoids and a two-layer MLP.

    Conditions (`cond_spec`, see cm_media.conditions) are embedded at the sinusoids' width and added to them
    before the MLP, as EDM adds its class embedding; with no conditions the module is the plain noise embedding."""

    def __init__(self, base: int, emb_dim: int, cond_spec: list | None = None):
        super().__init__()
        self.base = base
        self.mlp = nn.Sequential(nn.Linear(base, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond = ConditionEmbedding(cond_spec, base) if cond_spec else None

    def forward(self, c_noise: torch.Tensor, cond: dict | None = None, extra: torch.Tensor | None = None) -> torch.Tensor:
        """`extra` [B, base], when given, joins the sinusoids like a condition (another stream's noise level)."""
        h = sinusoidal_embedding(c_noise, self.base)  # [B, base]
        if extra is not None:
            h = h + extra
        if self.cond is not None:
            e = self.cond(cond, h.shape[0], h.device)
            h = h if e is None else h + e
        elif cond:
            raise ValueError(f"this model takes no conditions, got {sorted(cond)}")
        return self.mlp(h)


COND_MODES = ("embed", "block", "both")


def check_cond_mode(mode: str) -> None:
    if mode not in COND_MODES:
        raise ValueError(f"cond_mode must be one of {', '.join(COND_MODES)}, got {mode!r}")


def embedded_spec(spec: list | None, mode: str) -> list | None:
    """The conditions that join the noise embedding under `mode` (all but for "block", where none do)."""
    check_cond_mode(mode)
    return None if mode == "block" else spec


class BlockCondition(nn.Module):
    """The conditions alone -> [B, dim], which every residual block turns into its own FiLM scale/shift through a
    zero-initialized map (`ResBlock(cond_dim=dim)`, DiT's adaLN-Zero): cond_mode "block" or "both".

    In "embed" mode (EDM's `class_labels`, the default) a small network can learn to ignore a label mixed into the
    noise features; here the label reaches every block by a path of its own, separate from the noise level."""

    def __init__(self, spec: list, dim: int):
        super().__init__()
        self.cond = ConditionEmbedding(spec, dim)
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(dim, dim))

    @staticmethod
    def wanted(spec: list | None, mode: str) -> bool:
        """Whether `mode` routes conditions to the blocks and `spec` has any that are embedded (not frames)."""
        check_cond_mode(mode)
        return mode != "embed" and any(c.kind != "frames" for c in as_conditions(spec))

    def forward(self, cond: dict | None, batch: int, device) -> torch.Tensor | None:
        e = self.cond(cond, batch, device)  # [B, dim]
        return None if e is None else self.mlp(e)


def embed_conditions(embed: NoiseEmbedding, block: BlockCondition | None, mode: str, c_noise: torch.Tensor,
                     cond: dict | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(noise embedding [B, E], block condition embedding [B, E] or None) of a backbone built with `mode`."""
    emb = embed(c_noise, None if block is not None and mode == "block" else cond)
    return emb, None if block is None else block(cond, c_noise.shape[0], c_noise.device)


class FrameInputs(nn.Module):
    """A backbone taking its frame conditions as extra input channels: F(x, c_noise, cond) =
    net(concat(x, value of each frames condition), c_noise, the other conditions).

    A value [B, dim + 1, k, *rest] (k known frames and their mask channel) is zero-padded along the frame axis to
    x's length, so the mask is 0 on every other frame; a missing condition is all zeros ("no condition"). `net` is
    built with `in_channels` plus the conditions' channels (`cm_media.nn.registry.build_backbone` does it)."""

    def __init__(self, net: nn.Module, conditions: list[Condition]):
        super().__init__()
        self.net = net
        self.inputs = [(c.name, c.dim + 1) for c in conditions]

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        cond = dict(cond or {})
        extra = []
        for name, channels in self.inputs:
            value = cond.pop(name, None)
            frames = x.new_zeros(x.shape[0], channels, *x.shape[2:])
            if value is not None:
                k = min(value.shape[2], x.shape[2])
                frames[:, :, :k] = value[:, :, :k].to(frames.dtype)
            extra.append(frames)
        return self.net(torch.cat([x, *extra], 1), c_noise, cond or None)
