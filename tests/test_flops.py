"""FLOP counting and the matmul peak (cm_media/eval/flops.py), and their columns in `cm-media bench`."""

import math

import pytest
import torch

import cm_media
from cm_media.eval import bench
from cm_media.eval.flops import Peaks, count_flops, forward_flops, matmul_peak_gflops

pytestmark = pytest.mark.usefixtures("one_thread")


def test_linear_flops_are_2mnk():
    m, k, n = 6, 12, 5
    lin = torch.nn.Linear(k, n)
    assert forward_flops(lin, torch.randn(m, k)) == 2 * m * n * k
    assert count_flops(lambda: torch.randn(m, k) @ torch.randn(k, n)) == 2 * m * n * k


def test_conv2d_flops_are_2_per_multiply_add():
    b, cin, cout, h, w, kk = 2, 3, 8, 10, 12, 3
    conv = torch.nn.Conv2d(cin, cout, kk, padding=1)
    want = 2 * b * cout * h * w * cin * kk * kk  # output positions x multiply-adds per output
    assert forward_flops(conv, torch.randn(b, cin, h, w)) == want
    strided = torch.nn.Conv2d(cin, cout, kk, stride=2)  # 4 x 5 outputs
    assert forward_flops(strided, torch.randn(b, cin, h, w)) == 2 * b * cout * 4 * 5 * cin * kk * kk
    assert forward_flops(conv, torch.randn(b, cin, h, w), bf16=True) == want  # the count is by shape


def test_bundled_image_model_flops_scale_with_batch():
    gen = cm_media.load("image")
    backbone = gen.net(False).backbone
    shape = gen.modality.sample_shape(gen.cfg, gen.codec)

    def flops(batch):
        return forward_flops(backbone, torch.randn(batch, *shape), torch.zeros(batch))

    one, two = flops(2), flops(4)
    assert one > 0
    assert two == 2 * one


def test_matmul_peak_is_positive_on_a_small_size():
    for dtype in (torch.float32, torch.bfloat16):
        v = matmul_peak_gflops(dtype, "cpu", size=64, repeats=2, warmup=1)
        assert v > 0 and math.isfinite(v)
    peaks = Peaks(size=64, repeats=1)
    first = peaks.get("cpu", bf16=False)
    assert peaks.get("cpu", bf16=False) == first  # measured once
    assert set(peaks.values) == {("cpu", "fp32")}  # only what was asked for


def test_markdown_has_the_flop_columns_and_the_peak_header():
    row = {"model": "m", "sampler": "consistency", "nfe": 1, "latency_s": 0.01, "samples_per_s": 100.0,
           "backbone_forward_s": 0.005, "latency_per_forward": 2.0, "peak_memory_mib": 1.0, "fd": 1.0, "kid": 0.1,
           "kid_se": 0.01, "precision": 0.5, "recall": 0.5, "num_samples": 8, "reference_size": 8,
           "device": "cpu", "bf16": True, "forward_gflop": 1.5, "forward_gflops_per_s": 300.0, "peak_share": 0.15,
           "matmul_peak_gflops": 2000.0}
    base = {"model": "noise", "sampler": "baseline", "nfe": 0, "fd": 9.0, "kid": 1.0, "precision": 0.0,
            "recall": 0.0, "num_samples": 8, "reference_size": 8}
    table = bench.to_markdown([row, base])
    lines = table.strip().splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head[-3:] == ["fwd GFLOP", "fwd GFLOP/s (% peak)", "N gen / ref"]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[-3:-1] == ["1.5", "300 (15%)"]
    assert [c.strip() for c in lines[3].strip("|").split("|")][-3:-1] == ["-", "-"]
    top = bench.to_markdown([row, base], header=True)
    assert top.startswith("matmul peak") and "cpu bf16 2000 GFLOP/s" in top.splitlines()[0]
    assert top.endswith(table)


def test_run_bench_rows_carry_flops_rate_and_peak_share(tmp_path, digits_config, monkeypatch):
    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    sets = {"train.steps": 1, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000, "train.samples": 4, "sample.batch_size": 4}
    run = tmp_path / "cm"
    train(load_config(digits_config, [f"{k}={v}" for k, v in sets.items()]), run, progress=False)
    opts = bench.BenchOptions(steps=[1, 2], batch=4, num_samples=8, repeats=1, warmup=0, baselines=False,
                              progress=False, peak_size=128)
    counted = []
    monkeypatch.setattr(bench, "forward_flops", lambda *a, **k: counted.append(1) or forward_flops(*a, **k))
    records = bench.run_bench([str(run)], opts)
    assert len(records) == 2 and len(counted) == 1  # same model and batch at 1 and 2 steps: counted once
    for r in records:
        assert r["forward_gflop"] > 0 and r["forward_gflops_per_s"] > 0 and r["matmul_peak_gflops"] > 0
        assert r["forward_gflops_per_s"] == pytest.approx(r["forward_gflop"] / r["backbone_forward_s"])
        assert r["peak_share"] == pytest.approx(r["forward_gflops_per_s"] / r["matmul_peak_gflops"])
    assert records[0]["forward_gflop"] == records[1]["forward_gflop"]
    assert records[0]["matmul_peak_gflops"] == records[1]["matmul_peak_gflops"]  # measured once per run
    assert "fwd GFLOP/s (% peak)" in bench.to_markdown(records, header=True)
