"""Two gloo processes under torchrun reproduce a single-process run with the same global batch."""

import os
import subprocess
import sys

import torch

from cm_media.runs import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(out, nproc):
    sets = ["train.steps=4", "train.batch_size=8", "backbone.preset=tiny", "train.warmup_steps=1",
            "train.samples=2", "train.log_every=1", "train.device=cpu"]
    args = ["train", os.path.join(ROOT, "configs", "image", "digits_ict.yaml"), "--out", str(out), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    if nproc == 1:
        cmd = [sys.executable, "-m", "cm_media.cli", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "cm_media.cli", *args]
    env = dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return ckpt.load_checkpoint(ckpt.latest_checkpoint(out))


def test_two_process_gloo_matches_single_process(tmp_path):
    single, meta1 = _train(tmp_path / "single", 1)
    double, meta2 = _train(tmp_path / "ddp", 2)
    assert meta1["step"] == meta2["step"] == 4
    keys = [k for k in single if k.startswith(("model.", "ema."))]
    assert keys
    for k in keys:
        assert torch.allclose(single[k], double[k], atol=2e-5, rtol=1e-4), k
    # rank 0 alone wrote logs and samples
    lines = (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert (tmp_path / "ddp" / "samples" / "samples_1step.png").is_file()
