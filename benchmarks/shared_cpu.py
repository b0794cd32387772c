"""Training and generation step time alone vs beside one busy process, with default threads and with fixed ones.

    python benchmarks/shared_cpu.py [--config configs/image/digits_ict.yaml] [--model image]
        [--train-steps 40] [--gen-calls 30] [--repeats 3] [--fixed-threads 2] [--settings default,fixed]
        [--set KEY=VALUE ...] [--out benchmarks/results/shared_cpu/shared_cpu.json]

Issue 19 ("shared CPUs"): torch's OpenMP threads spin, so on 2 cores beside one other busy process a 2-thread
training step ran ~22x slower; the command line now picks its thread count from the machine's load
(cm_media/threads.py). This script measures that, each number in a fresh process started the way `cm-media`
starts (the worker imports `cm_media.cli` with a `train` / `generate` command line, so the start-up policy runs
exactly as for the user):

- settings: `default` (no thread variables in the environment: the policy decides; for training with
  train.threads 0 its monitor may revise the count mid-run), `fixed` (OMP_NUM_THREADS=--fixed-threads, the
  old behaviour: torch's default of 2 threads on a 2-core machine), optionally `passive` (the fixed count with
  OMP_WAIT_POLICY=passive);
- scenarios: `alone`, and `busy` beside one spinning Python process (`SPINNER`, which ends itself when the driver
  is gone) started 0.5 s before the worker and stopped after it;
- training: `--train-steps` steps of `--config` (with `--set` overrides) via the training loop, step time = the
  median of per-step differences of metrics.jsonl's elapsed_s (1 ms resolution: use a config whose steps take
  tens of ms or more) after the first quarter of the steps;
- generation: `--gen-calls` timed one-step sampler calls (model space, the run's sample batch and bf16 defaults)
  of `--model` (a bundled name, run or checkpoint) after 2 untimed ones; the median.

Every (setting, scenario) pair runs once per repeat in rotating order; the reported time is the median over
`--repeats`. Ratios: busy / alone per setting (target: at most 1.5x with default settings) and default alone /
fixed alone (the cost on an idle machine; target at most 1.05x). Run it on an otherwise idle machine: the
background load measured at the start is recorded (`background_busy_cores`), and "alone" means only that.
Writes the JSON to --out and prints a Markdown summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the busy process: spins, and stops by itself once this driver is gone (killed drivers left spinners behind)
SPINNER = "import os\nparent = os.getppid()\ni = 0\nwhile i % 4000000 or os.getppid() == parent:\n    i += 1"
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "CM_MEDIA_THREADS", "CM_MEDIA_AUTO_THREADS")


# ---------------------------------------------------------------- the worker: one measurement in a fresh process


def _start_like_the_cli(command: str) -> dict:
    """Import the command line module with `command` as its command line: the start-up thread policy runs."""
    sys.argv = ["cm-media", command]
    import cm_media.cli  # noqa: F401  (applies cm_media.threads' policy)
    from cm_media import threads

    return dict(threads.APPLIED)


def worker_train(args) -> dict:
    applied = _start_like_the_cli("train")
    import torch

    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    start_threads = torch.get_num_threads()
    sets = [*args.set, f"train.steps={args.train_steps}", "train.log_every=1", "train.samples=0",
            f"train.checkpoint_every={10 * args.train_steps}"]
    cfg = load_config(args.config, sets)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, Path(tmp) / "run", progress=False)
        elapsed = [json.loads(line)["elapsed_s"] for line in (Path(tmp) / "run" / "metrics.jsonl").open()]
    steps = [b - a for a, b in zip(elapsed, elapsed[1:])]
    steps = steps[len(steps) // 4:]  # warm-up dropped
    return {"step_s": statistics.median(steps), "threads_start": start_threads, "threads_end": torch.get_num_threads(),
            "policy": applied}


def worker_generate(args) -> dict:
    applied = _start_like_the_cli("generate")
    import torch

    from cm_media.runs.generator import load

    gen = load(args.model, device="cpu")
    opts = gen.options()
    shape = gen.modality.sample_shape(gen.cfg, gen.codec)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((opts.batch_size, *shape), generator=g)
    times = []
    for i in range(args.gen_calls + 2):
        t0 = time.perf_counter()
        gen.sample(noise, 1, g, opts.bf16)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return {"step_s": statistics.median(times), "batch": opts.batch_size, "bf16": bool(opts.bf16),
            "threads_start": torch.get_num_threads(), "threads_end": torch.get_num_threads(), "policy": applied}


# ---------------------------------------------------------------- the driver


def _env(setting: str, fixed: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if setting in ("fixed", "passive"):
        env["OMP_NUM_THREADS"] = str(fixed)
    if setting == "passive":
        env["OMP_WAIT_POLICY"] = "passive"
    return env


def _measure(kind: str, setting: str, busy: bool, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", kind, "--config", args.config,
           "--model", args.model, "--train-steps", str(args.train_steps), "--gen-calls", str(args.gen_calls)]
    for s in args.set:
        cmd += ["--set", s]
    spinner = None
    if busy:
        spinner = subprocess.Popen([sys.executable, "-c", SPINNER])
        time.sleep(0.5)
    try:
        out = subprocess.run(cmd, env=_env(setting, args.fixed_threads), cwd=ROOT, capture_output=True, text=True,
                             timeout=args.timeout)
    finally:
        if spinner is not None:
            spinner.terminate()
            spinner.wait()
    if out.returncode != 0:
        raise SystemExit(f"worker {kind} {setting} busy={busy} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(a, b):
    return a / b if a and b else None


def run(args) -> dict:
    sys.path.insert(0, str(ROOT))
    from cm_media import threads

    background = threads.busy_cores(window=1.0)
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    pairs = [(s, busy) for s in settings for busy in (False, True)]
    raw: dict = {k: {f"{s} {'busy' if b else 'alone'}": [] for s, b in pairs} for k in args.kinds}
    for rep in range(args.repeats):
        order = pairs[rep % len(pairs):] + pairs[:rep % len(pairs)]  # rotate: drift hits every pair alike
        for kind in args.kinds:
            for setting, busy in order:
                r = _measure(kind, setting, busy, args)
                raw[kind][f"{setting} {'busy' if busy else 'alone'}"].append(r)
                print(f"[{rep + 1}/{args.repeats}] {kind:8s} {setting:8s} {'busy' if busy else 'alone':5s} "
                      f"{r['step_s'] * 1e3:9.2f} ms  threads {r['threads_start']}->{r['threads_end']}", flush=True)
    summary: dict = {}
    for kind, cells in raw.items():
        med = {name: statistics.median(r["step_s"] for r in rs) for name, rs in cells.items()}
        ratios = {f"{s} busy/alone": _ratio(med[f"{s} busy"], med[f"{s} alone"]) for s in settings}
        if "default" in settings and "fixed" in settings:
            ratios["default alone/fixed alone"] = _ratio(med["default alone"], med["fixed alone"])  # idle cost
            ratios["default busy/fixed alone"] = _ratio(med["default busy"], med["fixed alone"])
        summary[kind] = {"median_step_s": med, "ratios": ratios,
                         "threads": {name: [(r["threads_start"], r["threads_end"]) for r in rs]
                                     for name, rs in cells.items()}}
    return {"config": args.config, "model": args.model, "train_steps": args.train_steps, "gen_calls": args.gen_calls,
            "repeats": args.repeats, "fixed_threads": args.fixed_threads, "overrides": args.set,
            "cpus": len(threads.usable_cpus()), "usable_cores": threads.usable_cores(),
            "background_busy_cores": background, "summary": summary, "raw": raw,
            "targets": {"default busy/alone": "<= 1.5", "default alone/fixed alone": "<= 1.05"}}


def markdown(result: dict) -> str:
    lines = []
    for kind, s in result["summary"].items():
        lines += [f"{kind}: median step ms (threads start->end)", "", "| setting | alone | busy | busy/alone |",
                  "|---|---|---|---|"]
        settings = dict.fromkeys(name.split()[0] for name in s["median_step_s"])
        for st in settings:
            def cell(name):
                th = ", ".join(f"{a}->{b}" for a, b in s["threads"][name])
                return f"{s['median_step_s'][name] * 1e3:.1f} ({th})"
            ratio = s["ratios"][f"{st} busy/alone"]
            lines.append(f"| {st} | {cell(st + ' alone')} | {cell(st + ' busy')} | {ratio:.2f}x |")
        for name, v in s["ratios"].items():
            if "/fixed" in name and v is not None:
                lines.append(f"\n{name}: {v:.3f}x")
        lines.append("")
    lines.append(f"background load at start: {result['background_busy_cores']} busy cores of {result['cpus']}")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "configs" / "image" / "digits_ict.yaml"))
    p.add_argument("--model", default="image", help="bundled model name, run or checkpoint for generation")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides for training")
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--gen-calls", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--fixed-threads", type=int, default=2, help="the old fixed thread count (setting 'fixed')")
    p.add_argument("--settings", default="default,fixed", help="of default, fixed, passive")
    p.add_argument("--kinds", default="train,generate", help="of train, generate")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per worker process")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shared_cpu" / "shared_cpu.json"))
    p.add_argument("--worker", choices=["train", "generate"], default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        sys.path.insert(0, str(ROOT))
        print(json.dumps(worker_train(args) if args.worker == "train" else worker_generate(args)))
        return 0
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    result = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result), end="")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
