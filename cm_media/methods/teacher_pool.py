"""A replay pool of a teacher's (noise, sample, conditions) rows, so one costly teacher sample serves several student
rows: Luhman & Luhman (2021) distil from a fixed set of teacher pairs rendered once; the pool renders them as the
run goes and keeps the newest `capacity`, so each row serves `batch / fresh` student rows on average.
"""

from __future__ import annotations

import torch


class TeacherPool:
    """Ring buffer of rows: noise z [N, C, *axes], the teacher's target for it, and the conditions it was made for."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.z: torch.Tensor | None = None  # [capacity, C, *axes]
        self.target: torch.Tensor | None = None  # [capacity, C, *axes]
        self.cond: dict[str, torch.Tensor] = {}  # name -> [capacity, ...]
        self.size = 0  # rows filled
        self.next = 0  # where the next row goes

    def __len__(self) -> int:
        return self.size

    def add(self, z: torch.Tensor, target: torch.Tensor, cond: dict | None) -> None:
        """Store the rows (oldest rows are overwritten once the pool is full)."""
        cond = cond or {}
        if self.z is None:
            self.z = z.new_empty((self.capacity, *z.shape[1:]))
            self.target = target.new_empty((self.capacity, *target.shape[1:]))
            self.cond = {k: v.new_empty((self.capacity, *v.shape[1:])) for k, v in cond.items()}
        if set(cond) != set(self.cond):
            raise ValueError(f"teacher pool rows name conditions {sorted(cond)}, the pool holds {sorted(self.cond)}")
        n = z.shape[0]
        where = (self.next + torch.arange(n)) % self.capacity  # [n]
        self.z[where] = z
        self.target[where] = target.to(self.target.dtype)
        for k, v in cond.items():
            self.cond[k][where] = v.to(self.cond[k].dtype)
        self.next = int((self.next + n) % self.capacity)
        self.size = min(self.capacity, self.size + n)

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The rows at idx [n] (indices into the filled part): (z, target, conditions)."""
        if self.size == 0:
            raise ValueError("the teacher pool is empty")
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= self.size):
            raise IndexError(f"teacher pool rows {idx.tolist()} outside 0..{self.size - 1}")
        return self.z[idx], self.target[idx], {k: v[idx] for k, v in self.cond.items()}
