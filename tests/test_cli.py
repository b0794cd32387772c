"""CLI behaviour: user mistakes end with one `error:` line and exit status 2; a tiny run trains and generates."""

import pytest
import torch
from PIL import Image

from cm_media.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *needles):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for n in needles:
        assert n in lines[0]


def test_missing_config(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", str(tmp_path / "nope.yaml"))
    assert_user_error(code, err, "nope.yaml")


def test_bad_key_via_set(capsys, digits_config, tmp_path):
    code, _, err = run_cli(capsys, "train", digits_config, "--set", "train.stepz=3", "--out", str(tmp_path))
    assert_user_error(code, err, "train.stepz")


def test_unknown_section_and_bad_type(capsys, digits_config, tmp_path):
    code, _, err = run_cli(capsys, "train", digits_config, "--set", "trian.steps=3", "--out", str(tmp_path))
    assert_user_error(code, err, "trian.steps")
    code, _, err = run_cli(capsys, "train", digits_config, "--set", "train.steps=many", "--out", str(tmp_path))
    assert_user_error(code, err, "train.steps", "integer")


def test_unknown_preset_and_method(capsys, digits_config, tmp_path):
    code, _, err = run_cli(capsys, "train", digits_config, "--set", "backbone.preset=huge", "--out", str(tmp_path / "a"))
    assert_user_error(code, err, "huge")
    code, _, err = run_cli(capsys, "train", digits_config, "--set", "method.name=gan", "--out", str(tmp_path / "b"))
    assert_user_error(code, err, "method.name", "gan")


def test_invalid_yaml(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: image\ntrain: [1, 2\n")
    code, _, err = run_cli(capsys, "train", str(bad))
    assert_user_error(code, err, "bad.yaml")


def test_unknown_modality(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("modality: smell\n")
    code, _, err = run_cli(capsys, "train", str(cfg))
    assert_user_error(code, err, "smell")


def test_missing_checkpoint_and_run(capsys, tmp_path):
    code, _, err = run_cli(capsys, "generate", str(tmp_path / "missing.safetensors"))
    assert_user_error(code, err, "missing.safetensors")
    (tmp_path / "empty_run").mkdir()
    code, _, err = run_cli(capsys, "generate", str(tmp_path / "empty_run"))
    assert_user_error(code, err, "empty_run")


def test_bad_option(capsys):
    code, _, err = run_cli(capsys, "generate")
    assert_user_error(code, err)
    code, _, err = run_cli(capsys, "frobnicate")
    assert_user_error(code, err, "frobnicate")


def test_train_then_generate_images(capsys, digits_config, tmp_path, tiny_overrides):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", digits_config, "--out", str(run), "--no-progress",
                             *tiny_overrides(3, **{"backbone.preset": "tiny"}))
    assert code == 0, err
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert list((run / "checkpoints").glob("step_*.safetensors"))
    assert (run / "samples" / "samples_1step.png").is_file()
    code, out, err = run_cli(capsys, "generate", str(run), "-n", "5", "--steps", "2", "--out", str(tmp_path / "g.png"))
    assert code == 0, err
    with Image.open(tmp_path / "g.png") as im:  # 3x2 grid of 8x8 tiles, each upscaled 4x to 32 px
        assert im.size[0] > 3 * 32 and im.size[1] > 2 * 32
    code, out, err = run_cli(capsys, "generate", str(run), "-n", "3", "--separate", "--out", str(tmp_path / "sep"))
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "sep").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    # resuming a finished run is a no-op, not an error
    code, out, err = run_cli(capsys, "train", digits_config, "--out", str(run), "--resume", "--no-progress",
                             *tiny_overrides(3, **{"backbone.preset": "tiny"}))
    assert code == 0, err


def test_info(capsys):
    code, out, _ = run_cli(capsys, "info")
    assert code == 0
    assert "modality image" in out and "attention backend" in out


def test_python_api(digits_config, tmp_path, tiny_overrides):
    import cm_media
    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    cfg = load_config(digits_config, [a for a in tiny_overrides(2, **{"backbone.preset": "tiny"}) if a != "--set"])
    train(cfg, tmp_path / "r", progress=False)
    gen = cm_media.load(tmp_path / "r")
    imgs = gen.generate(3, steps=1, seed=0)
    assert imgs.shape == (3, 1, 8, 8) and imgs.min() >= 0 and imgs.max() <= 1
    assert cm_media.load(tmp_path / "r").generate(3, steps=1, seed=0).equal(imgs)  # seeded
    assert not gen.generate(3, steps=1, seed=1).equal(imgs)
    with pytest.raises(cm_media.UserError):
        gen.generate(0)


def test_edit_and_interpolate_cli(capsys, digits_config, tmp_path, tiny_overrides):
    import numpy as np

    run = tmp_path / "run"
    assert main(["train", digits_config, "--out", str(run), "--no-progress",
                 *tiny_overrides(2, **{"backbone.preset": "tiny"})]) == 0
    src = tmp_path / "digit.png"
    Image.fromarray((np.random.rand(8, 8) * 255).astype(np.uint8)).save(src)
    capsys.readouterr()
    code, out, err = run_cli(capsys, "edit", str(run), "--input", str(src), "--mask", "right", "--out", str(tmp_path / "e.png"))
    assert code == 0, err
    assert "regenerated 50%" in out and (tmp_path / "e.png").is_file()
    code, _, err = run_cli(capsys, "edit", str(run), "--input", str(src), "--mask", "diagonal")
    assert_user_error(code, err, "diagonal")
    code, _, err = run_cli(capsys, "edit", str(run), "--input", str(tmp_path / "none.png"), "--mask", "left")
    assert_user_error(code, err, "none.png")
    code, out, err = run_cli(capsys, "generate", str(run), "-n", "6", "--interpolate", "--out", str(tmp_path / "i.png"))
    assert code == 0, err


def test_channels_last_generation_matches(digits_config, tmp_path, tiny_overrides):
    import cm_media
    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    cfg = load_config(digits_config, [a for a in tiny_overrides(2, **{"backbone.preset": "tiny"}) if a != "--set"])
    train(cfg, tmp_path / "r", progress=False)
    gen = cm_media.load(tmp_path / "r")
    ref = gen.generate(4, steps=1, seed=3)
    from cm_media.runs.generator import apply_speed_options

    apply_speed_options(gen.model, channels_last=True, compile=False)
    conv = next(m for m in gen.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(gen.generate(4, steps=1, seed=3), ref, atol=1e-5)


def test_runs_store_resolved_backbone_and_custom_step_sigmas(digits_config, tmp_path, tiny_overrides):
    import yaml

    import cm_media
    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    cfg = load_config(digits_config, [a for a in tiny_overrides(2, **{"backbone.preset": "tiny",
                                                                        "train.threads": 1}) if a != "--set"])
    train(cfg, tmp_path / "r", progress=False)
    stored = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["backbone"]
    assert "preset" not in stored and stored["channels"] == 16 and stored["arch"] == "unet"
    gen = cm_media.load(tmp_path / "r")
    seen = []
    inner = gen.model.forward
    gen.model.forward = lambda x, s: (seen.append(float(s[0])), inner(x, s))[1]
    gen.cfg.sample.sigmas = {1: [10.0], 2: [10.0, 0.5]}
    gen.generate(2, steps=1)
    gen.generate(2, steps=2)
    assert seen == [10.0, 10.0, 0.5]
    gen.cfg.sample.sigmas = {2: [10.0]}
    with pytest.raises(cm_media.UserError, match="sample.sigmas"):
        gen.generate(2, steps=2)
