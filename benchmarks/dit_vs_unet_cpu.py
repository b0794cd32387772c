"""Forward latency of the digits patch transformer (image preset dit-digits) vs the digits-small UNet.

Batch 64 of 8x8 one-channel digits, float32 vs bf16 autocast; `--mode forward` (no grad: one-step
generation cost) or `--mode train` (forward + backward of a squared output). Every repeat runs all settings
back to back, so the ratios come from the same load; medians are reported.
    python benchmarks/dit_vs_unet_cpu.py [--mode forward|train] [--repeats 30] [--batch 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from cm_media.nn import build_backbone, count_parameters
from modalities.image.presets import PRESETS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--presets", default="digits-small,dit-digits")
    ap.add_argument("--mode", choices=("forward", "train"), default="forward")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size)  # [B, C, H, W]
    c_noise = torch.randn(args.batch)
    models = {name: build_backbone({"preset": name}, PRESETS, dims=2, in_channels=1).eval()
              for name in args.presets.split(",")}
    settings = [(name, dtype) for name in models for dtype in ("float32", "bf16")]
    times: dict[tuple, list[float]] = {s: [] for s in settings}
    train = args.mode == "train"
    with torch.set_grad_enabled(train):
        for rep in range(args.warmup + args.repeats):
            for name, dtype in settings:
                t0 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
                    out = models[name](x, c_noise)
                if train:
                    out.float().square().mean().backward()
                elapsed = time.perf_counter() - t0
                if rep >= args.warmup:
                    times[(name, dtype)].append(elapsed)
    med = {s: statistics.median(v) * 1e3 for s, v in times.items()}
    base = med[settings[0]]
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{args.mode}, batch {args.batch} x 1 x {args.size} x {args.size}, {args.repeats} repeats (median)")
    print(f"{'backbone':<14}{'params':>10}{'dtype':>9}{'ms':>10}{'vs first':>10}{'bf16 speedup':>14}")
    rows = []
    for name, dtype in settings:
        ms = med[(name, dtype)]
        speedup = med[(name, "float32")] / ms
        print(f"{name:<14}{count_parameters(models[name]):>10}{dtype:>9}{ms:>10.1f}{ms / base:>10.2f}"
              f"{speedup:>14.2f}")
        rows.append({"backbone": name, "dtype": dtype, "median_ms": ms, "ratio_vs_first": ms / base,
                     "iqr_ms": [statistics.quantiles(times[(name, dtype)], n=4)[i] * 1e3 for i in (0, 2)]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": args.mode, "batch": args.batch, "threads": args.threads, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
