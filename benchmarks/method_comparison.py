"""Every one-step method at equal training compute: iCT, ECT, CD, MeanFlow, sCT, sCD and CMT against the EDM teacher.

    python benchmarks/method_comparison.py digits|fashion_mnist|tones|moving_digits [--budget-s 180] \
        [--teacher-train-steps 2000] [--runs runs/methods] [--set-all train.threads=1]

1. Trains the EDM teacher (`<set>_edm.yaml`, `--teacher-train-steps`) unless its run exists, and scores it with
   EDM Heun at several step counts (its best is the reference).
2. Measures each method's cost per training step as *CPU* seconds of this process (one torch thread): the
   difference between a 40-step and a 10-step run of its config (`--calib-steps`), so start-up, the teacher load and checkpoint
   writes cancel, and other jobs on the machine do not change the measure (wall time would). The costs are
   stored in `<runs>/<set>/cpu_s_per_step.json`, so a rerun trains the same step counts.
3. Trains every method for the same budget of CPU seconds: steps = budget / cost. Schedules that the configs
   give in steps are scaled to the run length, as a user training that long would set them: ECT's and CMT's
   stage length, CMT's mid-training length, sCM's tangent warm-up (iCT's curriculum already follows the run
   length).
4. Scores each at 1 and 2 steps: FD / KID on the hand-crafted features against the held-out split (fashion_mnist
   also FD on the shipped classifier's features, as `cm-media bench` reports it), and the task measure of
   teacher_comparison.TaskScore (digits: realistic share; fashion_mnist: class accuracy of class-conditional
   samples; tones: stable-pitch share; moving_digits: none). ECT, CD, sCD and CMT start from the teacher: the
   table gives its training time beside the budget, so a reader can count it or not.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from teacher_comparison import TaskScore, evaluate, train_run

import cm_media
from cm_media.eval.bench import BenchOptions, _decode, data_items, media_quality
from cm_media.runs.config import load_config
from cm_media.runs.training import train

ROOT = Path(__file__).resolve().parent.parent
SETS = {"digits": {"dir": "image", "prefix": "digits"}, "fashion_mnist": {"dir": "image", "prefix": "fashion_mnist"},
        "tones": {"dir": "audio", "prefix": "tones_spectrogram"}, "moving_digits": {"dir": "video", "prefix": "moving_digits"}}
# method -> (config suffix, needs the teacher)
METHODS = {
    "ict": ("ict", False), "meanflow": ("meanflow", False), "sct": ("sct", False),
    "cd": ("cd", True), "ect": ("ect", True), "scd": ("scd", True), "cmt": ("cmt", True),
}


def config_path(name: str, kind: str) -> Path:
    s = SETS[name]
    recipe = ROOT / "configs" / s["dir"] / f"{s['prefix']}_{kind}.yaml"  # a recipe, else an experiment's config
    return recipe if recipe.is_file() else ROOT / "configs" / "experiments" / s["dir"] / recipe.name


def cpu_seconds_per_step(config: Path, overrides: list[str], scratch: Path, calib: tuple[int, int] = (10, 40)) -> float:
    """CPU seconds of one training step: (a `calib[1]`-step run - a `calib[0]`-step run) / their difference."""
    costs = []
    for steps in calib:
        shutil.rmtree(scratch, ignore_errors=True)
        cfg = load_config(config, overrides + [f"train.steps={steps}", "train.log_every=10",
                                               "train.checkpoint_every=1000", "train.samples=0"])
        t0 = time.process_time()
        train(cfg, scratch, progress=False)
        costs.append(time.process_time() - t0)
    shutil.rmtree(scratch, ignore_errors=True)
    return (costs[1] - costs[0]) / (calib[1] - calib[0])


def scaled(kind: str, config: Path, overrides: list[str], steps: int) -> list[str]:
    """Overrides that fit the config's step-counted schedules to a run of `steps` steps."""
    cfg = load_config(config, overrides)
    ratio = steps / cfg.train.steps
    m = cfg.method
    out = []
    if kind in ("ect", "cmt"):
        out.append(f"method.stage_steps={max(1, round(m.stage_steps * ratio))}")
    if kind == "cmt":
        out.append(f"method.mid_steps={max(1, round(m.mid_steps * ratio))}")
    if kind in ("sct", "scd"):
        out.append(f"method.tangent_warmup={max(1, round(m.tangent_warmup * ratio))}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("set", choices=sorted(SETS))
    ap.add_argument("--budget-s", type=float, default=180.0, help="training CPU seconds for each method")
    ap.add_argument("--teacher-train-steps", type=int, default=2000)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "methods"))
    ap.add_argument("--teacher-steps", default="4,8,12,18", help="EDM Heun step counts to score the teacher at")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--calib-steps", default="10,40", help="the two run lengths whose difference gives the cost")
    ap.add_argument("--n", type=int, default=512, help="samples per score")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "method_comparison"))
    ap.add_argument("--set-all", nargs="*", default=[], help="overrides for every run (e.g. train.threads=1)")
    args = ap.parse_args()
    torch.set_num_threads(1)  # the costs are CPU seconds of one thread
    runs = Path(args.runs) / args.set
    runs.mkdir(parents=True, exist_ok=True)
    teacher = runs / "edm"
    teacher_cpu_file = runs / "teacher_cpu_s.json"  # written when this script trains the teacher
    t0 = time.process_time()
    teacher_wall = train_run(config_path(args.set, "edm"), teacher,
                             args.set_all + [f"train.steps={args.teacher_train_steps}"])
    if not teacher_cpu_file.is_file():
        teacher_cpu_file.write_text(json.dumps({"cpu_s": time.process_time() - t0, "wall_s": teacher_wall}))
    teacher_cost = json.loads(teacher_cpu_file.read_text())
    kinds = [k for k in args.methods.split(",") if k]
    calib = tuple(int(v) for v in args.calib_steps.split(","))
    extra = {k: [f"method.teacher={teacher}"] if METHODS[k][1] else [] for k in kinds}
    costs_file = runs / "cpu_s_per_step.json"
    costs = json.loads(costs_file.read_text()) if costs_file.is_file() else {}
    for kind in kinds:
        if kind not in costs:
            costs[kind] = cpu_seconds_per_step(config_path(args.set, METHODS[kind][0]), args.set_all + extra[kind],
                                               runs / f"_calib_{kind}", calib)
            costs_file.write_text(json.dumps(costs, indent=1))
        if kind == "cmt" and "cmt_post" not in costs:  # its ECT phase costs less than the mid-training phase
            costs["cmt_post"] = cpu_seconds_per_step(config_path(args.set, "cmt"), args.set_all + extra[kind] +
                                                     ["method.mid_steps=1"], runs / "_calib_cmt_post", calib)
            costs_file.write_text(json.dumps(costs, indent=1))
        print(f"{kind}: {costs[kind]:.3f} CPU s/step", flush=True)
    trained, per_step_of = {}, {}
    for kind in kinds:
        config = config_path(args.set, METHODS[kind][0])
        per_step = costs[kind]
        if kind == "cmt":  # the run's mean cost: a share mid_steps / steps of mid-training, the rest ECT
            cfg = load_config(config, args.set_all + extra[kind])
            share = cfg.method.mid_steps / cfg.train.steps
            per_step = share * costs["cmt"] + (1 - share) * costs["cmt_post"]
        steps = max(50, math.floor(args.budget_s / per_step))
        out = runs / f"{kind}_{int(args.budget_s)}s"
        sets = args.set_all + extra[kind] + [f"train.steps={steps}"]
        sets += scaled(kind, config, sets, steps)
        trained[kind] = (out, steps, train_run(config, out, sets))
        per_step_of[kind] = per_step
    task, opts, refs = TaskScore(args.set), BenchOptions(num_samples=args.n, progress=False), {}
    rows = evaluate(teacher, [int(s) for s in args.teacher_steps.split(",")], args.n, task, opts, refs)
    for r in rows:
        r.update(train_steps=args.teacher_train_steps)
    for kind, (out, steps, wall) in trained.items():
        for r in evaluate(out, [1, 2], args.n, task, opts, refs):
            r.update(kind=kind, train_steps=steps, cpu_s_per_step=per_step_of[kind], train_wall_s=wall,
                     needs_teacher=METHODS[kind][1])
            rows.append(r)
    gen = cm_media.load(teacher)
    train_part = _decode(gen, data_items(gen, "train", args.n, 0), 64)
    q = media_quality(gen, refs[gen.cfg.modality], train_part)
    rows.append({"run": "real data (FD/KID: train split; task: held out)", "method": "-", "steps": 0, "nfe": 0,
                 **{k: q[k] for k in ("fd", "kid", "net_fd") if k in q}, "task": task.real(gen, args.n)})
    result = {"set": args.set, "budget_cpu_s": args.budget_s, "teacher": teacher_cost,
              "teacher_train_steps": args.teacher_train_steps, "cpu_s_per_step": costs,
              "task_measure": task.measure, "rows": rows, "torch_threads": torch.get_num_threads()}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"method_comparison_{args.set}.json").write_text(json.dumps(result, indent=1))
    tcpu = teacher_cost["cpu_s"]
    fd = "net_fd" if "net_fd" in rows[0] else "fd"  # the headline FD: the classifier's features where there is one
    best = min(r[fd] for r in rows if r["method"] == "edm")
    lines = [f"# One-step methods on {args.set} at equal training compute ({args.budget_s:.0f} CPU s each)", "",
             f"EDM teacher: {args.teacher_train_steps} steps, {tcpu:.0f} CPU s. Methods marked * start from it "
             f"(their total: budget + {tcpu:.0f} s). x best: {fd} over the teacher's best. Task: {task.measure}.", "",
             f"| model | steps | NFE | train steps | CPU s/step | {'net FD | ' if fd == 'net_fd' else ''}FD | "
             f"x best | KID x1e3 | task |", "|---|---|---|---|---|---|---|---|---|" + ("---|" if fd == "net_fd" else "")]
    for r in rows:
        name = r["run"] + (" *" if r.get("needs_teacher") else "")
        cost = f"{r['cpu_s_per_step']:.3f}" if "cpu_s_per_step" in r else ""
        net = f"{r['net_fd']:.2f} | " if fd == "net_fd" else ""
        lines.append(f"| {name} ({r['method']}) | {r['steps']} | {r['nfe']} | {r.get('train_steps', '')} | {cost} | "
                     f"{net}{r['fd']:.3f} | {r[fd] / best:.2f} | {1e3 * r['kid']:.2f} | {r['task']:.3f} |")
    (out_dir / f"method_comparison_{args.set}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
