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
import time
from pathlib import Path

import torch
from tqdm import tqdm

from cm_media import files, threads
from cm_media.conditions import derived_conditions, drop_conditions
from cm_media.errors import UserError
from cm_media.math.schedules import ema_warmup_decay
from cm_media.methods import METHODS, build_method
from cm_media.nn import resolve_backbone
from cm_media.registry import get_modality
from cm_media.runs import checkpoint as ckpt
from cm_media.runs import distributed, precision
from cm_media.runs.config import RunConfig, dump_config
from cm_media.runs.ema import update_ema
from cm_media.runs.loader import resolve_source, weights_of
from cm_media.runs.model import build_model, resolve_device, run_conditions
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


def get_cond(dataset, indices: torch.Tensor) -> dict[str, torch.Tensor]:
    """The conditions of a batch ({} for an unconditional dataset)."""
    return dataset.get_cond(indices) if getattr(dataset, "conditions", None) else {}


def with_conditions(cfg: RunConfig, dataset) -> RunConfig:
    """The config with the network's conditions recorded in `backbone.cond`: the dataset's (those named by
    `data.cond`) plus the method's extra inputs, so the network can be rebuilt from the run alone."""
    spec = [c.to_dict() for c in getattr(dataset, "conditions", None) or []]
    spec += [c.to_dict() for c in METHODS[cfg.method.name].extra_conditions(cfg.method)]
    return dataclasses.replace(cfg, backbone={**cfg.backbone, "cond": spec})


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


def init_weights(model: torch.nn.Module, source: str) -> list[str]:
    """Load the EMA weights of `source` (train.init_from) into model; returns the names it lacked (kept fresh)."""
    path = resolve_source(source)
    tensors, _ = ckpt.load_checkpoint(path)  # a UserError naming the file when it cannot be read
    state, own = weights_of(tensors), model.state_dict()
    unexpected = sorted(set(state) - set(own))
    misfit = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if unexpected or misfit:
        name = (unexpected or misfit)[0]
        raise UserError(f"train.init_from {source}: its weights do not fit this backbone ({len(unexpected)} unknown, "
                        f"{len(misfit)} of another shape, e.g. {name})")
    model.load_state_dict(state, strict=False)
    return sorted({k.rsplit(".", 1)[0] for k in set(own) - set(state)})


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
    with files.writing(path):
        ckpt.save_checkpoint(path, tensors, meta)
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


def _train(cfg: RunConfig, run_dir: Path, resume: bool, progress: bool) -> Path:
    existing = ckpt.latest_checkpoint(run_dir)
    if existing is not None and not resume:
        raise UserError(f"run directory {run_dir} already has checkpoints; pass --resume or choose another --out")
    tc = cfg.train
    # train.threads N > 0: N threads; 0: the CLI's automatic choice, revised as other processes come and go
    thread_monitor = threads.training_monitor(tc.threads)
    # store the preset's resolved arguments, so later preset edits cannot break this run's checkpoints
    cfg = dataclasses.replace(cfg, backbone=resolve_backbone(cfg.backbone, get_modality(cfg.modality).backbone_presets))
    restored = None
    if resume and existing is not None:  # the newest checkpoint that loads; damaged newer ones are moved aside
        restored = ckpt.newest_intact(run_dir)
        if restored is None:
            raise UserError(f"no intact checkpoint in {run_dir / 'checkpoints'} to resume from (damaged ones were "
                            "renamed *.corrupt); start a new run with another --out")
        existing = restored[0]
        mismatch = _resume_mismatch(restored[2]["config"], cfg)
        if mismatch:
            raise UserError(f"cannot --resume {run_dir}: {mismatch}; resume with the run's own config "
                            f"({run_dir / 'config.yaml'}) or choose another --out")
    device = resolve_device(tc.device)
    dd = distributed.init_from_env(device.type)
    if dd.enabled and device.type == "cuda":
        device = torch.device("cuda", dd.local_rank)
        torch.cuda.set_device(device)
    if tc.batch_size % dd.world:
        raise UserError(f"train.batch_size {tc.batch_size} is not divisible by the {dd.world} processes")
    local_batch = tc.batch_size // dd.world
    torch.manual_seed(tc.seed + dd.rank)  # dropout differs per rank; data and noise come from `gen`
    gen = torch.Generator().manual_seed(tc.seed)  # identical on every rank: global batch indices and noise
    modality = get_modality(cfg.modality)
    dataset = modality.build_dataset(cfg, modality.build_codec(cfg), "train")
    if len(dataset) == 0:
        raise UserError("the training dataset is empty")
    cfg = with_conditions(cfg, dataset)
    conditions = run_conditions(cfg)
    modality, codec, model = build_model(cfg)
    if isinstance(codec, torch.nn.Module):
        codec.to(device).eval().requires_grad_(False)
    encode_in_loop = getattr(dataset, "encoded", True) is False  # media batches, encoded on the device below
    model.to(device).train()
    teacher = load_teacher(cfg, device)[0] if METHODS[cfg.method.name].wants_teacher(cfg.method) else None
    method = build_method(cfg.method, model, tc.steps, teacher, conditions)  # CD / ECT start from the teacher
    method.rank, method.world = dd.rank, dd.world
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    for module in method.state_modules().values():
        module.to(device)
    distributed.broadcast_(method.trainable_parameters(), dd)  # one initialization of sCM's weighting on every rank
    opt = make_optimizer([*model.parameters(), *method.trainable_parameters()], tc)  # + sCM's adaptive weight
    start, bad_steps = 0, 0
    if tc.init_from and restored is None:
        fresh = init_weights(model, tc.init_from)
        ema.load_state_dict(model.state_dict())
        if dd.main and progress:
            print(f"initialized from {tc.init_from}" + (f" (new: {', '.join(fresh)})" if fresh else ""))
    if restored is not None:
        _, tensors, meta = restored
        try:
            model.load_state_dict(ckpt.prefixed(tensors, "model"))
            ema.load_state_dict(ckpt.prefixed(tensors, "ema"))
            for name, module in method.state_modules().items():
                module.load_state_dict(ckpt.prefixed(tensors, name))
            ckpt.load_optimizer(opt, ckpt.prefixed(tensors, "optim"), meta["optimizer"])
            _restore_rng(tensors, gen)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(f"cannot --resume from {existing}: it does not fit this config "
                            f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
        start, bad_steps = meta["step"], meta["bad_steps"]
        del tensors, restored
    if dd.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        with files.writing(run_dir / "config.yaml"):
            ckpt.atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    last = existing
    if start >= tc.steps:
        return last
    net = model
    if dd.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    note = precision.slow_bf16_note(tc.bf16, device)
    if note and dd.main and progress:
        print(f"warning: {note}")
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                              enabled=precision.resolve_bf16(tc.bf16, device))
    metrics = open(run_dir / "metrics.jsonl", "a") if dd.main else None
    bar = tqdm(total=tc.steps, initial=start, disable=not (progress and dd.main), desc="train", dynamic_ncols=True)
    t0, window, window_bad = time.perf_counter(), [], 0
    step, grad_norm = start, math.nan

    def checkpoint():  # rank 0 writes; the others wait so nobody runs ahead of a half-written state
        if dd.main:
            save_training_state(run_dir, step, cfg, model, ema, codec, method, opt, gen, bad_steps, tc.keep_checkpoints)
        distributed.barrier(dd)
        return ckpt.checkpoint_path(run_dir, step)

    try:
        with _Stop() as stop:
            while step < tc.steps:
                if thread_monitor is not None:
                    thread_monitor.step()
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, tc)
                idx = torch.randint(0, len(dataset), (tc.batch_size,), generator=gen)
                idx = idx[dd.rank * local_batch: (dd.rank + 1) * local_batch]  # this rank's shard of the global batch
                x0 = get_batch(dataset, idx).to(device, non_blocking=True)  # [B, C, *axes]
                if encode_in_loop:
                    with torch.no_grad():
                        x0 = codec.encode(x0)
                cond = {k: v.to(device) for k, v in get_cond(dataset, idx).items()}
                cond.update(derived_conditions(conditions, x0))  # frame conditions: cut from each clean sample
                if conditions and tc.cond_dropout > 0:  # drawn for the global batch, like the indices
                    drop = torch.rand(tc.batch_size, generator=gen) < tc.cond_dropout
                    cond = drop_conditions(conditions, cond, drop[dd.rank * local_batch: (dd.rank + 1) * local_batch])
                with autocast:
                    per_sample = method.loss(net, x0, step, gen, cond or None)  # [B]
                loss = per_sample.float().mean()
                opt.zero_grad(set_to_none=True)
                # one reduction carries the global loss (for the NaN guard and logs) and any stop request
                shared = torch.stack([loss.detach().float(), torch.tensor(float(stop.requested), device=loss.device)])
                if dd.enabled:
                    shared = torch.stack([distributed.all_reduce_(shared[:1].clone(), "sum", dd)[0] / dd.world,
                                          distributed.all_reduce_(shared[1:].clone(), "max", dd)[0]])
                global_loss, stop.requested = shared[0].item(), bool(shared[1].item())
                finite = math.isfinite(global_loss)
                if finite:
                    loss.backward()
                    if dd.enabled:  # what DDP's hooks did not reduce: the method's networks, a JVP's unwrapped model
                        distributed.average_gradients(
                            [*(model.parameters() if method.bypasses_ddp else ()), *method.trainable_parameters()], dd)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
                    finite = bool(torch.isfinite(grad_norm))  # the same on every rank: gradients are reduced
                if not finite:  # a non-finite loss or gradient: skip the step, count it
                    bad_steps += 1
                    window_bad += 1
                    if bad_steps > tc.max_bad_steps:
                        raise TrainingError(
                            f"stopped at step {step}: {bad_steps} non-finite losses or gradients "
                            f"(lower train.lr or enable train.bf16); last checkpoint: {last or 'none yet'}")
                else:
                    opt.step()
                    if not ckpt.finite_norm([*model.parameters(), *method.trainable_parameters()]):
                        raise TrainingError(  # nothing of this step reaches a checkpoint
                            f"stopped at step {step}: the optimizer step made weights non-finite (train.lr "
                            f"{tc.lr:g} too high?); last good checkpoint: {last or 'none yet'}")
                    update_ema(ema, model, ema_warmup_decay(tc.ema_decay, step))
                    method.after_step(model, step)
                    window.append(global_loss)
                step += 1
                bar.update(1)
                if metrics is not None and (step % tc.log_every == 0 or step == tc.steps):
                    gn = float(grad_norm)
                    rec = {
                        "step": step,
                        # null when every step of the window had a non-finite loss (counted in nonfinite_steps)
                        "loss": sum(window) / len(window) if window else None,
                        "lr": opt.param_groups[0]["lr"],
                        "grad_norm": gn if math.isfinite(gn) else None,
                        "num_steps": method.num_steps(step - 1),
                        "bad_steps": bad_steps,
                        "nonfinite_steps": window_bad,
                        "elapsed_s": round(time.perf_counter() - t0, 3),
                        **method.log_values(),  # e.g. a codec run's reconstruction PSNR
                    }
                    with files.writing(run_dir / "metrics.jsonl"):
                        metrics.write(json.dumps(rec) + "\n")
                        metrics.flush()
                    bar.set_postfix(loss="non-finite" if rec["loss"] is None else f"{rec['loss']:.4f}",
                                    N=rec["num_steps"])
                    window, window_bad = [], 0
                if step % tc.checkpoint_every == 0 or step == tc.steps or stop.requested:
                    last = checkpoint()
                if stop.requested:
                    bar.write(f"stopped at step {step}; checkpoint {last} (continue with --resume)")
                    break
    finally:
        bar.close()
        if metrics is not None:
            metrics.close()
    return last
