"""`cm-media bench` on tiny image runs: records, their JSON/Markdown/plot views, EDM teacher rows, user errors."""

import json
import math

import pytest
import torch

from cm_media.cli import main
from cm_media.eval import bench
from cm_media.runs.config import load_config
from cm_media.runs.training import train


def _run(tmp_path, digits_config, name, method):
    sets = {"train.steps": 1, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000, "train.samples": 4,
            "method.name": method, "sample.batch_size": 8}
    cfg = load_config(digits_config, [f"{k}={v}" for k, v in sets.items()])
    out = tmp_path / name
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import os

    cfg = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "image",
                       "digits_ict.yaml")
    tmp = tmp_path_factory.mktemp("bench_runs")
    return _run(tmp, cfg, "cm", "ict"), _run(tmp, cfg, "teacher", "edm")


def test_bench_cli_writes_consistent_json_markdown_and_plot(runs, tmp_path, capsys):
    cm, teacher = runs
    js, md, png = tmp_path / "r.json", tmp_path / "r.md", tmp_path / "r.png"
    code = main(["bench", str(cm), str(teacher), "--steps", "1,2", "--teacher-steps", "2", "--batch", "4",
                 "--num-samples", "32", "--repeats", "2", "--no-progress",
                 "--json", str(js), "--markdown", str(md), "--plot", str(png)])
    assert code == 0
    records = json.loads(js.read_text())
    rows = [(r["model"], r["sampler"], r["steps"], r["nfe"]) for r in records]
    assert rows == [("cm", "consistency", 1, 1), ("cm", "consistency", 2, 2), ("teacher", "edm-heun", 2, 3),
                    ("data (train split)", "baseline", 0, 0), ("noise", "baseline", 0, 0)]
    for r in records[:3]:
        assert r["batch"] == 4 and r["num_samples"] == 32 and r["reference_size"] == 180
        assert r["latency_s"] > 0 and r["backbone_forward_s"] > 0 and r["samples_per_s"] > 0
        assert r["samples_per_s"] == pytest.approx(4 / (r["latency_s"] + r["decode_s"]))
        assert r["latency_per_forward"] == pytest.approx(r["latency_s"] / (r["nfe"] * r["backbone_forward_s"]))
        assert r["sample_shape"] == [1, 8, 8] and r["params"] > 0
    for r in records:
        assert r["fd"] >= 0 and 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
        assert "net_fd" in r  # the shipped digits feature net applies to the digits data
    # the real-data row scores better than decoded noise on every distance
    data, noise = records[3], records[4]
    assert data["fd"] < noise["fd"] and data["kid"] < noise["kid"] and data["net_fd"] < noise["net_fd"]
    assert data["precision"] > noise["precision"]
    # the Markdown file is the printed table, one row per record, with the same numbers
    table = md.read_text()
    assert table in capsys.readouterr().out
    lines = table.strip().splitlines()
    assert len(lines) == 2 + len(records)
    for line, r in zip(lines[2:], records):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == r["model"] and cells[2] == str(r["nfe"])
        assert float(cells[8]) == pytest.approx(r["fd"], rel=1e-2)
        assert cells[-1] == f"{r['num_samples']} / {r['reference_size']}"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_records_json_has_no_nan(runs, tmp_path):
    recs = [{"model": "m", "kid_se": float("nan"), "fd": 1.0}]
    bench.write_outputs(recs, json_path=tmp_path / "x.json")
    assert json.loads((tmp_path / "x.json").read_text()) == [{"model": "m", "kid_se": None, "fd": 1.0}]


def test_run_bench_checkpoint_file_label_and_media_rates(runs):
    cm, _ = runs
    ckpt_file = max((cm / "checkpoints").glob("*.safetensors"))
    opts = bench.BenchOptions(steps=[1], batch=2, num_samples=8, repeats=1, warmup=0, baselines=False,
                              progress=False)
    (rec,) = bench.run_bench([str(ckpt_file)], opts)
    assert rec["model"] == f"cm@{ckpt_file.stem}" and rec["num_samples"] == 8
    assert "real_time_factor" not in rec and "frames_per_s" not in rec  # images have neither


def test_media_rates_for_audio_and_video():
    class G:
        class cfg:
            modality = "audio"

            class codec:
                sample_rate = 100

    audio = torch.zeros(4, 1, 50)  # 4 clips of 0.5 s
    assert bench._media_rates(G, audio, 0.5)["real_time_factor"] == pytest.approx(0.5 / 2.0)
    G.cfg.modality = "video"
    video = torch.zeros(2, 3, 8, 4, 4)  # 16 frames in all
    assert bench._media_rates(G, video, 0.25)["frames_per_s"] == pytest.approx(64.0)


def test_peak_memory_sees_a_large_allocation():
    mib, method, out = bench.peak_memory(lambda: torch.ones(64 * 2**20 // 4).sum(), torch.device("cpu"))
    assert out == 64 * 2**20 // 4
    if mib is None:
        pytest.skip("no peak-RSS counter on this system")
    assert method.startswith("rss") and mib > 40


def test_peak_memory_is_not_hidden_by_earlier_garbage_freed_inside():
    """Cyclic garbage of earlier work (256 MiB) that the collector frees while fn runs must not pull RSS below the
    baseline and hide fn's own 64 MiB peak (peak_memory collects first)."""
    import gc

    junk = [torch.ones(256 * 2**20 // 4)]
    junk.append(junk)  # a reference cycle: only the cyclic collector frees it
    del junk

    def fn():
        gc.collect()
        return torch.ones(64 * 2**20 // 4).sum()

    mib, method, _ = bench.peak_memory(fn, torch.device("cpu"))
    if mib is None:
        pytest.skip("no peak-RSS counter on this system")
    assert 40 < mib < 200


@pytest.mark.parametrize("argv, needle", [
    (["--steps", "1,x"], "--steps"),
    (["--steps", "0"], "--steps"),
    (["--num-samples", "2"], "--num-samples"),
])
def test_bench_bad_options_are_user_errors(runs, capsys, argv, needle):
    cm, _ = runs
    assert main(["bench", str(cm), "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and needle in err and len(err.splitlines()) == 1


def test_bench_missing_source_is_user_error(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "nope"), "--no-progress"]) == 2
    assert "nope" in capsys.readouterr().err


def test_kid_se_nan_prints_without_error():
    recs = [{"model": "m", "sampler": "baseline", "nfe": 0, "fd": 1.0, "kid": 0.1, "kid_se": math.nan,
             "precision": 1.0, "recall": 1.0, "num_samples": 4, "reference_size": 4}]
    assert "| m | baseline | 0 |" in bench.to_markdown(recs)


def test_modality_features_dispatch_to_the_package_module():
    from cm_media.modality import Modality
    from cm_media.registry import get_modality
    from modalities.image.features import features as image_features

    x = torch.rand(2, 1, 8, 8)
    assert torch.equal(get_modality("image").features(x, None), image_features(x))

    class Bare(Modality):
        name = "bare"

    with pytest.raises(NotImplementedError, match="bare"):
        Bare().features(x, None)
    assert Bare().learned_features(x, None) is None


def test_bench_times_the_requested_audio_length_with_the_bundled_model():
    """--seconds sets the timed clip length (the real-time factor's audio seconds); quality keeps the default."""
    opts = bench.BenchOptions(steps=[1], batch=1, num_samples=8, max_references=16, repeats=1, warmup=0,
                              baselines=False, progress=False, shape_options={"seconds": 3.0})
    (rec,) = bench.run_bench(["audio"], opts)
    assert rec["audio_seconds"] == pytest.approx(3.0, abs=0.02)  # 189 STFT frames of 128 samples, whole hops
    assert rec["num_samples"] == 8 and rec["peak_memory_mib"] is not None


def test_peak_memory_counts_an_allocation_served_from_free_heap_memory():
    """Free heap memory still resident (120 MiB freed below a live block, as timing's 32 MiB mmap threshold leaves
    it) must not absorb fn's 64 MiB without a trace: this read 3 MiB before peak_memory released it first."""
    import numpy as np

    bench._fix_malloc_threshold(32 * 2**20)  # as the timing phase leaves it: 30 MiB blocks come from the heap
    blocks = [np.ones(30 * 2**20 // 8) for _ in range(4)]
    pin = np.ones(20 * 2**20 // 8)  # allocated after them: their space cannot be trimmed from the heap's top
    del blocks
    mib, _, out = bench.peak_memory(lambda: torch.ones(64 * 2**20 // 4).sum(), torch.device("cpu"))
    assert out == 64 * 2**20 // 4 and pin.size
    if mib is None:
        pytest.skip("no peak-RSS counter on this system")
    assert 40 < mib < 200
