"""Median one-step sample latency of a bundled model in a fresh process: plain, with glibc's mmap threshold fixed at
32 MiB (the old bench), or with the trim threshold raised with it (the bench now).

    python benchmarks/malloc_probe.py video plain|fixed|fixed_trim
"""
import ctypes
import statistics
import sys
import time

import torch

import cm_media

name, mode = sys.argv[1], sys.argv[2]
torch.set_num_threads(2)
if mode in ("fixed", "fixed_trim"):
    ctypes.CDLL("libc.so.6").mallopt(-3, 32 * 2**20)
if mode == "fixed_trim":
    ctypes.CDLL("libc.so.6").mallopt(-1, 64 * 2**20)
gen = cm_media.load(name)
opt = gen.options()
shape = gen.shape()
g = torch.Generator().manual_seed(0)
noise = torch.randn(opt.batch_size, *shape, generator=g)
for _ in range(3):
    gen.sample(noise, 1, g, opt.bf16)
ts = []
for _ in range(15):
    t = time.perf_counter()
    gen.sample(noise, 1, g, opt.bf16)
    ts.append(time.perf_counter() - t)
print(name, mode, "batch", opt.batch_size, "median ms", round(statistics.median(ts) * 1000, 2))
