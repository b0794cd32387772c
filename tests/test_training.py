import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import TrainConfig, load_config
from cm_media.runs.training import lr_at, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(digits_config, steps, **extra):
    sets = {"train.steps": steps, "train.batch_size": 16, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000}
    sets.update(extra)
    return load_config(digits_config, [f"{k}={v}" for k, v in sets.items()])


def losses_of(run):
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_lr_decay_anneals_from_lr_to_lr_min_after_the_warmup(decay):
    cfg = TrainConfig(steps=110, lr=1e-3, warmup_steps=10, lr_decay=decay, lr_min=1e-5)
    assert lr_at(0, cfg) == pytest.approx(1e-4)  # the warmup is unchanged
    assert lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3)  # the decay starts where the warmup ends
    assert lr_at(60, cfg) == pytest.approx((1e-3 + 1e-5) / 2)  # halfway, for both shapes
    quarter = 0.5 * (1 + math.cos(math.pi / 4)) if decay == "cosine" else 0.75
    assert lr_at(35, cfg) == pytest.approx(1e-5 + (1e-3 - 1e-5) * quarter)
    assert lr_at(110, cfg) == pytest.approx(1e-5) and lr_at(500, cfg) == pytest.approx(1e-5)  # held after the end
    rates = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(rates, rates[1:]))


def test_lr_without_decay_stays_constant_after_the_warmup():
    cfg = TrainConfig(steps=100, lr=2e-4, warmup_steps=4)
    assert [lr_at(s, cfg) for s in (0, 3, 4, 99, 1000)] == pytest.approx([5e-5, 2e-4, 2e-4, 2e-4, 2e-4])


def test_tiny_run_loss_falls(tmp_path, digits_config):
    """The stationary EDM objective must fall clearly within 40 tiny steps."""
    cfg = tiny_cfg(digits_config, 40, **{"method.name": "edm", "train.lr": 0.005})
    train(cfg, tmp_path / "run", progress=False)
    loss = losses_of(tmp_path / "run")
    assert len(loss) == 40 and all(map(math.isfinite, loss))
    assert sum(loss[-8:]) / 8 < 0.85 * sum(loss[:8]) / 8


@pytest.mark.parametrize("method", ["ict", "ct"])
def test_consistency_methods_train_and_log_curriculum(tmp_path, digits_config, method):
    cfg = tiny_cfg(digits_config, 6, **{"method.name": method, "method.s0": 2, "method.s1": 8})
    train(cfg, tmp_path / "run", progress=False)
    recs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4, 5, 6]
    assert all(math.isfinite(r["loss"]) for r in recs)
    assert recs[0]["num_steps"] <= recs[-1]["num_steps"]


def weights(path):
    tensors, meta = ckpt.load_checkpoint(path)
    return tensors, meta


def test_resume_reproduces_uninterrupted_run(tmp_path, digits_config):
    cfg = tiny_cfg(digits_config, 6, **{"train.checkpoint_every": 3, "backbone.dropout": 0.2, "method.name": "ct"})
    full = train(cfg, tmp_path / "full", progress=False)
    ref, meta = weights(full)
    assert meta["step"] == 6
    # simulate a run killed after step 3: keep only its step-3 checkpoint, then resume
    (tmp_path / "full" / "checkpoints" / full.name).unlink()
    again = train(cfg, tmp_path / "full", resume=True, progress=False)
    got, _ = weights(again)
    for key in ("model.", "ema.", "target.", "optim."):
        names = [k for k in ref if k.startswith(key)]
        assert names
        for k in names:
            assert torch.equal(ref[k], got[k]), k


def test_existing_run_needs_resume(tmp_path, digits_config):
    cfg = tiny_cfg(digits_config, 2)
    train(cfg, tmp_path / "r", progress=False)
    from cm_media.errors import UserError

    with pytest.raises(UserError, match="--resume"):
        train(cfg, tmp_path / "r", progress=False)


def test_nan_guard_stops_with_clear_error(tmp_path, digits_config, monkeypatch):
    from cm_media import methods
    from cm_media.runs.training import TrainingError

    monkeypatch.setattr(methods.ICT, "loss", lambda self, model, x0, step, gen, cond=None: torch.full((x0.shape[0],), float("nan")))
    cfg = tiny_cfg(digits_config, 50, **{"train.max_bad_steps": 3})
    with pytest.raises(TrainingError, match="non-finite"):
        train(cfg, tmp_path / "nan", progress=False)


def test_sigterm_checkpoints_and_resume_finishes(tmp_path, digits_config):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cm_media.cli", "train", digits_config, "--out", str(out), "--no-progress",
           "--set", "train.steps=100000", "--set", "backbone.preset=tiny", "--set", "train.batch_size=8",
           "--set", "train.checkpoint_every=100000"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.2)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130
    assert b"--resume" in proc.stdout.read()
    found = ckpt.step_checkpoints(out)
    assert len(found) == 1 and found[0][0] > 0
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    _, meta = ckpt.load_checkpoint(found[0][1])
    assert meta["step"] == found[0][0]
    # resume (extending the run to two more steps) finishes and writes samples
    target = found[0][0] + 2
    cmd = [c if c != "train.steps=100000" else f"train.steps={target}" for c in cmd] + ["--resume"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ckpt.step_checkpoints(out)[-1][0] == target
    assert (out / "samples" / "samples_1step.png").is_file()


def test_the_training_loop_reads_at_a_glance():
    """Issue 37: setup, step, checkpoint and logging are functions of their own; the loop stays short (ruff's
    C901 holds every function of the package to complexity 12)."""
    import inspect

    from cm_media.runs import training

    assert len(inspect.getsource(training._train).splitlines()) <= 60
    for part in ("setup", "train_step", "checkpoint", "TrainingLog"):
        assert part in inspect.getsource(training._train)
