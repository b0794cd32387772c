"""Training throughput of the real-content recipes: samples/s, counted FLOPs of a step, share of the matmul peak,
and where a step's time goes, for a baseline and the fast path side by side (issue 35).

    python benchmarks/training_speed.py [--recipes spoken_digits,notes,...] [--threads 1,2] [--batch 4]
        [--steps 3] [--repeats 3] [--variants baseline,fast] [--json benchmarks/results/training_speed/training_speed.json]
    python benchmarks/training_speed.py --updates [--recipes ...]   # optimizer / EMA: per-tensor loop vs foreach

Each recipe's config (configs/...) is built as `cm-media train` builds it (small data renders where the full set
is not cached: the audio sets' `data.small`), once per variant; then the variants' steps are interleaved (repeat
r runs `--steps` steps of each variant in turn) so the shared machine's noise hits all of them alike. A step is
the training loop's step with its parts timed (exclusive times: data, encode, target, teacher, forward, loss,
backward, optim, ema; cm_media/eval/train_speed.py, which `cm-media bench --train CONFIG` also runs).

Variants (knobs of the step, applied the way training applies them):
    baseline  the loop as it was: bf16 autocast (every recipe said train.bf16: true), the per-tensor EMA loop
    fast      train.bf16=auto (float32 on a CPU without native bf16), the foreach EMA (the recipes' default now)
    fast_cl   fast with channels-last conv weights (activations follow them)
    fast_compile  fast with torch.compile of the backbone (its warm-up is the first step: `warmup_s`)
    fp32      only the precision change; foreach: only the foreach change (attribution)

FLOPs of one step (forward + backward + target + teacher passes) are counted with torch's FlopCounterMode at the
bench batch; GFLOP/s = FLOPs / median step time; the share is of the matmul peak measured in this process at the
same thread count in the precision the variant computes in (float32 1024^2, bf16 256^2: bf16 is so slow on an
AVX2 CPU that a large product takes minutes), once per repeat between the variants' steps (median), so it sees
the same machine load as the steps. The bench batch (--batch, default 4) is used for every variant so
the ratio compares equal work; `--recipe-batch` adds the fast variant at the recipe's own batch size.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cm_media.eval.train_speed import markdown, peak_gflops, record

RECIPES = {  # name -> (config, overrides for the bench)
    "spoken_digits": ("configs/audio/spoken_digits_ict.yaml", ["data.small=true"]),
    "notes": ("configs/audio/notes_ict.yaml", ["data.small=true"]),
    "moving_mnist_latent": ("configs/video/moving_mnist_latent_ict.yaml", []),
    "footage_latent": ("configs/video/footage_latent_ict.yaml", []),
    "fashion_mnist": ("configs/image/fashion_mnist_ict.yaml", []),
    # the bundled model's last stage (kd from a 3-step teacher); the bundled model stands in for teacher and init
    "sounding_digits": ("configs/av/sounding_digits_data_anneal.yaml", ["method.teacher=modalities/av/pretrained_sounding_digits",
                                                      "train.init_from=modalities/av/pretrained_sounding_digits"]),
}
VARIANTS = {
    "baseline": {"bf16": True, "foreach": False, "channels_last": False},
    "fp32": {"bf16": "auto", "foreach": False, "channels_last": False},
    "foreach": {"bf16": True, "foreach": True, "channels_last": False},
    "fast": {"bf16": "auto", "foreach": True, "channels_last": False},
    "fast_cl": {"bf16": "auto", "foreach": True, "channels_last": True},
    "fast_compile": {"bf16": "auto", "foreach": True, "channels_last": False, "compile": True},
}


def loop_ema(ema, model, decay):
    """The EMA as the loop did it before the foreach update (per-tensor lerp)."""
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def Trainer(cfg, knobs: dict, batch: int):
    """One recipe's training state under one variant (cm_media/eval/train_speed.py's StepBench with its knobs)."""
    from cm_media.eval.train_speed import Knobs, StepBench

    return StepBench(cfg, batch, Knobs(bf16=knobs["bf16"], ema_fn=None if knobs["foreach"] else loop_ema,
                                       channels_last=knobs["channels_last"], compile=knobs.get("compile", False)))


def bench_updates(name: str, threads: int, repeats: int) -> dict:
    """Milliseconds of the optimizer step and the EMA update of a recipe's network, per-tensor loop vs foreach,
    interleaved (median over `repeats`): the `--updates` table."""
    import torch

    from cm_media.runs import ema as ema_update
    from cm_media.runs.config import load_config
    from cm_media.runs.model import build_model
    from cm_media.runs.training import make_optimizer

    torch.set_num_threads(threads)
    config, sets = RECIPES[name]
    cfg = load_config(ROOT / config, sets)
    _, _, model = build_model(cfg)
    ema = copy.deepcopy(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    loop_opt = make_optimizer(model.parameters(), cfg.train)
    kind = torch.optim.RAdam if cfg.train.optimizer == "radam" else torch.optim.AdamW
    foreach_opt = kind(model.parameters(), lr=cfg.train.lr, foreach=True)
    fns = {"optimizer loop": loop_opt.step, "optimizer foreach": foreach_opt.step,
           "ema loop": lambda: loop_ema(ema, model, 0.99), "ema foreach": lambda: ema_update.update_ema(ema, model, 0.99)}
    times = defaultdict(list)
    for _ in range(repeats + 1):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    out = {"recipe": name, "threads": threads, "parameters": sum(p.numel() for p in model.parameters()),
           "tensors": len(list(model.parameters()))}
    out.update({k: 1000 * statistics.median(v[1:]) for k, v in times.items()})
    return out


def bench_recipe(name, threads, args) -> list[dict]:
    import torch

    from cm_media.runs.config import load_config

    torch.set_num_threads(threads)
    config, sets = RECIPES[name]
    cfg = load_config(ROOT / config, [*sets, *args.set])
    variants = [(v, args.batch) for v in args.variants]
    if args.recipe_batch and cfg.train.batch_size != args.batch:
        variants.append(("fast", cfg.train.batch_size))
    trainers = {}
    for v, b in variants:
        t0 = time.perf_counter()
        trainers[(v, b)] = Trainer(cfg, VARIANTS[v], b)
        print(f"  {name} {v} batch {b}: built in {time.perf_counter() - t0:.1f} s (bf16 {trainers[(v, b)].bf16})",
              flush=True)
    for tr in trainers.values():  # warm-up step (oneDNN primitive creation, first renders)
        tr.warm_up()
    rows, peak_rows = defaultdict(list), defaultdict(list)
    precisions = sorted({tr.bf16 for tr in trainers.values()})
    for r in range(args.repeats):  # interleaved: every variant's steps and the peaks inside each repeat
        for key, tr in trainers.items():
            rows[key] += tr.timed_steps(args.steps)
        for bf16 in precisions:
            peak_rows[bf16].append(peak_gflops(bf16))
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{v}@{b} {statistics.median(x['total'] for x in rows[(v, b)]):.2f} s" for v, b in trainers), flush=True)
    peaks = {bf16: statistics.median(v) for bf16, v in peak_rows.items()}
    out = [record(tr, rows[(v, b)], peaks[tr.bf16], recipe=name, config=config, variant=v, threads=threads)
           for (v, b), tr in trainers.items()]
    base = next((o for o in out if o["variant"] == "baseline"), None)
    for o in out:
        o["speedup"] = o["samples_per_s"] / base["samples_per_s"] if base else None
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated: " + ", ".join(RECIPES))
    p.add_argument("--threads", default="1", help="comma-separated torch thread counts (default 1)")
    p.add_argument("--variants", default="baseline,fast", help="comma-separated: " + ", ".join(VARIANTS))
    p.add_argument("--batch", type=int, default=4, help="bench batch size of every variant (default 4)")
    p.add_argument("--recipe-batch", action="store_true", help="also time fast at the recipe's own batch size")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant per repeat")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--set", action="append", default=[], help="extra config override for every recipe")
    p.add_argument("--json", default=None, help="write the records here")
    p.add_argument("--markdown", default=None, help="write the table here")
    p.add_argument("--updates", action="store_true",
                   help="only time the optimizer step and the EMA update, per-tensor loop vs foreach")
    args = p.parse_args(argv)
    args.variants = args.variants.split(",")
    for v in args.variants:
        if v not in VARIANTS:
            p.error(f"unknown variant {v!r} ({', '.join(VARIANTS)})")
    names = args.recipes.split(",")
    for n in names:
        if n not in RECIPES:
            p.error(f"unknown recipe {n!r} ({', '.join(RECIPES)})")
    if args.updates:
        for threads in [int(t) for t in args.threads.split(",")]:
            for name in names:
                print(json.dumps({k: round(v, 2) if isinstance(v, float) else v
                                  for k, v in bench_updates(name, threads, max(args.repeats, 5)).items()}), flush=True)
        return 0
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        for name in names:
            print(f"{name} at {threads} thread(s)", flush=True)
            try:
                results += bench_recipe(name, threads, args)
            except Exception as exc:  # one recipe that cannot be built here (missing data) does not stop the rest
                print(f"  {name}: skipped ({type(exc).__name__}: {exc})", flush=True)
            if args.json:
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(results, indent=1))
    table = markdown(results, baseline_column=True)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
