"""How close to the machine's limit a network runs: counted FLOPs of a forward and the measured matmul peak.

`forward_flops` counts the floating-point operations of one call with torch's own counter
(`torch.utils.flop_counter.FlopCounterMode`): matrix products, convolutions and attention, 2 FLOPs per
multiply-add, the usual "model FLOPs" convention; element-wise work (normalization, activations, adds) is not
counted, so the achieved rate measures how much of the time goes to useful matrix work.
`matmul_peak_gflops` measures what this machine reaches on a large square matmul in a given dtype, the
reference an achieved rate is a share of (`cm-media bench` prints both).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one `fn()` call as torch's flop counter sees them (fn runs once)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@torch.no_grad()
def forward_flops(module: torch.nn.Module, *inputs, bf16: bool = False, **kwargs) -> int:
    """FLOPs of one forward `module(*inputs, **kwargs)`, under bf16 autocast when asked (the count depends on
    shapes only, so it is the same in either dtype)."""
    device = next((t.device for t in inputs if isinstance(t, torch.Tensor)), torch.device("cpu"))
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=bf16):
        return count_flops(lambda: module(*inputs, **kwargs))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def default_peak_size(device: torch.device | str) -> int:
    """Matmul side that reaches the peak: 2048 on a CPU (tens of ms per product), 8192 on a GPU."""
    return 8192 if torch.device(device).type == "cuda" else 2048


@torch.no_grad()
def matmul_peak_gflops(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                       size: int | None = None, repeats: int = 5, warmup: int = 2) -> float:
    """GFLOP/s of a `size` x `size` by `size` x `size` matmul in `dtype` on `device` with the current thread
    count: the median over `repeats` timed products after `warmup` untimed ones (2 size^3 FLOPs each)."""
    device = torch.device(device)
    size = size or default_peak_size(device)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(size, size, generator=g).to(device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    for _ in range(warmup):
        torch.mm(a, b, out=out)
    times = []
    for _ in range(max(repeats, 1)):
        _sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times) / 1e9


class Peaks:
    """Matmul peaks per (device, dtype), each measured once, on first request (one per bench run)."""

    def __init__(self, size: int | None = None, repeats: int = 5):
        self.size, self.repeats = size, repeats
        self.values: dict[tuple[str, str], float] = {}

    def get(self, device: torch.device | str, bf16: bool) -> float:
        key = (str(torch.device(device)), "bf16" if bf16 else "fp32")
        if key not in self.values:
            dtype = torch.bfloat16 if bf16 else torch.float32
            self.values[key] = matmul_peak_gflops(dtype, device, self.size, self.repeats)
        return self.values[key]

