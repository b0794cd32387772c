"""benchmarks/speed_options.py on a one-step tiny digits run: every setting gets a row, a failing option (here a
torch.compile whose compiled backbone raises) is reported in the table instead of stopping the script."""

import importlib.util
import json

import torch
from torch import nn

from cm_media.runs.config import load_config
from cm_media.runs.training import train


def load_script(repo_root):
    spec = importlib.util.spec_from_file_location("speed_options", f"{repo_root}/benchmarks/speed_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BrokenCompile(nn.Module):
    def __init__(self, module):
        super().__init__()
        self.inner = module

    def forward(self, *args):
        raise RuntimeError("backend compiler failed\nwith a long traceback | and a pipe")


def test_speed_options_table_with_a_failing_compile(repo_root, digits_config, tmp_path, monkeypatch):
    sets = {"train.steps": 1, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000, "train.samples": 4, "sample.batch_size": 8}
    run = tmp_path / "tiny_run"
    train(load_config(digits_config, [f"{k}={v}" for k, v in sets.items()]), run, progress=False)
    script = load_script(repo_root)
    monkeypatch.setattr(torch, "compile", lambda module, **kw: BrokenCompile(module))
    out = tmp_path / "results"
    code = script.main([str(run), "--settings", "bf16,channels_last,compile", "--steps", "1,2", "--num-samples", "16",
                        "--repeats", "2", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "speed_options_tiny_run.json").read_text())
    rows = {(r["setting"], r["steps"]): r for r in result["rows"]}
    assert list(rows) == [(s, k) for s in ("float32", "bf16", "channels_last", "compile") for k in (1, 2)]
    for s in ("float32", "bf16", "channels_last"):
        for k in (1, 2):
            r = rows[(s, k)]
            assert r["error"] is None and r["latency_s"] > 0 and r["fd"] >= 0 and r["first_call_s"] > 0
            assert r["speedup_vs_float32"] > 0 and r["max_abs_diff"] >= 0
    assert rows[("float32", 1)]["max_abs_diff"] == 0 and rows[("float32", 1)]["quality_unchanged"] is True
    assert rows[("channels_last", 1)]["max_abs_diff"] < 1e-4  # same arithmetic, another memory layout
    assert rows[("channels_last", 1)]["channels_last_weights"] > 0
    for k in (1, 2):
        r = rows[("compile", k)]
        assert r["error"] == "RuntimeError: backend compiler failed" and r.get("latency_s") is None
    assert set(result["fastest_unchanged"]) == {"1", "2"}
    table = (out / "speed_options_tiny_run.md").read_text()
    lines = [ln for ln in table.splitlines() if ln.startswith("| ")]
    assert len(lines) == 1 + 8 and all(ln.count(" | ") == lines[0].count(" | ") for ln in lines)
    assert "error: RuntimeError: backend compiler failed" in table and "Fastest with unchanged quality" in table


def test_bf16_twin_matches_autocast_and_leaves_float32_sampling_alone(digits_config, tmp_path):
    """Generator.net(bf16=True) stores conv/linear weights in bf16 once; sampling through it equals autocast over the
    float32 model (same roundings), and a later float32 call still uses the untouched float32 model."""
    from cm_media.runs.generator import load

    sets = {"train.steps": 1, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000}
    run = tmp_path / "tiny_run"
    train(load_config(digits_config, [f"{k}={v}" for k, v in sets.items()]), run, progress=False)
    gen = load(run, device="cpu")
    for p in gen.model.parameters():  # a trained-looking model (the output layer starts at zero)
        p.data.add_(0.05 * torch.randn_like(p))
    fp32_before = gen.generate(4, steps=2, bf16=False)
    twin = gen.net(True)
    assert twin is not gen.model and gen.net(True) is twin and gen.net(False) is gen.model
    convs = [m for m in twin.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.dtype == torch.bfloat16 for m in convs)
    assert all(p.dtype == torch.float32 for p in gen.model.parameters())
    noise = torch.randn(4, *gen.modality.sample_shape(gen.cfg, gen.codec))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.allclose(twin(noise, torch.full((4,), 2.0)).float(), gen.model(noise, torch.full((4,), 2.0)).float(),
                              atol=2e-2)
    assert torch.equal(gen.generate(4, steps=2, bf16=False), fp32_before)
    assert gen.generate(4, steps=1, bf16=True).shape == fp32_before.shape
