"""Generation's batch chunks on worker threads (cm_media/runs/workers.py): slicing, ordering, thread count,
errors, and that a Generator with workers makes the serial samples."""

import threading

import pytest
import torch

from cm_media.runs.workers import chunk_slices, map_chunks


@pytest.mark.parametrize("n, chunks, sizes", [(10, 4, [2, 3, 3, 2]), (3, 8, [1, 1, 1]), (5, 1, [5]), (4, 4, [1] * 4)])
def test_chunk_slices_cover_the_range_in_order(n, chunks, sizes):
    slices = chunk_slices(n, chunks)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == n
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))


def test_map_chunks_keeps_order_runs_on_workers_with_one_torch_thread_and_restores_threads():
    before = torch.get_num_threads()
    seen = []

    def fn(sl):
        seen.append((threading.current_thread() is threading.main_thread(), torch.get_num_threads()))
        return torch.arange(sl.start, sl.stop)

    assert torch.equal(map_chunks(fn, 11, workers=2), torch.arange(11))
    assert len(seen) == 4 and all(not main and n == 1 for main, n in seen)
    assert torch.get_num_threads() == before
    seen.clear()
    assert torch.equal(map_chunks(fn, 5, workers=1), torch.arange(5))
    assert seen == [(True, before)] * 2  # one worker: the caller's thread, its thread count


def test_map_chunks_raises_a_chunks_error_in_the_caller():
    def fn(sl):
        if sl.start > 0:
            raise ValueError(f"bad chunk at {sl.start}")
        return torch.zeros(sl.stop - sl.start)

    before = torch.get_num_threads()
    with pytest.raises(ValueError, match="bad chunk"):
        map_chunks(fn, 8, workers=2)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("steps", [1, 3])
def test_generator_with_workers_makes_the_serial_samples(steps):
    import cm_media

    gen = cm_media.load("image")
    serial = gen.generate(7, steps=steps, seed=3, batch_size=7, cond={"class": ["1", "7"]})
    gen.workers = 2
    shared = gen.generate(7, steps=steps, seed=3, batch_size=7, cond={"class": ["1", "7"]})
    assert torch.allclose(serial, shared, atol=1e-5)  # float32: the same samples; the draws are made in order
    assert not torch.allclose(shared[:4], gen.generate(4, steps=steps, seed=4, batch_size=7)[:4], atol=1e-3)
