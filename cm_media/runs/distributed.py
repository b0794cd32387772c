"""Data-parallel helpers for torchrun: process-group setup from the environment, rank-0 checks, reductions.

`torchrun --nproc_per_node N -m cm_media.cli train CONFIG` sets RANK / WORLD_SIZE / LOCAL_RANK; without
them everything here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def init_from_env(device_type: str) -> Dist:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPU); a single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def all_reduce_(t: torch.Tensor, op: str = "sum", d: Dist | None = None) -> torch.Tensor:
    """In-place all-reduce (sum or max) when distributed; returns t."""
    if d is not None and d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def broadcast_(params, d: Dist | None = None) -> None:
    """Copy rank 0's values of `params` to every process (DDP does this for its module's parameters only)."""
    if d is not None and d.enabled:
        for p in params:
            dist.broadcast(p.data, src=0)


def average_gradients(params, d: Dist | None = None) -> None:
    """Average the gradients of `params` over the processes (what DDP's hooks do), where DDP did not: parameters
    outside the DDP module, or a loss computed on the unwrapped module (a JVP)."""
    if d is None or not d.enabled:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1).float() for g in grads])  # one reduction instead of one per tensor
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= d.world
    offset = 0
    for g in grads:
        g.copy_(flat[offset: offset + g.numel()].view_as(g))
        offset += g.numel()


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def shutdown(d: Dist) -> None:
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
