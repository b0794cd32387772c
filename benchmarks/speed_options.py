"""Generation speed options side by side: float32, bf16 autocast, channels_last, torch.compile and their mixes.

    python benchmarks/speed_options.py SOURCE [--steps 1,2] [--num-samples 256] [--repeats 5] [--batch B]
        [--settings float32,bf16,channels_last,channels_last+bf16,compile,compile+bf16] [--threads N]
        [--warm-compile-cache] [--name NAME] [--out benchmarks/results]

SOURCE is a run directory, a checkpoint file or a bundled model name. For every setting and step count the
script measures, in one process:

- latency of one batch through the sampler (model space): every (setting, steps) pair is called once (its
  *first call*, which for the compile settings includes compilation), then all pairs run in alternation for
  `--warmup` untimed and `--repeats` timed rounds (cm_media.bench.median_times), so machine load hits them alike;
  the median is reported, with its ratio to float32 at the same step count;
- quality: FD / KID +- se / precision / recall (and the learned-feature FD where the modality ships a feature
  net) of `--num-samples` generated items against the run's held-out split, the same reference as
  `cm-media bench`;
- the largest and mean absolute difference of those samples from float32's at the same seed (decoded media).

"quality unchanged" means FD (and net FD) within `--tol` (relative, default 5%) of float32's and KID within one
standard error (the larger of the two rows') or `--tol`, whichever is wider; the last line names the fastest
setting with unchanged quality per step count. A setting that fails on this torch or machine (a compile error,
a missing compiler) gets its error in the table instead of numbers; the others still run. torch.compile's first
call is timed with a fresh inductor cache (a cold compile) unless --warm-compile-cache. The run's own
`sample.channels_last` / `sample.compile` are ignored: float32 is always the plain model. Writes
<out>/speed_options_<name>.json and .md.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cm_media.errors import UserError
from cm_media.eval import bench
from cm_media.runs.generator import Generator, apply_speed_options, load

# name -> (channels_last, compile, bf16)
SETTINGS: dict[str, tuple[bool, bool, bool]] = {
    "float32": (False, False, False),
    "bf16": (False, False, True),
    "channels_last": (True, False, False),
    "channels_last+bf16": (True, False, True),
    "compile": (False, True, False),
    "compile+bf16": (False, True, True),
}


def error_text(exc: BaseException) -> str:
    """One short line for a table cell: the exception type and the first line of its message."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")
    return text[:200]


def plain_generator(source: str, device: str) -> Generator:
    """The run's generator with its speed options undone: contiguous weights, the uncompiled backbone."""
    gen = load(source, device=device)
    backbone = gen.model.backbone
    if hasattr(backbone, "_orig_mod"):  # the run's sample.compile wrapped it
        gen.model.backbone = backbone._orig_mod
    for p in gen.model.parameters():
        p.data = p.data.contiguous()
    return gen


def variant(gen: Generator, channels_last: bool, compile: bool) -> tuple[Generator, int]:
    """A Generator on a copy of gen's model with the speed options applied; (it, weights made channels_last)."""
    if not (channels_last or compile):
        return gen, 0
    model = copy.deepcopy(gen.model)
    apply_speed_options(model, channels_last, compile)
    converted = sum(1 for p in model.parameters() if p.ndim in (4, 5)) if channels_last else 0
    return Generator(gen.cfg, model, gen.codec, gen.modality, gen.device, gen.source), converted


def unchanged(row: dict, base: dict, tol: float) -> bool | None:
    """Quality of `row` within tolerance of float32's `base` (None when either lacks metrics)."""
    if row.get("fd") is None or base.get("fd") is None:
        return None
    ok = abs(row["fd"] - base["fd"]) <= tol * base["fd"]
    if row.get("net_fd") is not None and base.get("net_fd") is not None:
        ok = ok and abs(row["net_fd"] - base["net_fd"]) <= tol * base["net_fd"]
    se = max(x for x in (row.get("kid_se"), base.get("kid_se"), 0.0) if x is not None and math.isfinite(x))
    return bool(ok and abs(row["kid"] - base["kid"]) <= max(se, tol * abs(base["kid"])))


def run(args: argparse.Namespace) -> dict:
    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    steps_list = bench.parse_steps(args.steps)
    names = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in names if s not in SETTINGS]
    if unknown:
        raise UserError(f"unknown setting(s) {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
    if "float32" not in names:
        names.insert(0, "float32")  # the reference for ratios, differences and "quality unchanged"
    if args.num_samples < 4 or args.repeats < 1:
        raise UserError("--num-samples must be >= 4 and --repeats >= 1")

    compile_cache, saved = None, os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if any(SETTINGS[s][1] for s in names) and not args.warm_compile_cache:
        # a fresh inductor cache, so "first call" is a cold compile even when an earlier run cached these kernels
        compile_cache = tempfile.mkdtemp(prefix="speed_options_inductor_")
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = compile_cache
    try:
        return measure_all(args, names, steps_list, t_start)
    finally:
        if compile_cache:
            shutil.rmtree(compile_cache, ignore_errors=True)
            if saved is None:
                os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
            else:
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = saved


def measure_all(args, names: list[str], steps_list: list[int], t_start: float) -> dict:
    gen = plain_generator(args.source, args.device)
    dev, cfg = gen.device, gen.cfg
    batch = args.batch or cfg.sample.batch_size
    shape = gen.modality.sample_shape(cfg, gen.codec)
    noise = torch.randn((batch, *shape), generator=torch.Generator().manual_seed(args.seed)).to(dev)  # [B, C, *axes]
    name = args.name or bench._label(str(args.source), set())

    # one Generator per memory layout / compile choice; bf16 is only the autocast flag at call time
    layouts: dict[tuple[bool, bool], tuple[Generator | None, int, str | None]] = {}
    for s in names:
        cl, comp, _ = SETTINGS[s]
        if (cl, comp) not in layouts:
            try:
                layouts[(cl, comp)] = (*variant(gen, cl, comp), None)
            except Exception as exc:
                layouts[(cl, comp)] = (None, 0, error_text(exc))

    rows: dict[tuple[str, int], dict] = {}
    calls: dict[tuple[str, int], object] = {}
    for s in names:
        cl, comp, bf16 = SETTINGS[s]
        g, converted, err = layouts[(cl, comp)]
        for k in steps_list:
            row = {"setting": s, "steps": k, "channels_last": cl, "compile": comp, "bf16": bf16, "error": err}
            if cl:
                row["channels_last_weights"] = converted
            rows[(s, k)] = row
            if err:
                continue

            def call(g=g, k=k, bf16=bf16):
                return g.sample(noise, k, torch.Generator().manual_seed(args.seed), bf16)

            try:  # the first call: compilation for the compile settings, first-touch costs for the others
                bench._sync(dev)
                t0 = time.perf_counter()
                call()
                bench._sync(dev)
                row["first_call_s"] = time.perf_counter() - t0
                calls[(s, k)] = call
            except Exception as exc:
                row["error"] = error_text(exc)
            print(f"first call {s} {k} step(s): "
                  + (f"{row['first_call_s']:.2f} s" if "first_call_s" in row else row["error"]), flush=True)

    # timing: every working pair in alternation; a pair failing now drops out with its error
    keys = list(calls)

    def guarded(key):
        def fn():
            if rows[key]["error"] is None:
                try:
                    calls[key]()
                except Exception as exc:
                    rows[key]["error"] = error_text(exc)
        return fn

    t0 = time.perf_counter()
    times = bench.median_times([guarded(k) for k in keys], dev, args.repeats, args.warmup) if keys else []
    print(f"timed {len(keys)} configurations x {args.repeats} rounds in {time.perf_counter() - t0:.0f} s", flush=True)
    for key, t in zip(keys, times):
        if rows[key]["error"] is None:
            rows[key]["latency_s"] = t
            rows[key]["samples_per_s"] = batch / t
    for s in names:
        if SETTINGS[s][1]:  # compile time: first call of the first step count beyond a steady call
            row = rows[(s, steps_list[0])]
            if row.get("latency_s") is not None:
                row["compile_s"] = max(row["first_call_s"] - row["latency_s"], 0.0)

    # quality of num_samples at one seed per setting, and the difference from float32's samples
    opts = bench.BenchOptions(max_references=args.max_references, seed=args.seed)
    ref = bench.reference_for(gen, opts, batch)
    base_media: dict[int, torch.Tensor] = {}
    for (s, k), row in rows.items():  # float32 comes first for every k
        if row["error"] is not None:
            continue
        g, _, _ = layouts[(row["channels_last"], row["compile"])]
        try:
            t0 = time.perf_counter()
            media = g.generate(args.num_samples, steps=k, seed=args.seed + 1, batch_size=batch, bf16=row["bf16"])
            row["quality_generation_s"] = time.perf_counter() - t0
            row.update(bench.media_quality(g, ref, media))
        except Exception as exc:
            row["error"] = error_text(exc)
            continue
        if s == "float32":
            base_media[k] = media
        if k in base_media:
            diff = (media.float() - base_media[k].float()).abs()
            row["max_abs_diff"], row["mean_abs_diff"] = float(diff.max()), float(diff.mean())
        print(f"quality {s} {k} step(s): FD {row['fd']:.4g}", flush=True)

    fastest: dict[str, dict] = {}
    for k in steps_list:
        base = rows[("float32", k)]
        for s in names:
            row = rows[(s, k)]
            if row.get("latency_s") is not None and base.get("latency_s") is not None:
                row["speedup_vs_float32"] = base["latency_s"] / row["latency_s"]
            if row["error"] is None:
                row["quality_unchanged"] = unchanged(row, base, args.tol)
        ok = [rows[(s, k)] for s in names
              if rows[(s, k)].get("quality_unchanged") and rows[(s, k)].get("latency_s") is not None]
        if ok:
            best = min(ok, key=lambda r: r["latency_s"])
            fastest[str(k)] = {"setting": best["setting"], "speedup_vs_float32": best.get("speedup_vs_float32")}

    backbone = gen.model.backbone
    meta = {
        "name": name, "source": str(args.source), "checkpoint": str(gen.source), "modality": cfg.modality,
        "dataset": cfg.data.dataset, "arch": cfg.backbone.get("arch", "unet"),
        "params": sum(p.numel() for p in backbone.parameters()), "batch": batch, "sample_shape": list(shape),
        "device": str(dev), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "cpu": platform.processor() or platform.machine(),
        "repeats": args.repeats, "warmup": args.warmup, "num_samples": args.num_samples, "reference_size": ref.size,
        "seed": args.seed, "tol": args.tol, "compile_cache": "warm" if args.warm_compile_cache else "cold",
        "total_s": time.perf_counter() - t_start,
    }
    return {"meta": meta, "rows": list(rows.values()), "fastest_unchanged": fastest}


def _fmt(v, digits: int = 3) -> str:
    return bench._fmt(v, digits)


def to_markdown(result: dict) -> str:
    m, rows = result["meta"], result["rows"]
    has_net = any(r.get("net_fd") is not None for r in rows)
    lines = [
        f"Speed options of `{m['name']}` ({m['modality']} {m['dataset']}, {m['arch']}, {m['params']} parameters): "
        f"batch {m['batch']} of {'x'.join(map(str, m['sample_shape']))} on {m['device']} ({m['cpu']}), "
        f"torch {m['torch']}, {m['threads']} thread(s); latency = median of {m['repeats']} alternating rounds; "
        f"quality on {m['num_samples']} generated vs {m['reference_size']} held-out items, differences vs float32 "
        f"at the same seed (decoded media)."
        + (f" torch.compile's first call is a {m['compile_cache']} compile." if any(r["compile"] for r in rows)
           else ""),
        "",
    ]
    cols = ["setting", "steps", "latency ms", "x float32", "samples/s", "first call s", "FD", "KID x1e3 (+-se)"]
    cols += ["net FD"] if has_net else []
    cols += ["precision", "recall", "max abs diff", "mean abs diff", "quality unchanged", "note"]
    lines += ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        lat = r.get("latency_s")
        kid = "-"
        if r.get("kid") is not None:
            se = r.get("kid_se")
            kid = f"{r['kid'] * 1e3:.3g}" + (f" +- {se * 1e3:.2g}" if se is not None and math.isfinite(se) else "")
        notes = []
        if r.get("error"):
            notes.append("error: " + r["error"].replace("|", "/"))
        if r.get("compile_s") is not None:
            notes.append(f"compile ~{r['compile_s']:.1f} s")
        if r.get("channels_last_weights") == 0 and not r.get("error"):
            notes.append("no 4D/5D conv weights: layout unchanged")
        q = r.get("quality_unchanged")
        row = [r["setting"], str(r["steps"]), _fmt(lat * 1e3) if lat is not None else "-",
               _fmt(r.get("speedup_vs_float32")), _fmt(r.get("samples_per_s")), _fmt(r.get("first_call_s")),
               _fmt(r.get("fd")), kid]
        row += [_fmt(r.get("net_fd"))] if has_net else []
        row += [_fmt(r.get("precision"), 2), _fmt(r.get("recall"), 2), _fmt(r.get("max_abs_diff"), 2),
                _fmt(r.get("mean_abs_diff"), 2), "-" if q is None else ("yes" if q else "no"), "; ".join(notes)]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    fastest = result["fastest_unchanged"]
    parts = [f"{k} step(s): {v['setting']} ({_fmt(v['speedup_vs_float32'])}x float32)" for k, v in fastest.items()]
    tol = f"{m['tol']:.0%}"
    lines.append(f"Fastest with unchanged quality (FD within {tol} of float32's, KID within 1 se or {tol}): "
                 + ("; ".join(parts) if parts else "none measured") + ".")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", help="run directory, checkpoint file or bundled model name")
    ap.add_argument("--steps", default="1,2", help="consistency step counts, comma-separated")
    ap.add_argument("--settings", default=",".join(SETTINGS), help=f"subset of {', '.join(SETTINGS)}")
    ap.add_argument("--batch", type=int, default=None, help="timing and generation batch (default: sample.batch_size)")
    ap.add_argument("--num-samples", type=int, default=256, help="generated items per setting for the metrics")
    ap.add_argument("--max-references", type=int, default=2000, help="cap on held-out reference items")
    ap.add_argument("--repeats", type=int, default=5, help="timed alternating rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed alternating rounds after the first calls")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--warm-compile-cache", action="store_true",
                    help="let torch.compile reuse kernels cached by earlier runs (default: time a cold compile)")
    ap.add_argument("--tol", type=float, default=0.05,
                    help="relative FD / KID change vs float32 still counted as unchanged quality")
    ap.add_argument("--name", default=None, help="output name (default: the run folder's name)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed_options"), help="folder for the JSON and Markdown")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    table = to_markdown(result)
    print(table, end="")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"speed_options_{result['meta']['name']}"
    clean = json.loads(json.dumps(result, default=str), parse_constant=lambda c: None)  # NaN/inf -> null
    (out / f"{stem}.json").write_text(json.dumps(clean, indent=2) + "\n")
    (out / f"{stem}.md").write_text(table)
    print(f"wrote {out / stem}.json and .md ({result['meta']['total_s']:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
