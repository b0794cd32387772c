"""Training throughput of a recipe (`cm-media bench --train`, benchmarks/training_speed.py): samples/s, the counted
FLOPs of one step, their share of the measured matmul peak, and where the step's time goes.

A `StepBench` builds the recipe as `cm-media train` does (runs.model.assemble) and steps as the training loop
does, with exclusive timers around its parts:

    data     draw the batch: rendering, reading, the modality's cheap encode where it is in get_batch
    encode   codec.encode (a learned codec's encoder, or the dataset's STFT / pixel map)
    target   forwards of the student without gradients (iCT's stop-grad target, kd's student edits)
    teacher  the frozen teacher's forwards (kd, CD)
    forward  the student's forward with gradients
    loss     the rest of method.loss (noise, sigmas, the distance)
    backward loss.backward() and the gradient clip
    optim    the optimizer step and the finite-weights check
    ema      the EMA update (and method.after_step)
"""

from __future__ import annotations

import copy
import dataclasses
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch

PARTS = ("data", "encode", "target", "teacher", "forward", "loss", "backward", "optim", "ema")


class Timer:
    """Exclusive times of nested sections: a section's time excludes that of sections opened inside it."""

    def __init__(self):
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[list] = []  # [name, start, child time]

    def start(self, name: str) -> None:
        self._stack.append([name, time.perf_counter(), 0.0])

    def stop(self) -> None:
        name, t0, inner = self._stack.pop()
        elapsed = time.perf_counter() - t0
        self.totals[name] += elapsed - inner
        if self._stack:
            self._stack[-1][2] += elapsed

    def section(self, name: str):
        timer = self

        class _Section:
            def __enter__(self):
                timer.start(name)

            def __exit__(self, *exc):
                timer.stop()

        return _Section()


def _hook_module(module: torch.nn.Module, timer: Timer, label: Callable[[bool], str]) -> None:
    """Time every call of `module` as label(grad_enabled) (an exclusive section)."""
    module.register_forward_pre_hook(lambda mod, args, kwargs=None: timer.start(label(torch.is_grad_enabled())),
                                     with_kwargs=True)
    module.register_forward_hook(lambda mod, args, *rest: timer.stop(), with_kwargs=True)


def _hook_encode(codec, timer: Timer) -> None:
    if codec is None or not hasattr(codec, "encode"):
        return
    inner = codec.encode

    def encode(*args, **kwargs):
        with timer.section("encode"):
            return inner(*args, **kwargs)

    codec.encode = encode


@dataclass
class Knobs:
    """How the step runs: `bf16` as train.bf16 (True, False or "auto"), the EMA update function (None: the
    training loop's foreach update), channels-last weights and torch.compile of the backbone."""

    bf16: bool | str | None = None  # None: the config's train.bf16
    ema_fn: Callable | None = None
    channels_last: bool = False
    compile: bool = False


class StepBench:
    """One recipe's training state, stepping as the training loop does, with timed parts (CPU or one device)."""

    def __init__(self, cfg, batch: int | None = None, knobs: Knobs | None = None, device: str = "cpu"):
        from cm_media.methods import METHODS, build_method
        from cm_media.runs import ema as ema_update
        from cm_media.runs import precision
        from cm_media.runs.generator import apply_speed_options
        from cm_media.runs.model import assemble
        from cm_media.runs.teacher import load_teacher
        from cm_media.runs.training import init_weights, make_optimizer

        knobs = knobs or Knobs()
        self.device = torch.device(device)
        self.timer = Timer()
        if batch:  # the batch the training loop's draw_batch reads
            cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=int(batch)))
        torch.manual_seed(cfg.train.seed)  # as training's setup: the same initial weights
        parts = assemble(cfg, split="train")  # the training loop's setup: one codec shared by data set and model
        cfg, self.dataset, self.codec, model = parts.cfg, parts.dataset, parts.codec, parts.model
        tc = cfg.train
        self.batch = tc.batch_size
        self.conditions = parts.conditions
        model = model.to(self.device)
        if isinstance(self.codec, torch.nn.Module):
            self.codec.to(self.device).eval().requires_grad_(False)
        self.encode_in_loop = getattr(self.dataset, "encoded", True) is False
        wants = METHODS[cfg.method.name].wants_teacher(cfg.method)
        teacher = load_teacher(cfg, self.device)[0] if wants else None
        self.method = build_method(cfg.method, model, tc.steps, teacher, self.conditions)
        if tc.init_from:
            init_weights(model, tc.init_from)
        model.train()
        if knobs.channels_last or knobs.compile:
            for net in (model, teacher):
                if net is not None:
                    apply_speed_options(net, knobs.channels_last, knobs.compile)
        self.ema = copy.deepcopy(model).requires_grad_(False).eval()
        self.opt = make_optimizer([*model.parameters(), *self.method.trainable_parameters()], tc)
        self.ema_fn = knobs.ema_fn or ema_update.update_ema
        self.bf16 = precision.resolve_bf16(tc.bf16 if knobs.bf16 is None else knobs.bf16, self.device)
        self.model, self.teacher, self.cfg, self.tc = model, teacher, cfg, tc
        self.gen = torch.Generator().manual_seed(tc.seed)
        _hook_module(model, self.timer, lambda grad: "forward" if grad else "target")
        if teacher is not None:
            _hook_module(teacher, self.timer, lambda grad: "teacher")
        _hook_encode(getattr(self.dataset, "codec", None), self.timer)
        if self.encode_in_loop and self.codec is not getattr(self.dataset, "codec", None):
            _hook_encode(self.codec, self.timer)
        self.step_index, self.losses, self.warmup_s = 0, [], 0.0

    def autocast(self):
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """One process: the whole global batch (what the training loop's draw_batch asks of a run)."""
        return t

    def step(self) -> float:
        """One training step (the loop's order); returns its loss."""
        from cm_media.math.schedules import ema_warmup_decay
        from cm_media.runs import checkpoint as ckpt
        from cm_media.runs.training import draw_batch, lr_at

        t, tc, step = self.timer, self.tc, self.step_index
        for group in self.opt.param_groups:
            group["lr"] = lr_at(step, tc)
        with t.section("data"):
            x0, cond = draw_batch(self)  # the loop's own draw: indices, encode, conditions and their dropout
        with t.section("loss"):
            with self.autocast():
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
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.step_index += 1
        self.losses.append(value)
        return value

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

    def warm_up(self) -> None:
        """One untimed step (oneDNN primitive creation, first renders, compilation): `warmup_s`."""
        t0 = time.perf_counter()
        self.timed_steps(1)
        self.warmup_s = time.perf_counter() - t0

    def step_flops(self) -> int:
        """Counted FLOPs of one step's loss and backward (no optimizer step: the state is left as it was)."""
        from cm_media.eval.flops import count_flops
        from cm_media.runs.training import draw_batch

        state = self.gen.get_state()

        def run():
            x0, cond = draw_batch(self)
            with self.autocast():
                loss = self.method.loss(self.model, x0, self.step_index, self.gen, cond or None).float().mean()
            loss.backward()
            self.model.zero_grad(set_to_none=True)

        flops = count_flops(run)
        self.gen.set_state(state)
        return flops


def peak_gflops(bf16: bool, device: str = "cpu") -> float:
    """The matmul peak a step's share is taken of, in the precision the step computes in (bf16 at 256^2 on a
    CPU: where it is emulated a large product takes minutes)."""
    from cm_media.eval.flops import matmul_peak_gflops

    if torch.device(device).type == "cuda":
        return matmul_peak_gflops(torch.bfloat16 if bf16 else torch.float32, device)
    if bf16:
        return matmul_peak_gflops(torch.bfloat16, "cpu", 256, repeats=3, warmup=1)
    return matmul_peak_gflops(torch.float32, "cpu", 1024, repeats=5, warmup=2)


def medians(rows: list[dict]) -> dict:
    """Per-part and total medians of timed steps."""
    return {k: statistics.median(r[k] for r in rows) for k in (*PARTS, "total")}


def record(bench: StepBench, rows: list[dict], peak: float, **extra) -> dict:
    """One table row: samples/s, counted GFLOP of a step, achieved GFLOP/s and its share of `peak`, parts."""
    s = medians(rows)
    flops = bench.step_flops()
    gflops = flops / s["total"] / 1e9
    return {**extra, "batch": bench.batch, "bf16": bench.bf16, "samples_per_s": bench.batch / s["total"],
            "step_s": s["total"], "parts_s": {p: s[p] for p in PARTS}, "step_gflop": flops / 1e9,
            "gflops": gflops, "peak_gflops": peak, "peak_share": gflops / peak, "warmup_s": bench.warmup_s,
            "steps_timed": len(rows), "losses": list(bench.losses)}


def measure(cfg, name: str, batch: int | None = None, steps: int = 2, repeats: int = 3, device: str = "cpu") -> dict:
    """A recipe as `cm-media train` runs it: one warm-up step, then `repeats` x `steps` timed steps, the matmul
    peak measured once per repeat between them (so it sees the same machine load), medians."""
    bench = StepBench(cfg, batch, device=device)
    bench.warm_up()
    rows, peaks = [], []
    for _ in range(max(repeats, 1)):
        rows += bench.timed_steps(max(steps, 1))
        peaks.append(peak_gflops(bench.bf16, device))
    return record(bench, rows, statistics.median(peaks), recipe=name, threads=torch.get_num_threads())


def markdown(results: list[dict], baseline_column: bool = False) -> str:
    """The throughput table (one row per record)."""
    head = "| recipe | threads | " + ("variant | " if baseline_column else "") + "batch | bf16 | samples/s | " + \
        ("x baseline | " if baseline_column else "") + "step GFLOP | GFLOP/s | peak | share | " + " | ".join(PARTS) + " |"
    cols = 9 + len(PARTS) + (2 if baseline_column else 0)
    lines = [head, "|" + "---|" * cols]
    for o in results:
        parts = " | ".join(f"{o['parts_s'][p]:.3f}" for p in PARTS)
        variant = f"{o.get('variant', '-')} | " if baseline_column else ""
        speed = (f"{o['speedup']:.2f} | " if o.get("speedup") else "- | ") if baseline_column else ""
        lines.append(f"| {o['recipe']} | {o['threads']} | {variant}{o['batch']} | {'on' if o['bf16'] else 'off'} | "
                     f"{o['samples_per_s']:.2f} | {speed}{o['step_gflop']:.1f} | {o['gflops']:.1f} | "
                     f"{o['peak_gflops']:.1f} | {o['peak_share']:.0%} | {parts} |")
    return "\n".join(lines) + "\n"
