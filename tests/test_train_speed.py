"""Training throughput (`cm-media bench --train`, cm_media/eval/train_speed.py, benchmarks/training_speed.py): the
exclusive part timer, a recipe's timed step as the loop runs it, the table, and the CLI's errors."""

import json
import time

import pytest
import torch

from cm_media.cli import main
from cm_media.eval import train_speed
from cm_media.eval.flops import count_flops
from cm_media.runs.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")
TINY = ["backbone.preset=tiny", "train.warmup_steps=1"]


def test_timer_sections_are_exclusive_of_the_sections_inside_them():
    t = train_speed.Timer()
    with t.section("outer"):
        time.sleep(0.02)
        with t.section("inner"):
            time.sleep(0.03)
        with t.section("inner"):
            time.sleep(0.03)
    assert 0.055 <= t.totals["inner"] < 0.09  # both inner sections, summed
    assert 0.018 <= t.totals["outer"] < 0.045  # the outer's own time only


def test_a_recipes_step_is_timed_by_part_and_its_flops_counted(digits_config):
    cfg = load_config(digits_config, TINY)
    rec = train_speed.measure(cfg, "digits", batch=4, steps=2, repeats=1)
    assert rec["recipe"] == "digits" and rec["batch"] == 4 and rec["steps_timed"] == 2 and len(rec["losses"]) == 3
    assert rec["samples_per_s"] == pytest.approx(4 / rec["step_s"])
    parts = rec["parts_s"]
    assert set(parts) == set(train_speed.PARTS)
    assert parts["teacher"] == 0 and parts["target"] > 0 and parts["forward"] > 0 and parts["backward"] > 0  # iCT
    assert rec["step_gflop"] > 0 and rec["gflops"] == pytest.approx(rec["step_gflop"] / rec["step_s"])
    assert rec["peak_share"] == pytest.approx(rec["gflops"] / rec["peak_gflops"])
    # the counted step is the student's forward and backward plus the no-grad target: about 3 forwards + 1
    from cm_media.runs.training import draw_batch

    bench = train_speed.StepBench(cfg, 4)
    x0, cond = draw_batch(bench)
    fwd = count_flops(lambda: bench.model(x0, torch.full((4,), 1.0), cond or None))
    assert 3 * fwd <= bench.step_flops() <= 5 * fwd


def test_the_bench_step_is_the_training_loops_step(digits_config, tmp_path):
    """The same config and seed: the bench's first losses are the training run's logged losses."""
    from cm_media.runs.training import train

    sets = [*TINY, "train.steps=2", "train.log_every=1", "train.samples=0"]  # steps set iCT's curriculum
    train(load_config(digits_config, sets), tmp_path / "run", progress=False)
    logged = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line]
    bench = train_speed.StepBench(load_config(digits_config, sets))
    got = [bench.step() for _ in range(2)]
    assert got == pytest.approx(logged[:2], rel=1e-4)


def test_cli_bench_train_prints_the_table_and_writes_json(digits_config, tmp_path, capsys):
    out = tmp_path / "t.json"
    argv = ["bench", "--train", digits_config, "--set", "backbone.preset=tiny", "--batch", "2", "--repeats", "1",
            "--train-steps", "1", "--json", str(out), "--markdown", str(tmp_path / "t.md")]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| digits_ict | " in text and "samples/s" in text
    rec = json.loads(out.read_text())[0]
    assert rec["batch"] == 2 and rec["steps_timed"] == 1
    assert (tmp_path / "t.md").read_text().startswith("| recipe | threads | batch |")


@pytest.mark.parametrize("argv, needle", [
    (["--set", "train.lr=1"], "--set is for bench --train"),
    (["--train", "--train-steps", "0"], "--train-steps must be an integer"),
    (["--train", "--plot", "p.png"], "--plot is for the sampling bench"),
    (["--train", "--set", "train.nope=1"], "train.nope"),
])
def test_cli_bench_train_errors(digits_config, tmp_path, capsys, argv, needle):
    assert main(["bench", digits_config, *[a if a != "p.png" else str(tmp_path / a) for a in argv]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_cli_bench_train_names_a_missing_config(tmp_path, capsys):
    assert main(["bench", "--train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err
