"""Runs that cannot mix or rot (issue 17): one writer per run folder, non-finite losses logged as such, no
checkpoint of non-finite weights, --resume from the newest intact checkpoint that fits the config."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from cm_media.cli import main
from cm_media.errors import UserError
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import load_config
from cm_media.runs.training import TrainingError, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_cfg(digits_config, steps, **extra):
    sets = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1, "train.keep_checkpoints": 2, "train.threads": 1}
    sets.update(extra)
    return load_config(digits_config, [f"{k}={v}" for k, v in sets.items()])


def one_error(capsys, *argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(lines) == 1, err
    return lines[0]


def test_second_writer_is_refused_with_the_holders_pid(capsys, tmp_path, digits_config):
    run = tmp_path / "run"
    run.mkdir()
    with ckpt.RunLock(run):  # a run in progress (flock'ed, as a live `cm-media train` holds it)
        line = one_error(capsys, "train", digits_config, "--out", run, "--no-progress", "--set", "backbone.preset=tiny")
        assert f"in use by process {os.getpid()}" in line
        with pytest.raises(UserError, match="in use"):
            train(tiny_cfg(digits_config, 1), run, resume=True, progress=False)
    assert not (run / ckpt.LOCK_NAME).exists()  # released


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path, digits_config):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    run = tmp_path / "run"
    run.mkdir()
    (run / ckpt.LOCK_NAME).write_text(dead.stdout)
    last = train(tiny_cfg(digits_config, 1), run, progress=False)
    assert last is not None and last.is_file()


def test_concurrent_train_processes_cannot_share_a_folder(capsys, tmp_path, digits_config):
    """A real second `cm-media train --resume` while the first runs: refused, naming the first one's PID."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cm_media.cli", "train", digits_config, "--out", str(out), "--no-progress",
           "--set", "train.steps=100000", "--set", "backbone.preset=tiny", "--set", "train.batch_size=4",
           "--set", "train.checkpoint_every=100000", "--set", "train.threads=1"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").exists():
            time.sleep(0.2)
        line = one_error(capsys, *cmd[3:], "--resume")
        assert f"process {proc.pid}" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_non_finite_losses_are_logged_as_null(tmp_path, digits_config, monkeypatch):
    from cm_media import methods

    real = methods.ICT.loss

    def flaky(self, model, x0, step, gen, cond=None):
        loss = real(self, model, x0, step, gen, cond)
        return loss * float("nan") if step in (1, 2) else loss

    monkeypatch.setattr(methods.ICT, "loss", flaky)
    train(tiny_cfg(digits_config, 4, **{"train.max_bad_steps": 5}), tmp_path / "run", progress=False)
    recs = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] is None for r in recs] == [False, True, True, False]
    assert [r["nonfinite_steps"] for r in recs] == [0, 1, 1, 0] and recs[-1]["bad_steps"] == 2
    for _, path in ckpt.step_checkpoints(tmp_path / "run"):
        assert not ckpt.non_finite(ckpt.load_checkpoint(path)[0])


def test_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path, digits_config):
    run = tmp_path / "run"
    train(tiny_cfg(digits_config, 3), run, progress=False)
    good = [p.name for _, p in ckpt.step_checkpoints(run)]
    assert good == ["step_00000002.safetensors", "step_00000003.safetensors"]
    with pytest.raises(TrainingError, match="non-finite"):  # an absurd learning rate: the first step's weights blow up
        train(tiny_cfg(digits_config, 6, **{"train.lr": "1.0e+38"}), run, resume=True, progress=False)
    assert [p.name for _, p in ckpt.step_checkpoints(run)] == good  # nothing written, nothing deleted
    for name in good:
        assert not ckpt.non_finite(ckpt.load_checkpoint(run / "checkpoints" / name)[0])


def test_no_checkpoint_of_non_finite_weights(tmp_path, digits_config):
    from cm_media.runs.training import save_training_state

    cfg = tiny_cfg(digits_config, 1)
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("inf")
    opt = torch.optim.RAdam(model.parameters())

    class NoMethod:
        def state_modules(self):
            return {}

    with pytest.raises(TrainingError, match="non-finite"):
        save_training_state(tmp_path, 1, cfg, model, model, None, NoMethod(), opt, torch.Generator(), 0, 2)
    assert ckpt.step_checkpoints(tmp_path) == []


def test_resume_falls_back_to_the_newest_intact_checkpoint(tmp_path, digits_config):
    """The newest checkpoint truncated by a crash: --resume starts from the one before, moves the damaged one aside,
    removes leftover temporary files, and ends with exactly the uninterrupted run's weights."""
    run = tmp_path / "run"
    cfg = tiny_cfg(digits_config, 4, **{"train.keep_checkpoints": 3})
    last = train(cfg, run, progress=False)
    ref = {k: v.clone() for k, v in ckpt.load_checkpoint(last)[0].items()}  # (loading maps the file)
    last.write_bytes(last.read_bytes()[:1000])  # truncated in place, as by a crash
    orphan = run / "checkpoints" / ".step_00000005.safetensors.abc.tmp"
    orphan.write_bytes(b"x" * 100)
    again = train(cfg, run, resume=True, progress=False)
    assert again == last and not orphan.exists()
    assert (run / "checkpoints" / (last.name + ".corrupt")).exists()
    got = ckpt.load_checkpoint(again)[0]
    for k in ref:
        if k.startswith(("model.", "ema.", "optim.")):
            assert torch.equal(ref[k], got[k]), k


@pytest.mark.parametrize("setting,needle", [("method.name=ct", "method.name"), ("backbone.channels=8", "backbone"),
                                            ("train.optimizer=adamw", "train.optimizer")])
def test_resume_refuses_another_method_backbone_or_optimizer(capsys, tmp_path, digits_config, setting, needle):
    run = tmp_path / "run"
    train(tiny_cfg(digits_config, 1), run, progress=False)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    line = one_error(capsys, "train", digits_config, "--out", run, "--resume", "--no-progress",
                     "--set", "backbone.preset=tiny", "--set", "train.steps=3", "--set", "train.batch_size=8",
                     "--set", setting)
    assert needle in line and "--resume" in line
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


def test_full_disk_during_a_checkpoint_is_one_error_and_resume_continues(capsys, tmp_path, digits_config, monkeypatch):
    """The disk fills while step 2's checkpoint is written (safetensors raises its own error type): one `error:` line
    naming the run folder and the size needed; with keep_checkpoints 1 step 1's checkpoint is intact, no temporary
    file is left, and --resume ends with the uninterrupted run's weights."""
    from safetensors import SafetensorError

    real = ckpt.save_file
    calls = []

    def fills_up(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:  # a partial file, then the error a 50 MB filesystem gave
            with open(filename, "wb") as f:
                f.write(b"\0" * 1000)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real(tensors, filename, metadata=metadata)

    run, ref = tmp_path / "run", tmp_path / "ref"
    sets = ["--no-progress", "--set", "backbone.preset=tiny", "--set", "train.steps=3", "--set", "train.batch_size=8",
            "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=1", "--set", "train.samples=0",
            "--set", "train.threads=1"]
    monkeypatch.setattr(ckpt, "save_file", fills_up)
    line = one_error(capsys, "train", digits_config, "--out", run, *sets)
    assert str(run) in line and "disk is full" in line and "MB" in line and "--resume" in line
    needed = float(re.search(r"needs ([\d.]+) MB", line).group(1))  # the space needed: about a checkpoint's size
    assert abs(needed - (run / "checkpoints" / "step_00000001.safetensors").stat().st_size / 1e6) < 0.15
    assert [p.name for _, p in ckpt.step_checkpoints(run)] == ["step_00000001.safetensors"]
    assert not list(run.rglob("*.tmp"))
    monkeypatch.setattr(ckpt, "save_file", real)  # space freed
    assert main(["train", digits_config, "--out", str(run), "--resume", *sets]) == 0
    assert main(["train", digits_config, "--out", str(ref), *sets]) == 0
    got, want = (ckpt.load_checkpoint(ckpt.latest_checkpoint(r))[0] for r in (run, ref))
    assert [p.name for _, p in ckpt.step_checkpoints(run)] == ["step_00000003.safetensors"]
    for k in want:
        if k.startswith(("model.", "ema.")):
            assert torch.equal(want[k], got[k]), k
