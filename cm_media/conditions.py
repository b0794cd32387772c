"""Conditions a model can be asked for: named class labels, vectors or scalars, embedded by the backbone.

A dataset that carries conditions exposes `conditions: list[Condition]` and `get_cond(indices) -> dict` mapping
each name to a LongTensor [B] of class indices or a FloatTensor [B, dim]. Index `len(classes)` means "no
condition" (the null class of classifier-free guidance).

A "frames" condition gives the network known leading frames (along the first data axis) of the sample itself,
such as the first frame of a clip to animate: its value is a model-space tensor [B, dim + 1, k, *rest] (the k
frames and a mask channel, 1 where given), zeros for "no condition". The backbone takes it as extra input
channels (cm_media.nn.embedding.FrameInputs); training cuts it from each clean sample (`derived_conditions`),
and generation encodes a picture or clip file into it. A run records its conditions in `backbone.cond`, so the
network can be rebuilt, and `cm-media info SOURCE` can list them, without the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from cm_media.errors import UserError

KINDS = ("class", "vector", "scalar", "frames")
GUIDANCE = "cfg_scale"  # the scalar condition of a guided-distilled student: its classifier-free guidance scale
INTERVAL = "interval"  # the scalar condition of a MeanFlow network: t - r, set by the network itself, never by a user


@dataclass
class Condition:
    """One named condition: `kind` "class" (an index into `classes`), "vector" (`dim` floats), "scalar", or
    "frames" (the first `frames` frames of a sample with `dim` model channels, see above)."""

    name: str
    kind: str = "class"
    classes: list[str] = field(default_factory=list)
    dim: int = 0
    frames: int = 0

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.frames:
            del out["frames"]
        return out

    def describe(self) -> list | str:
        """What a user may ask for: the class names, or the kind of value."""
        if self.kind == "class":
            return list(self.classes)
        if self.kind == "frames":
            return f"a picture or video file (its first {self.frames} frame(s))"
        return f"{self.dim} numbers" if self.kind == "vector" else "a number"


def conditions_from_spec(spec: list | None) -> list[Condition]:
    """Validate a `backbone.cond` list of mappings (or Conditions) into Conditions."""
    out = []
    for item in spec or []:
        if isinstance(item, Condition):
            item = item.to_dict()
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise UserError(f"backbone.cond entries need a name, got {item!r}")
        c = Condition(name=item["name"], kind=item.get("kind", "class"), classes=[str(v) for v in item.get("classes") or []],
                      dim=int(item.get("dim") or 0), frames=int(item.get("frames") or 0))
        if c.kind not in KINDS:
            raise UserError(f"condition {c.name!r}: unknown kind {c.kind!r} ({', '.join(KINDS)})")
        if c.kind == "class" and not c.classes:
            raise UserError(f"condition {c.name!r} of kind class lists no classes")
        if c.kind in ("vector", "frames") and c.dim < 1:
            raise UserError(f"condition {c.name!r} of kind {c.kind} needs dim >= 1")
        if c.kind == "frames" and c.frames < 1:
            raise UserError(f"condition {c.name!r} of kind frames needs frames >= 1")
        out.append(c)
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise UserError(f"backbone.cond names a condition twice: {names}")
    return out


def as_conditions(items: list | None) -> list[Condition]:
    """Typed conditions as they are (the assembler's, parsed once from `backbone.cond`); a stored or hand-written
    list of mappings is parsed here (a backbone built directly from a config section)."""
    items = list(items or [])
    return items if all(isinstance(c, Condition) for c in items) else conditions_from_spec(items)


def _class_index(c: Condition, value) -> int:
    """A class name, or an index given as an int or digit string, -> index; a clear error listing the classes."""
    text = str(value).strip()
    if text in c.classes:
        return c.classes.index(text)
    if text.lstrip("-").isdigit() and 0 <= int(text) < len(c.classes):
        return int(text)
    raise UserError(f"unknown value {text!r} for condition {c.name!r} (valid: {', '.join(c.classes)}, "
                    f"or an index 0-{len(c.classes) - 1})")


def _values(value) -> list:
    """A request value: one value, a comma list 'a,b' or a Python list -> list of single values."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, str) and "," in value:
        return [v for v in value.split(",") if v.strip()]
    return [value]


def request_tensors(conditions: list[Condition], request: dict | None, n: int) -> dict[str, torch.Tensor]:
    """{name: value(s)} for n samples -> {name: tensor}; lists cycle over the n samples; unnamed conditions are
    left out (the network then uses their "no condition" value)."""
    by_name = {c.name: c for c in conditions}
    out: dict[str, torch.Tensor] = {}
    for name, value in (request or {}).items():
        if name not in by_name:
            known = ", ".join(c.name for c in conditions if c.name != GUIDANCE) or "none: this model is unconditional"
            raise UserError(f"unknown condition {name!r} (this model takes: {known})")
        c, values = by_name[name], _values(value)
        if not values:
            raise UserError(f"condition {name!r} has no value")
        if c.kind == "class":
            idx = [_class_index(c, v) for v in values]
            out[name] = torch.tensor([idx[i % len(idx)] for i in range(n)], dtype=torch.long)
        elif c.kind == "scalar":
            out[name] = torch.tensor([float(values[i % len(values)]) for i in range(n)])
        elif c.kind == "frames":
            out[name] = _frames_value(c, value, n)
        else:
            vec = torch.as_tensor([float(v) for v in values], dtype=torch.float32)
            if vec.numel() != c.dim:
                raise UserError(f"condition {name!r} takes {c.dim} numbers, got {vec.numel()}")
            out[name] = vec.expand(n, c.dim).clone()
    return out


def _frames_value(c: Condition, value, n: int) -> torch.Tensor:
    """A frames condition's value for n samples from a tensor [m, dim + 1, k, *rest] (m values cycle over the
    samples); `Generator.cond_tensors` makes it from a file."""
    if not isinstance(value, torch.Tensor):
        raise UserError(f"condition {c.name!r} takes {c.describe()}")
    if value.ndim < 3 or value.shape[1] != c.dim + 1:
        raise UserError(f"condition {c.name!r} needs a tensor [m, {c.dim + 1}, frames, ...], got {tuple(value.shape)}")
    return value[torch.arange(n) % value.shape[0]].float()


def frame_condition(c: Condition, x: torch.Tensor) -> torch.Tensor:
    """The value of frames condition `c` for model tensors x [B, C, T, *rest]: its first c.frames frames and a
    mask channel of ones, [B, C + 1, k, *rest]."""
    known = x[:, :, :c.frames]
    return torch.cat([known, torch.ones_like(known[:, :1])], 1)


def keep_known_frames(denoiser, conditions: list[Condition], cond: dict[str, torch.Tensor]):
    """f(x, sigma) whose estimate of the clean sample holds the given frames exactly where a frames condition's mask
    is 1: they are known, so E[x0 | x_sigma, frames] equals them there (replacement, as in inpainting). Each
    sampler step then continues from the given frames rather than from the network's copy of them, so a clip's
    first frame is the picture as the codec decodes it."""
    given = [(cond[c.name], c.dim) for c in conditions if c.kind == "frames" and c.name in cond]
    if not given:
        return denoiser

    def f(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        out = denoiser(x, sigma)  # [B, C, T, *rest]
        for value, dim in given:
            k = min(value.shape[2], out.shape[2])
            known, mask = value[:, :dim, :k].to(out.dtype), value[:, dim:dim + 1, :k].to(out.dtype)
            out = torch.cat([torch.lerp(out[:, :, :k], known, mask), out[:, :, k:]], 2)
        return out

    return f


def derived_conditions(conditions: list[Condition], x0: torch.Tensor) -> dict[str, torch.Tensor]:
    """The conditions cut from the clean samples x0 themselves (every frames condition), for training."""
    return {c.name: frame_condition(c, x0) for c in conditions if c.kind == "frames"}


def null_like(conditions: list[Condition], cond: dict[str, torch.Tensor],
              names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """The "no condition" version of a batch of conditions (scalars such as the guidance scale are kept); with
    `names`, only those conditions are nulled and the others kept as given."""
    by_name = {c.name: c for c in conditions}
    out = {}
    for name, value in cond.items():
        c = by_name[name]
        if names is not None and name not in names:
            out[name] = value
        elif c.kind == "class":
            out[name] = torch.full_like(value, len(c.classes))
        elif c.kind in ("vector", "frames"):
            out[name] = torch.zeros_like(value)
        else:
            out[name] = value
    return out


def drop_conditions(conditions: list[Condition], cond: dict[str, torch.Tensor], drop: torch.Tensor,
                    names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Classifier-free guidance training (Ho & Salimans 2022): where drop [B] is true, every condition of that
    sample (or only those in `names`) becomes "no condition" (the training loop draws `drop` with probability
    train.cond_dropout for all, train.cond_dropout_each for each one alone)."""
    null = null_like(conditions, cond, names)
    out = {}
    for name, value in cond.items():
        d = drop.to(value.device).reshape(-1, *([1] * (value.ndim - 1)))
        out[name] = torch.where(d, null[name], value)
    return out


def guided_names(conditions: list[Condition], guide: list[str] | None) -> list[str] | None:
    """The conditions a guided sample pushes towards (`sample.guide`, `--guide`): None for all; a one-line error
    for a name the model does not take."""
    if not guide:
        return None
    known = [c.name for c in conditions if c.name not in (GUIDANCE, INTERVAL)]
    unknown = [g for g in guide if g not in known]
    if unknown:
        raise UserError(f"--guide / sample.guide names {', '.join(map(repr, unknown))}, which this model does not "
                        f"take (its conditions: {', '.join(known) or 'none'})")
    return list(guide)


class Labelled:
    """Mixin for datasets with per-item labels: `use_conditions` picks those named by `data.cond`; `get_cond`
    returns them for a batch of indices."""

    conditions: list[Condition] = []
    _cond_values: dict[str, torch.Tensor] = {}

    def use_conditions(self, wanted: list[str], available: dict[str, tuple[Condition, torch.Tensor]]):
        """Condition on the labels named in `wanted` (from `available`: name -> (Condition, values [N] or [N, D],
        or None for a condition cut from the samples themselves, such as a first frame))."""
        unknown = [w for w in wanted if w not in available]
        if unknown:
            known = ", ".join(available) or "none"
            raise UserError(f"data.cond names {', '.join(map(repr, unknown))}, which this dataset does not label "
                            f"(it has: {known})")
        self.conditions = [available[w][0] for w in wanted]
        self._cond_values = {w: available[w][1] for w in wanted}
        return self

    def get_cond(self, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        idx = torch.as_tensor(indices).long()  # conditions without stored values are cut from the samples
        return {name: values[idx] for name, values in self._cond_values.items() if values is not None}
