"""Shared by the benchmark scripts: the JSON rows file every script writes, and for the per-modality speed-quality
scripts, training the shipped config (full and brief) if needed, then the bench.

Each speed-quality script reproduces one README table: the shipped config trained for its full length and for a
brief run, benched at 1/2/4 steps next to real held-out data and decoded noise, written as JSON, Markdown and PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def write_json(path: str | Path, rows: list[dict]) -> None:
    """A script's result rows as indented JSON at `path` (its folder created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rows, indent=1) + "\n")


def parser(description: str, brief_steps: int) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", default=str(ROOT / "runs"), help="where the trained runs live (reused when present)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "speed_quality"), help="folder for the JSON/MD/PNG")
    p.add_argument("--train-steps", type=int, default=None, help="override the full run's train.steps")
    p.add_argument("--brief-steps", type=int, default=brief_steps, help="train.steps of the brief run")
    p.add_argument("--steps", default="1,2,4")
    p.add_argument("--teacher-steps", type=int, default=18)
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--num-samples", type=int, default=256)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--extra", nargs="*", default=[], help="more SOURCEs to bench alongside (runs, checkpoints)")
    return p


def ensure_run(config: Path, out: Path, overrides: list[str]) -> Path:
    """Train `config` into `out` unless it already holds a checkpoint; returns `out`."""
    from cm_media.runs import checkpoint as ckpt
    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    if ckpt.latest_checkpoint(out) is not None:
        print(f"reusing {out}")
        return out
    cfg = load_config(config, overrides)
    print(f"training {config.name} -> {out} ({cfg.train.steps} steps)", flush=True)
    t0 = time.perf_counter()
    train(cfg, out, progress=True)
    print(f"trained in {time.perf_counter() - t0:.0f} s", flush=True)
    return out


def run(modality: str, config_name: str, args: argparse.Namespace) -> list[dict]:
    """Train (full + brief) the shipped config, bench both with any --extra sources, write the three views."""
    import torch

    from cm_media.eval import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    config = ROOT / "configs" / modality / config_name  # a recipe, else an experiment's config
    if not config.is_file():
        config = ROOT / "configs" / "experiments" / modality / config_name
    if not config.is_file():
        sys.exit(f"error: shipped config {config} not found")
    runs = Path(args.runs)
    stem = config.stem
    full = ensure_run(config, runs / stem, [f"train.steps={args.train_steps}"] if args.train_steps else [])
    brief = ensure_run(config, runs / f"{stem}_brief{args.brief_steps}", [f"train.steps={args.brief_steps}"])
    opts = bench.BenchOptions(steps=bench.parse_steps(args.steps), teacher_steps=args.teacher_steps,
                              batch=args.batch, num_samples=args.num_samples, repeats=args.repeats,
                              device=args.device)
    records = bench.run_bench([str(full), str(brief), *args.extra], opts)
    out = Path(args.out)
    print(bench.to_markdown(records))
    for p in bench.write_outputs(records, out / f"{modality}.json", out / f"{modality}.md", out / f"{modality}.png"):
        print(f"wrote {os.path.relpath(p)}")
    return records
