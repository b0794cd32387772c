"""Which precision a training step computes in: bf16 autocast only where the device computes bf16 fast.

A CPU without native bf16 matrix instructions (AVX2 only: no AVX-512, no AMX) runs bf16 convolutions and
matmuls through slow reference kernels: on the 2-core AMD EPYC of these sessions a bf16 matmul reached 0.2
GFLOP/s against 40-65 GFLOP/s in float32, and the spoken-digits forward took 18x longer under bf16 autocast
(benchmarks/training_speed.py). `train.bf16: auto` asks for bf16 where it is fast (CUDA with bf16, a CPU that
oneDNN runs bf16 on: AVX-512 or AMX) and float32 elsewhere; true and false force it.
"""

from __future__ import annotations

import functools

import torch

AUTO = "auto"


@functools.cache
def _cpu_bf16_fast() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN: torch's own bf16 kernels are the slow ones
        return False


def bf16_is_fast(device: torch.device | str) -> bool:
    """Whether bf16 autocast speeds this device up: CUDA with bf16 support, or a CPU oneDNN computes bf16 on."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return device.type == "cpu" and _cpu_bf16_fast()


def resolve_bf16(setting: bool | str, device: torch.device | str) -> bool:
    """train.bf16 (true, false or "auto") as the bool the step autocasts with on `device`."""
    if setting == AUTO:
        return bf16_is_fast(device)
    return bool(setting)


def slow_bf16_note(setting: bool | str, device: torch.device | str) -> str | None:
    """A one-line warning when bf16 was forced on a device that computes it slowly, else None."""
    if setting is True and torch.device(device).type == "cpu" and not bf16_is_fast(device):
        return (f"train.bf16 is true on a CPU without native bf16 ({torch.backends.cpu.get_cpu_capability()}): "
                "each step is many times slower than in float32; train.bf16=auto picks float32 here")
    return None
