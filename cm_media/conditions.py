"""Conditions a model can be asked for: named class labels or vectors, embedded by the backbone.

A dataset that carries conditions exposes `conditions: list[Condition]` and `get_cond(indices) -> dict`
mapping each name to a LongTensor [B] of class indices or a FloatTensor [B, dim]. Index `len(classes)`
means "no condition" (the null class used by classifier-free guidance).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Condition:
    """One named condition: `kind` "class" (an index into `classes`) or "vector" (`dim` floats)."""

    name: str
    kind: str = "class"
    classes: list[str] = field(default_factory=list)
    dim: int = 0

    def to_dict(self) -> dict:
        return asdict(self)
