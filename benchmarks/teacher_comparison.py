"""Teacher, distillation and tuning at equal training time: EDM teacher vs CT (iCT), CD and ECT students.

    python benchmarks/teacher_comparison.py digits [--budget-s 240] [--runs runs/compare]
    python benchmarks/teacher_comparison.py tones  [--budget-s 240]

1. Trains the EDM teacher (`<set>_edm.yaml`) unless its run exists, and scores it with EDM Heun at several
   step counts (its best is the reference a student can approach).
2. Measures each student method's seconds per training step (a short calibration run of each, same process,
   steps 10..30 of `metrics.jsonl`'s `elapsed_s`, so start-up and the teacher load are excluded), then trains
   iCT from scratch, CD and ECT for the same *training time* budget: steps = budget / seconds per step.
   Wall time is not used to stop runs, so another job on the CPU does not bias the comparison.
3. Scores each at 1 and 2 steps: FD / KID on the modality's hand-crafted features against held-out data, plus
   a task measure (digits: share of realistic samples by the SVM/nearest-neighbour check of
   digits_quality.py; tones: share of clips with a stable pitch, modalities/audio/pitch.py).
The teacher's own training time is reported beside the budget: ECT and CD start from it, iCT does not.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cm_media
from cm_media.eval.bench import BenchOptions, _decode, data_items, media_quality, reference_for
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import load_config
from cm_media.runs.training import train

ROOT = Path(__file__).resolve().parent.parent
SETS = {
    "digits": {"dir": "image", "prefix": "digits", "ct": "digits_ict.yaml"},
    "tones": {"dir": "audio", "prefix": "tones_spectrogram", "ct": "tones_spectrogram_ict.yaml"},
}


def config_path(name: str, kind: str) -> Path:
    s = SETS[name]
    file = s["ct"] if kind == "ict" else f"{s['prefix']}_{kind}.yaml"
    recipe = ROOT / "configs" / s["dir"] / file  # a recipe, else an experiment's config
    return recipe if recipe.is_file() else ROOT / "configs" / "experiments" / s["dir"] / file


def train_run(config: Path, out: Path, overrides: list[str]) -> float:
    """Train `out` to the end (resuming a stopped run); returns the training seconds from metrics.jsonl."""
    cfg = load_config(config, overrides)
    found = ckpt.step_checkpoints(out)
    if not found or found[-1][0] < cfg.train.steps:
        print(f"training {config.name} -> {out} ({cfg.train.steps} steps)", flush=True)
        train(cfg, out, resume=bool(found), progress=False)
        if ckpt.step_checkpoints(out)[-1][0] < cfg.train.steps:
            raise SystemExit(f"{out} stopped before step {cfg.train.steps}; rerun to continue")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return float(rows[-1]["elapsed_s"]) if rows else float("nan")


def seconds_per_step(config: Path, overrides: list[str], scratch: Path) -> float:
    """Training cost of one step of `config`: elapsed between logged steps 10 and 30 of a short run."""
    shutil.rmtree(scratch, ignore_errors=True)
    cfg = load_config(config, overrides + ["train.steps=30", "train.log_every=10", "train.checkpoint_every=1000",
                                           "train.samples=0"])
    train(cfg, scratch, progress=False)
    rows = {r["step"]: r["elapsed_s"] for r in map(json.loads, (scratch / "metrics.jsonl").read_text().splitlines())}
    shutil.rmtree(scratch, ignore_errors=True)
    return (rows[30] - rows[10]) / 20


PITCH_CLIPS = 64


class TaskScore:
    """The set's task measure of decoded samples: realistic digits; stable-pitch tones on the first `PITCH_CLIPS`
    clips (pYIN is slow); fashion_mnist: the share of class-conditional samples (`cond`: the classes in turn) that
    the shipped Fashion-MNIST net classifies as the class asked for; none (NaN) for moving_digits."""

    MEASURES = {"digits": "realistic share", "tones": "stable-pitch share", "fashion_mnist": "class accuracy",
                "moving_digits": "none"}

    def __init__(self, name: str):
        self.name, self.measure = name, self.MEASURES[name]
        if name == "digits":
            from digits_quality import Reference, classifier, score

            self.clf, self.ref, self.score = classifier(), Reference(), score

    def cond(self) -> dict | None:
        """The request every sample is generated with (None: unconditional)."""
        if self.name != "fashion_mnist":
            return None
        from modalities.image.fashion_mnist import CLASSES

        return {"class": CLASSES}  # cycles: sample i asks for class i % 10

    def __call__(self, media: torch.Tensor, gen, labels: torch.Tensor | None = None) -> float:
        if self.name == "digits":
            return self.score(self.clf, self.ref, media.reshape(len(media), -1).numpy())["realistic"]
        if self.name == "fashion_mnist":
            from modalities.image.features import classify

            labels = torch.arange(len(media)) % 10 if labels is None else labels
            return float((classify(media, gen.cfg).argmax(1) == labels).float().mean())
        if self.name == "moving_digits":
            return float("nan")
        from modalities.audio.pitch import stable_pitch_share

        return stable_pitch_share(media[:PITCH_CLIPS], gen.cfg.codec.sample_rate)[0]

    def real(self, gen, n: int) -> float:
        """The measure of real held-out data (fashion_mnist: the whole test file with its labels)."""
        if self.name == "fashion_mnist":
            from modalities.image.fashion_mnist import fashion_pixels

            x, y = fashion_pixels("eval")
            return self(x, gen, y)
        return self(_decode(gen, data_items(gen, "eval", n, 0), 64), gen)


def evaluate(run: Path, steps: list[int], n: int, task: TaskScore, opts: BenchOptions, refs: dict) -> list[dict]:
    gen = cm_media.load(run)
    key = gen.cfg.modality
    if key not in refs:
        refs[key] = reference_for(gen, opts, 64)
    rows = []
    for k in steps:
        t0 = time.perf_counter()
        media = gen.generate(n, steps=k, seed=1, cond=task.cond())
        gen_s = time.perf_counter() - t0
        q = media_quality(gen, refs[key], media)
        nfe = k if gen.is_consistency else 2 * k - 1
        rows.append({"run": run.name, "method": gen.cfg.method.name, "steps": k, "nfe": nfe,
                     "fd": q["fd"], "kid": q["kid"], **({"net_fd": q["net_fd"]} if "net_fd" in q else {}),
                     "task": task(media, gen), "generate_s": gen_s})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set", choices=sorted(SETS))
    ap.add_argument("--budget-s", type=float, default=240.0, help="training seconds for each student")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "compare"))
    ap.add_argument("--teacher-steps", default="4,8,12,18", help="EDM Heun step counts to score the teacher at")
    ap.add_argument("--n", type=int, default=512, help="samples per score")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "teacher_comparison"))
    ap.add_argument("--set-all", nargs="*", default=[], help="overrides for every run (e.g. train.threads=2)")
    args = ap.parse_args()
    runs = Path(args.runs) / args.set
    teacher = runs / "edm"
    teacher_s = train_run(config_path(args.set, "edm"), teacher, args.set_all)
    students = {"ict": [], "cd": [f"method.teacher={teacher}"], "ect": [f"method.teacher={teacher}"]}
    costs_file = runs / "seconds_per_step.json"  # measured once, so a rerun trains the same step counts
    costs = json.loads(costs_file.read_text()) if costs_file.is_file() else {}
    for kind, extra in students.items():
        if kind not in costs:
            costs[kind] = seconds_per_step(config_path(args.set, kind), args.set_all + extra, runs / f"_calib_{kind}")
            costs_file.write_text(json.dumps(costs))
        print(f"{kind}: {costs[kind]:.3f} s/step", flush=True)
    trained = {}
    for kind, extra in students.items():
        steps = max(50, math.floor(args.budget_s / costs[kind]))
        out = runs / f"{kind}_{int(args.budget_s)}s"
        # the curriculum and schedules see the budgeted step count, as a user training this long would set it;
        # ECT's stages shrink in proportion, so a short run still walks its whole t - r schedule
        cfg = load_config(config_path(args.set, kind), args.set_all + extra)
        scale = [f"method.stage_steps={max(1, round(cfg.method.stage_steps * steps / cfg.train.steps))}"] \
            if kind == "ect" else []
        trained[kind] = (out, steps, train_run(config_path(args.set, kind), out,
                                               args.set_all + extra + [f"train.steps={steps}"] + scale))
    task, opts, refs = TaskScore(args.set), BenchOptions(num_samples=args.n, progress=False), {}
    rows = evaluate(teacher, [int(s) for s in args.teacher_steps.split(",")], args.n, task, opts, refs)
    for kind, (out, steps, secs) in trained.items():
        for r in evaluate(out, [1, 2], args.n, task, opts, refs):
            r.update(train_steps=steps, s_per_step=costs[kind], train_s=secs)
            rows.append(r)
    gen = cm_media.load(teacher)
    train_part = _decode(gen, data_items(gen, "train", args.n, 0), 64)  # FD/KID: the held-out split is the reference
    ref_row = {"run": "real data (FD/KID: train split; task: held out)", "method": "-", "steps": 0, "nfe": 0,
               **{k: media_quality(gen, refs[gen.cfg.modality], train_part)[k] for k in ("fd", "kid")},
               "task": task.real(gen, args.n)}  # digits' realism is measured against train, so held-out data
    rows.append(ref_row)
    result = {"set": args.set, "budget_s": args.budget_s, "teacher_train_s": teacher_s, "costs_s_per_step": costs,
              "task_measure": task.measure, "rows": rows}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"teacher_comparison_{args.set}.json").write_text(json.dumps(result, indent=1))
    lines = [f"# Teacher, CD, ECT and iCT on {args.set} at equal training time ({args.budget_s:.0f} s each)", "",
             f"EDM teacher trained {teacher_s:.0f} s. Task measure: {result['task_measure']}.", "",
             "| model | steps | NFE | train steps | s/step | FD | KID x1e3 | task |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} ({r['method']}) | {r['steps']} | {r['nfe']} | {r.get('train_steps', '')} | "
                     f"{r.get('s_per_step', float('nan')):.3f} | {r['fd']:.3f} | {1e3 * r['kid']:.2f} | {r['task']:.3f} |")
    (out_dir / f"teacher_comparison_{args.set}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
