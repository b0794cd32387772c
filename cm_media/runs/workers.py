"""Batch chunks shared by worker threads of one torch thread each: generation on a CPU shared with other work.

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


def map_chunks(fn: Callable[[slice], torch.Tensor], n: int, workers: int, chunks_per_worker: int = 2) -> torch.Tensor:
    """torch.cat([fn(s) for s in slices of range(n)]), the slices taken from a queue by `workers` threads that
    each use one torch thread; the caller's thread count is restored afterwards. An error in any chunk is raised
    here once every worker has stopped."""
    slices = chunk_slices(n, workers * chunks_per_worker)
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
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
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
