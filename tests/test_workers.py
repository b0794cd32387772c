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


@pytest.mark.parametrize("method", ["ict", "edm"])
def test_training_step_in_chunks_equals_the_serial_step(digits_config, method):
    """Chunks as data-parallel ranks on worker threads: the same per-sample losses, the same gradients (up to
    float summation order) and the generator left where the serial loss leaves it."""
    from cm_media.methods import build_method
    from cm_media.runs.config import load_config
    from cm_media.runs.model import build_model
    from cm_media.runs.workers import loss_backward_in_chunks

    cfg = load_config(digits_config, ["backbone.preset=tiny", f"method.name={method}"])
    torch.manual_seed(0)
    _, _, model = build_model(cfg)
    m = build_method(cfg.method, model, 100)
    x0 = torch.randn(8, 1, 8, 8)
    gen = torch.Generator().manual_seed(5)
    serial = m.loss(model, x0, 3, gen)
    serial.float().mean().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    after_serial = torch.randn(3, generator=gen)
    model.zero_grad(set_to_none=True)
    gen = torch.Generator().manual_seed(5)
    chunked = loss_backward_in_chunks(m, model, x0, 3, gen, None, lambda: torch.autocast("cpu", enabled=False), 2)
    assert torch.allclose(chunked, serial.detach(), rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(p.grad, g, rtol=1e-4, atol=1e-6)
    assert torch.equal(torch.randn(3, generator=gen), after_serial)
    assert m.rank == 0 and m.world == 1  # the method itself is untouched


def test_even_chunks():
    from cm_media.runs.workers import even_chunks

    assert [even_chunks(n, 2) for n in (8, 6, 7, 1, 2, 32)] == [4, 3, 1, 1, 2, 4]
    assert even_chunks(9, 3) == 3 and even_chunks(12, 1) == 2
