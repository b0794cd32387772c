"""How close to the bf16 matmul peak a model *could* run: its convolutions and linear layers timed alone.

    python benchmarks/peak_ceiling.py spoken-digits moving-mnist fashion-mnist [--batch 16] [--repeats 7]
        [--threads 2] [--widths 1,2,4] [--json benchmarks/results/peak/peak_ceiling.json]

Issue 19 asks for a bf16 one-step forward at 40% of the measured bf16 matmul peak, "or, where a model is too small
for that, the reason measured". `cm-media bench` gives the achieved share (counted forward FLOPs / forward time /
peak). This script bounds it from above: every Conv1d/2d/3d and Linear call of one forward is captured (its
input, dtype and memory layout as the model runs it: the Generator's bf16 twin under autocast, channels-last
where the run samples that way) and re-run alone, median of --repeats. If all other work (normalization,
activations, adds, copies, attention) cost nothing, the forward would take the sum of those times, so

    ceiling share = counted forward FLOPs / sum of the matrix layers' lone times / peak

(attention's FLOPs are in the numerator and its time is not in the denominator: a true upper bound). A ceiling
under 40% means the target cannot be met at these layer shapes by removing overhead; the per-layer rows say
which shapes are slow. `--widths` re-times each model's costliest conv with its channels multiplied (same input
size), the architecture lever: how the matrix units' share grows with width.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
MATRIX_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def median_s(fn, repeats: int, warmup: int = 2) -> float:
    """Median seconds of fn on the CPU (cm_media.eval.bench.median_times)."""
    from cm_media.eval.bench import median_times

    return median_times([fn], torch.device("cpu"), repeats, warmup)[0]


def capture_calls(backbone: nn.Module, forward) -> list[tuple[nn.Module, torch.Tensor]]:
    """(layer, its input) for every matrix layer call of one `forward()`, in call order."""
    calls, hooks = [], []
    for m in backbone.modules():
        if isinstance(m, MATRIX_LAYERS):
            hooks.append(m.register_forward_pre_hook(lambda mod, args: calls.append((mod, args[0].detach()))))
    try:
        forward()
    finally:
        for h in hooks:
            h.remove()
    return calls


def layer_flops(layer: nn.Module, x: torch.Tensor) -> int:
    from cm_media.eval.flops import count_flops

    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return count_flops(lambda: layer(x))


def time_layer(layer: nn.Module, x: torch.Tensor, repeats: int, min_s: float = 0.005) -> float:
    """Seconds per call: the median over `repeats` of a loop of calls that lasts at least `min_s` (a lone call of
    a small layer takes microseconds, below the timer's noise)."""
    @torch.no_grad()
    def once():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return layer(x)

    k = max(1, math.ceil(min_s / max(median_s(once, 3), 1e-7)))

    def loop():
        for _ in range(k):
            once()

    return median_s(loop, repeats, warmup=1) / k


def widened(layer: nn.Module, x: torch.Tensor, k: int) -> tuple[nn.Module, torch.Tensor]:
    """The same conv with k times the input and output channels (bf16 weights, the input's layout)."""
    cls = type(layer)
    wide = cls(layer.in_channels * k, layer.out_channels * k, layer.kernel_size, stride=layer.stride,
               padding=layer.padding, dilation=layer.dilation)
    wide = wide.to(torch.bfloat16)
    fmt = {4: torch.channels_last, 5: torch.channels_last_3d}.get(x.dim())
    xw = torch.randn(x.shape[0], x.shape[1] * k, *x.shape[2:], dtype=x.dtype)
    if fmt is not None and not x.is_contiguous() and x.is_contiguous(memory_format=fmt):
        wide, xw = wide.to(memory_format=fmt), xw.contiguous(memory_format=fmt)
    return wide, xw


def measure(source: str, args, peak: float) -> dict:
    from cm_media.eval.flops import forward_flops
    from cm_media.runs.generator import load

    gen = load(source, device="cpu")
    backbone = gen.net(True).backbone
    shape = gen.modality.sample_shape(gen.cfg, gen.codec)
    x = torch.randn(args.batch, *shape)  # [B, C, *axes]
    c_noise = torch.full((args.batch,), math.log(gen.cfg.method.sigma_max) / 4)

    @torch.no_grad()
    def forward():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return backbone(x, c_noise)

    forward_s = median_s(forward, args.repeats)
    total_flops = forward_flops(backbone, x, c_noise, bf16=True)
    calls = capture_calls(backbone, forward)
    rows: dict[tuple, dict] = {}  # one row per distinct (layer type, weight shape, input shape, layout)
    for layer, inp in calls:
        key = (type(layer).__name__, tuple(layer.weight.shape), tuple(inp.shape), inp.is_contiguous())
        if key not in rows:
            rows[key] = {"layer": key[0], "weight": list(key[1]), "input": list(key[2]),
                         "layout": "plain" if key[3] else "channels-last", "calls": 0,
                         "flops": layer_flops(layer, inp), "s": time_layer(layer, inp, args.repeats),
                         "_probe": (layer, inp)}
        rows[key]["calls"] += 1
    matrix_s = sum(r["s"] * r["calls"] for r in rows.values())
    matrix_flops = sum(r["flops"] * r["calls"] for r in rows.values())
    for r in rows.values():
        r["gflops_per_s"] = r["flops"] / r["s"] / 1e9
        r["peak_share"] = r["gflops_per_s"] / peak
    costliest = max(rows.values(), key=lambda r: r["s"] * r["calls"])
    width_rows = []
    layer, inp = costliest["_probe"]
    if not isinstance(layer, nn.Linear):
        for k in args.widths:
            wide, xw = (layer, inp) if k == 1 else widened(layer, inp, k)
            f, s = layer_flops(wide, xw), time_layer(wide, xw, args.repeats)
            width_rows.append({"width_x": k, "in_channels": wide.in_channels, "out_channels": wide.out_channels,
                               "gflops_per_s": f / s / 1e9, "peak_share": f / s / 1e9 / peak})
    for r in rows.values():
        del r["_probe"]
    return {
        "model": source, "batch": args.batch, "threads": torch.get_num_threads(),
        "forward_ms": forward_s * 1e3, "forward_gflop": total_flops / 1e9,
        "achieved_share": total_flops / forward_s / 1e9 / peak,
        "matrix_layers_ms": matrix_s * 1e3, "matrix_layers_time_share": matrix_s / forward_s,
        "matrix_layers_share_of_peak": matrix_flops / matrix_s / 1e9 / peak,
        "ceiling_share": total_flops / matrix_s / 1e9 / peak,
        "costliest_layer": {k: costliest[k] for k in ("layer", "weight", "input", "layout", "calls")},
        "costliest_width_scan": width_rows,
        "layers": sorted(rows.values(), key=lambda r: -r["s"] * r["calls"]),
    }


def markdown(results: list[dict]) -> str:
    lines = [f"{results[0]['threads'] if results else '?'} threads; each model's share of the bf16 matmul peak measured "
             "just before it", "",
             "| model | peak GFLOP/s | forward ms | achieved share | matrix layers' time share | their own share of "
             "peak | ceiling share | costliest conv at 1x / 2x / 4x width |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        scan = " / ".join(f"{w['peak_share']:.0%}" for w in r["costliest_width_scan"]) or "-"
        lines.append(f"| {r['model']} | {r['matmul_peak_gflops']:.0f} | {r['forward_ms']:.1f} | {r['achieved_share']:.0%} | "
                     f"{r['matrix_layers_time_share']:.0%} | {r['matrix_layers_share_of_peak']:.0%} | "
                     f"{r['ceiling_share']:.0%} | {scan} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="bundled model names, runs or checkpoints")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--widths", default="1,2,4", help="channel multipliers for the costliest conv")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args()
    args.widths = [int(w) for w in args.widths.split(",") if w.strip()]
    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(args.threads)
    from cm_media.eval.flops import matmul_peak_gflops

    results = []
    for m in args.models:  # the peak measured again beside each model: a shared host's speed drifts within minutes
        peak = matmul_peak_gflops(torch.bfloat16)
        results.append({**measure(m, args, peak), "matmul_peak_gflops": peak})
    text = markdown(results)
    print(text, end="")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"results": results}, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
