"""Batch chunks shared by worker threads of one torch thread each: generation and training on a CPU shared with
other work.

Beside a busy process, torch's OpenMP team is as slow as its slowest thread (each parallel region splits work
evenly, so the thread sharing a core with the other process holds everyone back), and one thread leaves the free
part of the busy core unused. Worker threads that each run whole chunks of the batch on one torch thread take the
next chunk when they finish one: the worker on the free core does more of them. Results are concatenated in
order, so they equal the serial ones (each sample's computation is the same; only the batch it rides in differs).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable

import torch


def chunk_slices(n: int, chunks: int) -> list[slice]:
    """`chunks` contiguous slices covering range(n), sizes differing by at most one (fewer when n < chunks)."""
    chunks = max(1, min(chunks, n))
    bounds = [round(i * n / chunks) for i in range(chunks + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def even_chunks(n: int, workers: int, per_worker: int = 2) -> int:
    """The most chunks, at most workers * per_worker, that split n evenly (1: n cannot be split)."""
    return next(k for k in range(max(1, min(n, workers * per_worker)), 0, -1) if n % k == 0)


def map_chunks(fn: Callable[[slice], torch.Tensor], n: int, workers: int, chunks_per_worker: int = 2,
               chunks: int | None = None) -> torch.Tensor:
    """torch.cat([fn(s) for s in slices of range(n)]), the slices (`chunks` of them, default workers *
    chunks_per_worker) taken from a queue by `workers` threads that each use one torch thread; the caller's thread
    count is restored afterwards. An error in any chunk is raised here once every worker has stopped."""
    slices = chunk_slices(n, chunks or workers * chunks_per_worker)
    if workers <= 1 or len(slices) == 1:
        return torch.cat([fn(s) for s in slices])
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(len(slices)):
        todo.put(i)
    out: list[torch.Tensor | None] = [None] * len(slices)
    errors: list[BaseException] = []
    threads_before = torch.get_num_threads()

    def work():
        torch.set_num_threads(1)  # this thread's OpenMP team: itself
        while not errors:
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                out[i] = fn(slices[i])
            except BaseException as e:  # re-raised in the caller's thread
                errors.append(e)

    pool = [threading.Thread(target=work, daemon=True) for _ in range(min(workers, len(slices)))]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    torch.set_num_threads(threads_before)  # set_num_threads is also the default of threads started later
    if errors:
        raise errors[0]
    return torch.cat(out)


def loss_backward_in_chunks(method, net: torch.nn.Module, x0: torch.Tensor, step: int, gen: torch.Generator,
                            cond: dict | None, autocast: Callable, workers: int) -> torch.Tensor:
    """A training step's per-sample losses [B] (detached), the gradients of their mean accumulated into `net`'s
    parameters: chunk i of K runs `method` as data-parallel rank i of K (it draws the whole batch's randomness from
    a copy of `gen` and keeps its slice, as DDP ranks do), forward and backward on a worker thread. `gen` ends
    where one serial loss call leaves it, so the draws, and the step, are those of the serial loss (up to the
    order in which float gradients are summed). `autocast()` makes a fresh autocast context (its state is
    per thread)."""
    import copy

    b = x0.shape[0]
    k = even_chunks(b, workers)
    size, start_state, end_state = b // k, gen.get_state(), []

    def chunk(sl: slice) -> torch.Tensor:
        rank = copy.copy(method)  # shares the networks; only rank and world differ
        rank.rank, rank.world = sl.start // size, k
        g = torch.Generator().manual_seed(0)
        g.set_state(start_state)
        part = {name: v[sl] for name, v in cond.items()} if cond else None
        with autocast():
            per = rank.loss(net, x0[sl], step, g, part)  # [size]
        (per.float().sum() / b).backward()
        if sl.start == 0:
            end_state.append(g.get_state())
        return per.detach().float()

    per_sample = map_chunks(chunk, b, workers, chunks=k)
    gen.set_state(end_state[0])
    return per_sample
