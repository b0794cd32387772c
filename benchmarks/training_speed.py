"""Training throughput of the real-content recipes: samples/s, counted FLOPs of a step, share of the matmul peak,
and where a step's time goes, for a baseline and the fast path side by side (issue 35).

    python benchmarks/training_speed.py [--recipes spoken_digits,notes,...] [--threads 1,2] [--batch 4]
        [--steps 3] [--repeats 3] [--variants baseline,fast] [--json benchmarks/results/training_speed/training_speed.json]
    python benchmarks/training_speed.py --updates [--recipes ...]   # optimizer / EMA: per-tensor loop vs foreach

Each recipe's config (configs/...) is built as `cm-media train` builds it (small data renders where the full set
is not cached: the audio sets' `data.small`), once per variant; then the variants' steps are interleaved (repeat
r runs `--steps` steps of each variant in turn) so the shared machine's noise hits all of them alike. A step is
the training loop's step, with its parts timed (exclusive times, seconds):

    data     draw the batch: rendering, reading, the modality's cheap encode (an STFT) where it is in get_batch
    encode   codec.encode (a learned codec's encoder on the model's device, or the dataset's STFT / pixel map)
    target   forwards without gradients (iCT's stop-grad target, kd's student edits)
    teacher  the frozen teacher's forwards (kd, CD)
    forward  the student's forward with gradients
    loss     the rest of method.loss (noise, sigmas, the distance)
    backward loss.backward() and the gradient clip
    optim    the optimizer step and the finite-weights check
    ema      the EMA update (and method.after_step)

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
PARTS = ("data", "encode", "target", "teacher", "forward", "loss", "backward", "optim", "ema")
VARIANTS = {
    "baseline": {"bf16": True, "foreach": False, "channels_last": False},
    "fp32": {"bf16": "auto", "foreach": False, "channels_last": False},
    "foreach": {"bf16": True, "foreach": True, "channels_last": False},
    "fast": {"bf16": "auto", "foreach": True, "channels_last": False},
    "fast_cl": {"bf16": "auto", "foreach": True, "channels_last": True},
    "fast_compile": {"bf16": "auto", "foreach": True, "channels_last": False, "compile": True},
}


class Timer:
    """Exclusive times of nested sections: a section's time excludes that of sections opened inside it."""

    def __init__(self):
        self.totals = defaultdict(float)
        self._stack: list[list] = []  # [name, start, child time]

    def start(self, name):
        self._stack.append([name, time.perf_counter(), 0.0])

    def stop(self):
        name, t0, inner = self._stack.pop()
        elapsed = time.perf_counter() - t0
        self.totals[name] += elapsed - inner
        if self._stack:
            self._stack[-1][2] += elapsed

    def section(self, name):
        timer = self

        class _Section:
            def __enter__(self):
                timer.start(name)

            def __exit__(self, *exc):
                timer.stop()

        return _Section()


def _hook_module(module, timer: Timer, label):
    """Time every call of `module` as label(grad_enabled) (an exclusive section)."""
    import torch

    def pre(mod, args, kwargs=None):
        timer.start(label(torch.is_grad_enabled()))

    def post(mod, args, *rest):
        timer.stop()

    module.register_forward_pre_hook(pre, with_kwargs=True)
    module.register_forward_hook(post, with_kwargs=True)


def _hook_encode(codec, timer: Timer):
    if codec is None or not hasattr(codec, "encode"):
        return
    inner = codec.encode

    def encode(*args, **kwargs):
        with timer.section("encode"):
            return inner(*args, **kwargs)

    codec.encode = encode


def loop_ema(ema, model, decay):
    """The EMA as the loop did it before the foreach update (per-tensor lerp)."""
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


class Trainer:
    """One recipe's training state under one variant, stepping as the training loop does, with timed parts."""

    def __init__(self, cfg, knobs: dict, batch: int):
        import torch

        from cm_media.conditions import derived_conditions, drop_conditions  # noqa: F401 (used in step)
        from cm_media.methods import METHODS, build_method
        from cm_media.runs import ema as ema_update
        from cm_media.runs import precision
        from cm_media.runs.generator import apply_speed_options
        from cm_media.runs.model import assemble
        from cm_media.runs.teacher import load_teacher
        from cm_media.runs.training import init_weights, make_optimizer

        self.knobs, self.batch = knobs, batch
        tc = cfg.train
        device = torch.device("cpu")
        self.timer = Timer()
        parts = assemble(cfg, split="train")  # the training loop's setup: one codec shared by data set and model
        cfg, self.dataset, self.codec, model = parts.cfg, parts.dataset, parts.codec, parts.model
        self.conditions = parts.conditions
        if isinstance(self.codec, torch.nn.Module):
            self.codec.eval().requires_grad_(False)
        self.encode_in_loop = getattr(self.dataset, "encoded", True) is False
        teacher = load_teacher(cfg, device)[0] if METHODS[cfg.method.name].wants_teacher(cfg.method) else None
        self.method = build_method(cfg.method, model, tc.steps, teacher, self.conditions)
        if tc.init_from:
            init_weights(model, tc.init_from)
        model.train()
        if knobs["channels_last"] or knobs.get("compile"):
            apply_speed_options(model, knobs["channels_last"], knobs.get("compile", False))
            if teacher is not None:
                apply_speed_options(teacher, knobs["channels_last"], knobs.get("compile", False))
        self.ema = copy.deepcopy(model).requires_grad_(False).eval()
        params = [*model.parameters(), *self.method.trainable_parameters()]
        self.opt = make_optimizer(params, tc)
        self.ema_fn = ema_update.update_ema if knobs["foreach"] else loop_ema
        self.bf16 = precision.resolve_bf16(knobs["bf16"], device)
        self.autocast = torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=self.bf16)
        self.model, self.teacher, self.cfg, self.tc = model, teacher, cfg, tc
        self.gen = torch.Generator().manual_seed(tc.seed)
        torch.manual_seed(tc.seed)
        _hook_module(model, self.timer, lambda grad: "forward" if grad else "target")
        if teacher is not None:
            _hook_module(teacher, self.timer, lambda grad: "teacher")
        _hook_encode(getattr(self.dataset, "codec", None), self.timer)
        if self.encode_in_loop and self.codec is not getattr(self.dataset, "codec", None):
            _hook_encode(self.codec, self.timer)
        self.step_index, self.losses = 0, []

    def step(self):
        """One training step (the loop's order); returns its loss."""
        import math

        import torch

        from cm_media.conditions import drop_conditions
        from cm_media.math.schedules import ema_warmup_decay
        from cm_media.runs import checkpoint as ckpt
        from cm_media.runs.training import lr_at

        t, tc, step = self.timer, self.tc, self.step_index
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, tc)
        with t.section("data"):
            x0, cond = self.draw()
            if self.conditions and tc.cond_dropout > 0:
                drop = torch.rand(self.batch, generator=self.gen) < tc.cond_dropout
                cond = drop_conditions(self.conditions, cond, drop)
        with t.section("loss"):
            with self.autocast:
                per_sample = self.method.loss(self.model, x0, step, self.gen, cond or None)
            loss = per_sample.float().mean()
        with t.section("backward"):
            self.opt.zero_grad(set_to_none=True)
            value = loss.item()
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        with t.section("optim"):
            if math.isfinite(value) and bool(torch.isfinite(grad_norm)):
                self.opt.step()
                ckpt.finite_norm([*self.model.parameters(), *self.method.trainable_parameters()])
        with t.section("ema"):
            self.ema_fn(self.ema, self.model, ema_warmup_decay(tc.ema_decay, step))
            self.method.after_step(self.model, step)
        self.step_index += 1
        self.losses.append(value)
        return value

    def draw(self):
        """One batch as the training step sees it: data (encoded when the codec runs in the loop) and conditions."""
        import torch

        from cm_media.conditions import derived_conditions
        from cm_media.runs.training import get_batch, get_cond

        idx = torch.randint(0, len(self.dataset), (self.batch,), generator=self.gen)
        x0 = get_batch(self.dataset, idx)
        if self.encode_in_loop:
            with torch.no_grad():
                x0 = self.codec.encode(x0)
        cond = get_cond(self.dataset, idx)
        cond.update(derived_conditions(self.conditions, x0))
        return x0, cond

    def timed_steps(self, n: int) -> list[dict]:
        """n steps, each as {part: seconds, 'total': seconds}."""
        out = []
        for _ in range(n):
            self.timer.totals.clear()
            t0 = time.perf_counter()
            self.step()
            total = time.perf_counter() - t0
            out.append({**{p: self.timer.totals.get(p, 0.0) for p in PARTS}, "total": total})
        return out

    def step_flops(self) -> int:
        """Counted FLOPs of one step's loss and backward (no optimizer step: the state is left as it was)."""

        from cm_media.eval.flops import count_flops

        state = self.gen.get_state()

        def run():
            x0, cond = self.draw()
            with self.autocast:
                loss = self.method.loss(self.model, x0, self.step_index, self.gen, cond or None).float().mean()
            loss.backward()
            self.model.zero_grad(set_to_none=True)

        flops = count_flops(run)
        self.gen.set_state(state)
        return flops


def peak(bf16: bool) -> float:
    import torch

    from cm_media.eval.flops import matmul_peak_gflops

    if bf16:
        return matmul_peak_gflops(torch.bfloat16, "cpu", 256, repeats=3, warmup=1)
    return matmul_peak_gflops(torch.float32, "cpu", 1024, repeats=5, warmup=2)


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


def summarize(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in (*PARTS, "total")}


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
        t0 = time.perf_counter()
        tr.timed_steps(1)
        tr.warmup_s = time.perf_counter() - t0
    rows, peak_rows = defaultdict(list), defaultdict(list)
    precisions = sorted({tr.bf16 for tr in trainers.values()})
    for r in range(args.repeats):  # interleaved: every variant's steps and the peaks inside each repeat
        for key, tr in trainers.items():
            rows[key] += tr.timed_steps(args.steps)
        for bf16 in precisions:
            peak_rows[bf16].append(peak(bf16))
        print(f"  repeat {r + 1}/{args.repeats}: " + ", ".join(
            f"{v}@{b} {statistics.median(x['total'] for x in rows[(v, b)]):.2f} s" for v, b in trainers), flush=True)
    peaks = {bf16: statistics.median(v) for bf16, v in peak_rows.items()}
    out = []
    for (v, b), tr in trainers.items():
        s = summarize(rows[(v, b)])
        flops = tr.step_flops()
        gflops = flops / s["total"] / 1e9
        out.append({
            "recipe": name, "config": config, "variant": v, "batch": b, "threads": threads, "bf16": tr.bf16,
            "samples_per_s": b / s["total"], "step_s": s["total"], "parts_s": {p: s[p] for p in PARTS},
            "step_gflop": flops / 1e9, "gflops": gflops, "peak_gflops": peaks[tr.bf16],
            "peak_share": gflops / peaks[tr.bf16], "warmup_s": tr.warmup_s, "steps_timed": len(rows[(v, b)]),
            "losses": tr.losses,
        })
    base = next((o for o in out if o["variant"] == "baseline"), None)
    for o in out:
        o["speedup"] = o["samples_per_s"] / base["samples_per_s"] if base else None
    return out


def markdown(results: list[dict]) -> str:
    head = ("| recipe | threads | variant | batch | bf16 | samples/s | x baseline | step GFLOP | GFLOP/s | peak | "
            "share | " + " | ".join(PARTS) + " |")
    lines = [head, "|" + "---|" * (11 + len(PARTS))]
    for o in results:
        parts = " | ".join(f"{o['parts_s'][p]:.3f}" for p in PARTS)
        speed = f"{o['speedup']:.2f}" if o["speedup"] else "-"
        lines.append(f"| {o['recipe']} | {o['threads']} | {o['variant']} | {o['batch']} | {'on' if o['bf16'] else 'off'}"
                     f" | {o['samples_per_s']:.2f} | {speed} | {o['step_gflop']:.1f} | {o['gflops']:.1f} | "
                     f"{o['peak_gflops']:.1f} | {o['peak_share']:.0%} | {parts} |")
    return "\n".join(lines)


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
    table = markdown(results)
    print(table)
    if args.markdown:
        Path(args.markdown).write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
