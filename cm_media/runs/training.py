"""The training loop, one function for every modality and method.

Each step: draw a batch and noise from the loop's own generator, compute the method's per-sample loss
(bf16 autocast optional), skip non-finite steps, clip, step, update the EMA. Checkpoints hold weights, EMA,
method networks, optimizer and every RNG state, so `--resume` continues exactly where the run stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cm_media import files, threads
from cm_media.conditions import derived_conditions, drop_conditions
from cm_media.errors import UserError
from cm_media.math.schedules import ema_warmup_decay
from cm_media.methods import METHODS, build_method
from cm_media.registry import get_modality
from cm_media.runs import checkpoint as ckpt
from cm_media.runs import distributed, precision
from cm_media.runs.config import RunConfig, dump_config
from cm_media.runs.ema import update_ema
from cm_media.runs.loader import resolve_source, weights_of
from cm_media.runs.model import assemble, resolve_device, with_resolved_backbone
from cm_media.runs.teacher import load_teacher


class TrainingError(UserError):
    """Training cannot go on (too many non-finite losses)."""


def make_optimizer(params, cfg) -> torch.optim.Optimizer:
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_at(step: int, cfg) -> float:
    """Linear warmup to train.lr, then constant (the CM papers' schedule) or, with train.lr_decay, annealed to
    train.lr_min at train.steps: a last phase at a falling rate settles a fine-tune that has levelled off."""
    warm = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
    decay = cfg.lr_decay
    if decay == "none" or step < cfg.warmup_steps:
        return warm
    span = max(cfg.steps - cfg.warmup_steps, 1)
    frac = min(1.0, (step - cfg.warmup_steps) / span)  # 0 after the warmup, 1 at train.steps
    shape = 0.5 * (1 + math.cos(math.pi * frac)) if decay == "cosine" else 1 - frac
    return cfg.lr_min + (cfg.lr - cfg.lr_min) * shape


def get_batch(dataset, indices: torch.Tensor) -> torch.Tensor:
    """Items [B, C, *axes] of a dataset (model tensors, or media its codec encodes in the loop)."""
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(indices)
    return torch.stack([dataset[int(i)] for i in indices])


def frame_windows(clips: torch.Tensor, starts: torch.Tensor, frames: int) -> torch.Tensor:
    """Clip b's frames starts[b] .. starts[b] + frames - 1: [B, C, T, H, W] -> [B, C, frames, H, W]."""
    t = starts[:, None] + torch.arange(frames, device=clips.device)  # [B, frames]
    rows = torch.arange(clips.shape[0], device=clips.device)[:, None]
    return clips.transpose(1, 2)[rows, t].transpose(1, 2).contiguous()


def get_cond(dataset, indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """The conditions of a batch ({} for an unconditional dataset)."""
    return dataset.get_cond(indices) if getattr(dataset, "conditions", None) else {}


class _Stop:
    """SIGINT/SIGTERM stop the loop at the next step boundary, after a checkpoint; a second SIGINT aborts."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self._old = {}

    def _handle(self, signum, frame):
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        try:
            for sig in self.SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave the default handlers
            self._old = {}
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _rng_tensors(gen: torch.Generator) -> dict[str, torch.Tensor]:
    out = {"rng.torch": torch.get_rng_state(), "rng.loop": gen.get_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda{i}"] = s
    return out


def _restore_rng(tensors, gen: torch.Generator) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    gen.set_state(tensors["rng.loop"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def _widened_input(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor | None:
    """A weight whose input channels (dim 1) grew, all else equal: the old values on the leading channels and
    zeros on the new ones (a backbone given input channels appended after its old ones starts as the source)."""
    if old.ndim < 3 or old.ndim != new.ndim or new.shape[1] <= old.shape[1] or \
            old.shape[:1] + old.shape[2:] != new.shape[:1] + new.shape[2:]:
        return None
    out = torch.zeros_like(new)
    out[:, :old.shape[1]] = old.to(new.dtype)
    return out


def init_weights(model: torch.nn.Module, source: str) -> list[str]:
    """Load the EMA weights of `source` (train.init_from) into model; returns the names it lacked (kept fresh) and
    those given new input channels (zeros there: `_widened_input`)."""
    path = resolve_source(source)
    tensors, _ = ckpt.load_checkpoint(path)  # a UserError naming the file when it cannot be read
    state, own = weights_of(tensors), model.state_dict()
    widened = []
    for k in set(state) & set(own):
        if state[k].shape != own[k].shape and (wide := _widened_input(state[k], own[k])) is not None:
            state[k] = wide
            widened.append(k)
    unexpected = sorted(set(state) - set(own))
    misfit = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if unexpected or misfit:
        name = (unexpected or misfit)[0]
        raise UserError(f"train.init_from {source}: its weights do not fit this backbone ({len(unexpected)} unknown, "
                        f"{len(misfit)} of another shape, e.g. {name})")
    model.load_state_dict(state, strict=False)
    return sorted({k.rsplit(".", 1)[0] for k in set(own) - set(state)} | {f"{k} (new input channels)" for k in widened})


def fit_to_data(model: torch.nn.Module, dataset, codec, device, batch: int = 256, have: set[str] = frozenset()) -> None:
    """Modules with tables measured from the training data (`fit_to_data(batches)`, e.g. spec_unet's timbre table)
    see the whole training set once, as model tensors with their conditions, before training starts; a module whose
    tables are all in `have` (the weights train.init_from will load) is left to them."""
    fits = [m.fit_to_data for name, m in model.named_modules() if callable(getattr(m, "fit_to_data", None))
            and not _tables_in(m, name, have)]
    if not fits:
        return

    def batches():
        for start in range(0, len(dataset), batch):
            idx = torch.arange(start, min(start + batch, len(dataset)))
            x0 = get_batch(dataset, idx).to(device)
            if getattr(dataset, "encoded", True) is False:
                with torch.no_grad():
                    x0 = codec.encode(x0)
            yield x0, get_cond(dataset, idx)

    for fit in fits:
        fit(batches())


def _tables_in(module: torch.nn.Module, name: str, have: set[str]) -> bool:
    """Whether every persistent buffer of `module` (named `name` in its model) is among the weight names `have`."""
    keys = [k for k, _ in module.named_buffers(prefix=name, recurse=False)
            if k.rsplit(".", 1)[-1] not in module._non_persistent_buffers_set]
    return bool(keys) and all(k in have for k in keys)


def source_weight_names(source: str) -> set[str]:
    """The weight names a train.init_from source holds, from its file's header alone (init_weights loads the
    tensors later): the EMA weights, else the raw ones, as `weights_of` picks them."""
    shapes, _ = ckpt.read_header(resolve_source(source))
    return set(ckpt.prefixed(shapes, "ema") or ckpt.prefixed(shapes, "model"))


def save_training_state(run_dir, step, cfg, model, ema, codec, method, opt, gen, bad_steps, keep):
    tensors = {}
    tensors.update(ckpt.with_prefix(model.state_dict(), "model"))
    tensors.update(ckpt.with_prefix(ema.state_dict(), "ema"))
    if isinstance(codec, torch.nn.Module):  # a learned codec travels with the run, so generation needs nothing else
        tensors.update(ckpt.with_prefix(codec.state_dict(), "codec"))
    for name, module in method.state_modules().items():
        tensors.update(ckpt.with_prefix(module.state_dict(), name))
    opt_tensors, opt_meta = ckpt.optimizer_tensors(opt)
    tensors.update(ckpt.with_prefix(opt_tensors, "optim"))
    tensors.update(_rng_tensors(gen))
    meta = {"config": cfg.to_dict(), "step": step, "bad_steps": bad_steps, "optimizer": opt_meta}
    bad = ckpt.non_finite({k: v for k, v in tensors.items() if k.startswith(("model.", "ema."))})
    if bad:  # never written: the newest checkpoint on disk stays the last good state
        raise TrainingError(f"stopped at step {step}: non-finite weights ({bad[0]}); not writing a checkpoint of them")
    path = ckpt.checkpoint_path(run_dir, step)
    try:
        with files.writing(path):
            ckpt.save_checkpoint(path, tensors, meta)
    except ckpt.NoSpace as exc:  # the newest checkpoint on disk is untouched: --resume continues from it
        before = ckpt.latest_checkpoint(run_dir)
        kept = f"{before.name} is intact" if before else "no checkpoint was written yet"
        raise TrainingError(
            f"run folder {run_dir}: the disk is full; the checkpoint of step {step} needs "
            f"{ckpt.megabytes(exc.needed)} ({ckpt.megabytes(exc.free)} free); {kept}: free space and continue "
            "with --resume") from None
    for _, old in ckpt.step_checkpoints(run_dir)[:-keep]:  # only after the new one is safely written
        if old != path:
            old.unlink(missing_ok=True)
    return path


# what a resumed run must share with its checkpoint: anything else would silently train another model
def _resume_mismatch(saved: dict, cfg: RunConfig) -> str | None:
    def drop_cond(section):
        return {k: v for k, v in (section or {}).items() if k != "cond"}

    before_method = (saved.get("method") or {}).get("name")
    if before_method != cfg.method.name:
        return f"method.name was {before_method!r}, the config now says {cfg.method.name!r}"
    if (saved.get("train") or {}).get("optimizer") != cfg.train.optimizer:
        return f"train.optimizer was {(saved.get('train') or {}).get('optimizer')!r}, now {cfg.train.optimizer!r}"
    before, now = drop_cond(saved.get("backbone")), drop_cond(cfg.backbone)
    if before != now:
        keys = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
        changes = ", ".join(f"backbone.{k} {before.get(k)!r} -> {now.get(k)!r}" for k in keys[:3])
        return f"the backbone changed ({changes})"
    return None


def train(cfg: RunConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> Path:
    """Train `cfg` into `run_dir`; returns the last checkpoint's path. Under torchrun: data parallel, same result.

    The run folder is locked for the whole run (a second writer gets an error naming this process); temporary
    files of interrupted writes are removed first."""
    run_dir = Path(run_dir)
    if int(os.environ.get("RANK", "0")) != 0:  # rank 0 alone writes (and holds the lock)
        return _train(cfg, run_dir, resume, progress)
    files.output_folder(run_dir)
    with ckpt.RunLock(run_dir):
        ckpt.clean_temporary(run_dir)
        return _train(cfg, run_dir, resume, progress)


@dataclasses.dataclass
class Training:
    """Everything a run's loop reads and updates, built once by `setup`."""

    cfg: RunConfig
    run_dir: Path
    dd: distributed.Dist
    device: torch.device
    dataset: Any
    codec: Any
    conditions: list
    model: torch.nn.Module
    ema: torch.nn.Module
    method: Any
    opt: torch.optim.Optimizer
    gen: torch.Generator
    net: torch.nn.Module = None  # the model, or its DDP wrapper
    thread_monitor: Any = None
    step: int = 0
    bad_steps: int = 0
    last: Path | None = None  # the newest checkpoint written (or resumed from)
    grad_norm: Any = math.nan

    @property
    def local_batch(self) -> int:
        return self.cfg.train.batch_size // self.dd.world

    def shard(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's part of a tensor drawn for the global batch."""
        return t[self.dd.rank * self.local_batch: (self.dd.rank + 1) * self.local_batch]


def _train(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool) -> Path:
    run = setup(cfg, run_dir, resume, progress)
    tc = run.cfg.train
    if run.step >= tc.steps:
        return run.last
    log = TrainingLog(run, progress)
    try:
        with _Stop() as stop:
            while run.step < tc.steps:
                loss = train_step(run, stop)
                run.step += 1
                log.record(loss)
                if run.step % tc.checkpoint_every == 0 or run.step == tc.steps or stop.requested:
                    run.last = checkpoint(run)
                if stop.requested:
                    log.write(f"stopped at step {run.step}; checkpoint {run.last} (continue with --resume)")
                    break
    finally:
        log.close()
    return run.last


def setup(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool) -> Training:
    """Build a run once: the resumed state (if any), device and processes, data, codec, network, method,
    optimizer and EMA; writes the resolved config.yaml."""
    existing = ckpt.latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise UserError(f"run directory {run_dir} already has checkpoints; pass --resume or choose another --out")
    tc = cfg.train
    # train.threads N > 0: N threads; 0: the CLI's automatic choice, revised as other processes come and go
    thread_monitor = threads.training_monitor(tc.threads)
    modality = get_modality(cfg.modality)
    # store the preset's resolved arguments, so later preset edits cannot break this run's checkpoints
    cfg = with_resolved_backbone(cfg, modality)
    restored = _resumable(cfg, run_dir) if resume and existing is not None else None
    device, dd = _placement(tc)
    torch.manual_seed(tc.seed + dd.rank)  # dropout differs per rank; data and noise come from `gen`
    gen = torch.Generator().manual_seed(tc.seed)  # identical on every rank: global batch indices and noise
    # one codec for the data and the network; the conditions (the data's plus the method's) recorded in cfg
    parts = assemble(cfg, modality, split="train")
    cfg, dataset, codec, conditions, model = parts.cfg, parts.dataset, parts.codec, parts.conditions, parts.model
    if isinstance(codec, torch.nn.Module):
        codec.to(device).eval().requires_grad_(False)
    model.to(device).train()
    if restored is None:  # a resumed run has its tables in the checkpoint
        have = source_weight_names(tc.init_from) if tc.init_from else set()  # its tables come with the weights
        fit_to_data(model, dataset, codec, device, have=have)
    teacher = load_teacher(cfg, device)[0] if METHODS[cfg.method.name].wants_teacher(cfg.method) else None
    method = build_method(cfg.method, model, tc.steps, teacher, conditions)  # CD / ECT start from the teacher
    method.rank, method.world = dd.rank, dd.world
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    for module in method.state_modules().values():
        module.to(device)
    distributed.broadcast_(method.trainable_parameters(), dd)  # one initialization of sCM's weighting on every rank
    opt = make_optimizer([*model.parameters(), *method.trainable_parameters()], tc)  # + sCM's adaptive weight
    run = Training(cfg, run_dir, dd, device, dataset, codec, conditions, model, ema, method, opt, gen,
                   thread_monitor=thread_monitor, last=existing)
    if tc.init_from and restored is None:
        fresh = init_weights(model, tc.init_from)
        ema.load_state_dict(model.state_dict())
        if dd.main and progress:
            print(f"initialized from {tc.init_from}" + (f" (new: {', '.join(fresh)})" if fresh else ""))
    if restored is not None:
        restore(run, *restored)
    if dd.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with files.writing(run_dir / "config.yaml"):
            ckpt.atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    note = precision.slow_bf16_note(tc.bf16, device)
    if note and dd.main:  # on stderr even without a progress bar: it explains a many times slower run
        print(f"warning: {note}", file=sys.stderr)
    run.net = model
    if dd.enabled:
        run.net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return run


def _placement(tc) -> tuple[torch.device, distributed.Dist]:
    """The device and the process group (torchrun): one GPU per process, the batch split between them."""
    device = resolve_device(tc.device)
    dd = distributed.init_from_env(device.type)
    if dd.enabled and device.type == "cuda":
        device = torch.device("cuda", dd.local_rank)
        torch.cuda.set_device(device)
    if tc.batch_size % dd.world:
        raise UserError(f"train.batch_size {tc.batch_size} is not divisible by the {dd.world} processes")
    return device, dd


def _resumable(cfg: RunConfig, run_dir: Path):
    """(path, tensors, meta) of the newest checkpoint that loads and fits `cfg`; damaged newer ones are moved
    aside."""
    restored = ckpt.newest_intact(run_dir)
    if restored is None:
        raise UserError(f"no intact checkpoint in {run_dir / 'checkpoints'} to resume from (damaged ones were "
                        "renamed *.corrupt); start a new run with another --out")
    mismatch = _resume_mismatch(restored[2]["config"], cfg)
    if mismatch:
        raise UserError(f"cannot --resume {run_dir}: {mismatch}; resume with the run's own config "
                        f"({run_dir / 'config.yaml'}) or choose another --out")
    return restored


def restore(run: Training, path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Continue from a checkpoint: weights, EMA, method networks, optimizer, RNG states, step counters."""
    try:
        run.model.load_state_dict(ckpt.prefixed(tensors, "model"))
        run.ema.load_state_dict(ckpt.prefixed(tensors, "ema"))
        for name, module in run.method.state_modules().items():
            module.load_state_dict(ckpt.prefixed(tensors, name))
        ckpt.load_optimizer(run.opt, ckpt.prefixed(tensors, "optim"), meta["optimizer"])
        _restore_rng(tensors, run.gen)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise UserError(f"cannot --resume from {path}: it does not fit this config "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    run.step, run.bad_steps, run.last = meta["step"], meta["bad_steps"], path


def draw_batch(run: Training) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """This rank's share of a global batch: x0 [B, C, *axes] as model tensors, and its conditions (dropped for
    classifier-free guidance: all together at train.cond_dropout, each alone at train.cond_dropout_each)."""
    tc = run.cfg.train
    idx = run.shard(torch.randint(0, len(run.dataset), (tc.batch_size,), generator=run.gen))
    x0 = get_batch(run.dataset, idx).to(run.device, non_blocking=True)  # [B, C, *axes]
    if tc.clip_frames:  # before the codec: only the frames trained on are encoded
        starts = torch.randint(0, x0.shape[2] - tc.clip_frames + 1, (tc.batch_size,), generator=run.gen)
        x0 = frame_windows(x0, run.shard(starts).to(x0.device), tc.clip_frames)
    if getattr(run.dataset, "encoded", True) is False:  # media batches (a learned codec): encoded on the device
        with torch.no_grad():
            x0 = run.codec.encode(x0)
    cond = {k: v.to(run.device) for k, v in get_cond(run.dataset, idx).items()}
    cond.update(derived_conditions(run.conditions, x0))  # frame conditions: cut from each clean sample
    if run.conditions and tc.cond_dropout > 0:  # drawn for the global batch, like the indices
        drop = torch.rand(tc.batch_size, generator=run.gen) < tc.cond_dropout
        cond = drop_conditions(run.conditions, cond, run.shard(drop))
    if run.conditions and tc.cond_dropout_each > 0:  # each condition alone: guidance of one (sample.guide)
        for c in run.conditions:
            if c.name in cond and c.kind != "scalar":
                drop = torch.rand(tc.batch_size, generator=run.gen) < tc.cond_dropout_each
                cond = drop_conditions(run.conditions, cond, run.shard(drop), [c.name])
    return x0, cond


def train_step(run: Training, stop: _Stop) -> float | None:
    """One step of the method's loss: the global mean loss, or None for a skipped non-finite step."""
    tc = run.cfg.train
    if run.thread_monitor is not None:
        run.thread_monitor.step()
    for group in run.opt.param_groups:
        group["lr"] = lr_at(run.step, tc)
    x0, cond = draw_batch(run)
    with torch.autocast(device_type=run.device.type, dtype=torch.bfloat16,
                        enabled=precision.resolve_bf16(tc.bf16, run.device)):
        per_sample = run.method.loss(run.net, x0, run.step, run.gen, cond or None)  # [B]
    loss = per_sample.float().mean()
    run.opt.zero_grad(set_to_none=True)
    global_loss = _reduce_loss_and_stop(run, loss, stop)
    finite = math.isfinite(global_loss)
    if finite:
        loss.backward()
        finite = _clip_gradients(run)
    if not finite:  # a non-finite loss or gradient: skip the step, count it
        run.bad_steps += 1
        if run.bad_steps > tc.max_bad_steps:
            raise TrainingError(
                f"stopped at step {run.step}: {run.bad_steps} non-finite losses or gradients "
                f"(lower train.lr or enable train.bf16); last checkpoint: {run.last or 'none yet'}")
        return None
    run.opt.step()
    if not ckpt.finite_norm([*run.model.parameters(), *run.method.trainable_parameters()]):
        raise TrainingError(  # nothing of this step reaches a checkpoint
            f"stopped at step {run.step}: the optimizer step made weights non-finite (train.lr "
            f"{tc.lr:g} too high?); last good checkpoint: {run.last or 'none yet'}")
    update_ema(run.ema, run.model, ema_warmup_decay(tc.ema_decay, run.step))
    run.method.after_step(run.model, run.step)
    return global_loss


def _reduce_loss_and_stop(run: Training, loss: torch.Tensor, stop: _Stop) -> float:
    """One reduction carries the global loss (for the NaN guard and logs) and any rank's stop request."""
    dd = run.dd
    shared = torch.stack([loss.detach().float(), torch.tensor(float(stop.requested), device=loss.device)])
    if dd.enabled:
        shared = torch.stack([distributed.all_reduce_(shared[:1].clone(), "sum", dd)[0] / dd.world,
                              distributed.all_reduce_(shared[1:].clone(), "max", dd)[0]])
    global_loss, stop.requested = shared[0].item(), bool(shared[1].item())
    return global_loss


def _clip_gradients(run: Training) -> bool:
    """Reduce what DDP did not, clip to train.grad_clip; whether the gradient norm is finite (the same on every
    rank: gradients are reduced)."""
    if run.dd.enabled:  # what DDP's hooks did not reduce: the method's networks, a JVP's unwrapped model
        distributed.average_gradients(
            [*(run.model.parameters() if run.method.bypasses_ddp else ()), *run.method.trainable_parameters()],
            run.dd)
    run.grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.train.grad_clip)
    return bool(torch.isfinite(run.grad_norm))


def checkpoint(run: Training) -> Path:
    """Rank 0 writes the training state; the others wait so nobody runs ahead of a half-written state."""
    if run.dd.main:
        save_training_state(run.run_dir, run.step, run.cfg, run.model, run.ema, run.codec, run.method, run.opt,
                            run.gen, run.bad_steps, run.cfg.train.keep_checkpoints)
    distributed.barrier(run.dd)
    return ckpt.checkpoint_path(run.run_dir, run.step)


class TrainingLog:
    """metrics.jsonl (rank 0) every train.log_every steps, averaged over the window, and the progress bar."""

    def __init__(self, run: Training, progress: bool):
        self.run = run
        main = run.dd.main
        self.metrics = open(run.run_dir / "metrics.jsonl", "a") if main else None
        self.bar = tqdm(total=run.cfg.train.steps, initial=run.step, disable=not (progress and main), desc="train",
                        dynamic_ncols=True)
        self.t0, self.window, self.window_bad = time.perf_counter(), [], 0

    def record(self, loss: float | None) -> None:
        """After step `run.step`: a finite loss joins the window, None counts a skipped step."""
        run, tc = self.run, self.run.cfg.train
        if loss is None:
            self.window_bad += 1
        else:
            self.window.append(loss)
        self.bar.update(1)
        if self.metrics is None or not (run.step % tc.log_every == 0 or run.step == tc.steps):
            return
        gn = float(run.grad_norm)
        rec = {
            "step": run.step,
            # null when every step of the window had a non-finite loss (counted in nonfinite_steps)
            "loss": sum(self.window) / len(self.window) if self.window else None,
            "lr": run.opt.param_groups[0]["lr"],
            "grad_norm": gn if math.isfinite(gn) else None,
            "num_steps": run.method.num_steps(run.step - 1),
            "bad_steps": run.bad_steps,
            "nonfinite_steps": self.window_bad,
            "elapsed_s": round(time.perf_counter() - self.t0, 3),
            **run.method.log_values(),  # e.g. a codec run's reconstruction PSNR
        }
        with files.writing(run.run_dir / "metrics.jsonl"):
            self.metrics.write(json.dumps(rec) + "\n")
            self.metrics.flush()
        self.bar.set_postfix(loss="non-finite" if rec["loss"] is None else f"{rec['loss']:.4f}", N=rec["num_steps"])
        self.window, self.window_bad = [], 0

    def write(self, line: str) -> None:
        self.bar.write(line)

    def close(self) -> None:
        self.bar.close()
        if self.metrics is not None:
            self.metrics.close()
