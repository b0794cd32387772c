"""Every bad input a clean error (issue 17): broken values, files and output paths given to the CLI end with exit
status 2 and exactly one `error:` line, before any work; odd but valid requests give a correct result."""

import errno
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors.torch import save_file

from cm_media.cli import main
from cm_media.runs import checkpoint as ckpt

TINY = ["--no-progress", "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "backbone.preset=tiny",
        "--set", "train.samples=2", "--set", "train.threads=1", "--set", "train.warmup_steps=1"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_error(code, err, *needles):
    """Exit status 2 and one `error:` line (no traceback, nothing else on stderr but log notes) naming `needles`."""
    assert code == 2, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in errors[0], errors[0]
    return errors[0]


# ------------------------------------------------------------------ config values


@pytest.mark.parametrize("setting,needle", [
    ("train.lr=.nan", "train.lr"), ("train.lr=.inf", "train.lr"), ("train.lr=0", "train.lr"),
    ("train.log_every=0", "train.log_every"), ("method.rho=0", "method.rho"),
    ("backbone.channels=-4", "backbone.channels"), ("backbone.channels=1000000000", "backbone.channels"),
    ("backbone.channels=12000", "parameters"), ("backbone.num_res_blocks=100000", "backbone.num_res_blocks"),
    ("train.grad_clip=.nan", "train.grad_clip"), ("train.grad_clip=-1", "train.grad_clip"),
    ("method.sigma_data=0", "method.sigma_data"), ("data.holdout=-1", "data.holdout"), ("data.holdout=1", "data.holdout"),
    ("method.s0=0", "method.s0"), ("method.s1=1", "method.s1"), ("train.keep_checkpoints=0", "train.keep_checkpoints"),
    ("train.ema_decay=1", "train.ema_decay"), ("train.seed=-1", "train.seed"), ("train.samples=-1", "train.samples"),
    ("train.steps=1e400", "train.steps"), ("train.batch_size=1e30", "train.batch_size"),
    ("sample.steps=0", "sample.steps"), ("sample.sigmas={2: [80, .nan]}", "sample.sigmas"),
    ("sample.sigmas={2: [1, 2]}", "sample.sigmas"), ("sample.cfg_scale=-1", "sample.cfg_scale"),
    ("codec.size=0", "codec.size"), ("train.device=tpu", "train.device"), ("method.sigma_max=.inf", "method.sigma_max"),
    ("train.lr_decay=step", "train.lr_decay"), ("train.lr_min=-1", "train.lr_min"), ("train.lr_min=1", "train.lr_min"),
])
def test_bad_config_values_are_one_line_errors(capsys, digits_config, tmp_path, setting, needle):
    code, _, err = run(capsys, "train", digits_config, "--out", tmp_path / "run", *TINY, "--set", setting)
    assert_error(code, err, needle)
    assert not (tmp_path / "run" / "checkpoints").exists()  # refused before any work


@pytest.mark.parametrize("config,setting,needle", [
    ("audio/tones_spectrogram_ict.yaml", "codec.peak=0", "codec.peak"),
    ("audio/tones_spectrogram_ict.yaml", "data.seconds=.nan", "data.seconds"),
    ("audio/tones_spectrogram_ict.yaml", "data.midi_high=300", "data.midi_high"),
    ("video/moving_digits_ict.yaml", "codec.fps=0", "codec.fps"),
    ("video/moving_digits_ict.yaml", "codec.frames=0", "codec.frames"),
    ("video/moving_digits_ict.yaml", "data.holdout=-1", "data.holdout"),
])
def test_bad_modality_config_values(capsys, repo_root, tmp_path, config, setting, needle):
    code, _, err = run(capsys, "train", f"{repo_root}/configs/{config}", "--out", tmp_path / "run", *TINY,
                       "--set", setting)
    assert_error(code, err, needle)


def test_train_samples_zero_writes_no_samples(capsys, digits_config, tmp_path):
    code, out, err = run(capsys, "train", digits_config, "--out", tmp_path / "run", *TINY, "--set", "train.samples=0")
    assert code == 0, err
    assert not (tmp_path / "run" / "samples").exists()


# ------------------------------------------------------------------ generate values


@pytest.mark.parametrize("argv,needle", [
    (["image", "--batch-size", "-1"], "--batch-size"), (["image", "--batch-size", "0"], "--batch-size"),
    (["image", "-n", "0"], "-n"), (["image", "--interpolate", "-n", "-3"], "-n"), (["image", "--steps", "0"], "--steps"),
    (["image", "--seed", "1000000000000000000000"], "--seed"), (["image", "--seed", "-1"], "--seed"),
    (["image", "--steps", "100000"], "--steps"), (["image", "--cfg-scale", "nan"], "--cfg-scale"),
    (["audio", "--seconds", "inf"], "--seconds"), (["audio", "--seconds", "nan"], "--seconds"),
    (["audio", "--seconds", "-1"], "--seconds"), (["audio", "--seconds", "100000"], "at most"),
    (["audio", "--peak", "nan"], "--peak"), (["audio", "--peak", "2"], "--peak"),
    (["video", "--fps", "nan"], "--fps"), (["video", "--fps", "0.0000001"], "--fps"), (["video", "--fps", "inf"], "--fps"),
    (["video", "--scale", "100000"], "--scale"), (["video", "--scale", "200"], "4096"),
    (["video", "--frames", "100000"], "at most"), (["video", "--frames", "0"], "--frames"),
    (["video", "--seconds", "nan"], "--seconds"), (["video", "-n", "65"], "--separate"),
    (["image", "--batch-size", "65536", "-n", "2", "--steps", "1"], None),  # a large batch of small images is fine
])
def test_bad_generate_values(capsys, tmp_path, argv, needle):
    code, out, err = run(capsys, "generate", *argv, "--out", tmp_path / f"out{'.png' if argv[0] == 'image' else ''}")
    if needle is None:
        assert code == 0, err
        return
    assert_error(code, err, needle)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("modality,name,needle", [("image", "g.txt", ".png"), ("audio", "a.mp3", ".wav"),
                                                  ("video", "v.avi", ".mp4"), ("audio", "a.flac", "float")])
def test_unknown_output_extension(capsys, tmp_path, modality, name, needle):
    extra = ["--audio-format", "float"] if needle == "float" else []
    code, _, err = run(capsys, "generate", modality, "-n", "2", "--out", tmp_path / name, *extra)
    assert_error(code, err, needle)


# ------------------------------------------------------------------ output paths


@pytest.mark.parametrize("modality", ["image", "audio", "video"])
def test_output_under_a_file(capsys, tmp_path, modality):
    (tmp_path / "afile").write_text("x")
    code, _, err = run(capsys, "generate", modality, "-n", "1", "--out", tmp_path / "afile" / "sub" / "x.png")
    assert_error(code, err, "afile")


@pytest.mark.parametrize("modality", ["image", "video"])
def test_existing_folder_as_output_file(capsys, tmp_path, modality):
    (tmp_path / "d").mkdir()
    code, _, err = run(capsys, "generate", modality, "-n", "1", "--out", tmp_path / "d")
    assert_error(code, err, "existing folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]  # no sibling file


def _read_only_folder(tmp_path):
    """A folder this user cannot write: a mode-555 folder, or (root ignores modes) /sys where it refuses files."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        (ro / "probe").write_text("x")
    except OSError:
        return ro
    (ro / "probe").unlink()
    try:
        open("/sys/cm-media-probe", "w").close()
    except OSError:
        return Path("/sys")
    pytest.skip("no read-only folder available to this user")


def test_read_only_folder(capsys, tmp_path):
    target = _read_only_folder(tmp_path)
    try:
        for argv in (["generate", "image", "-n", "1", "--out", target / "x.png"],
                     ["generate", "audio", "-n", "1", "--out", target / "a.wav"]):
            code, _, err = run(capsys, *argv)
            assert_error(code, err, str(target))
    finally:
        (tmp_path / "ro").chmod(0o755)


def _full_disk(monkeypatch):
    """Every os.write fails as on a full disk (the probe of an output folder writes through it)."""
    real = os.write

    def write(fd, data):
        if fd > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


def test_full_disk_is_one_line_for_generate_edit_export_train(capsys, tmp_path, monkeypatch, digits_config):
    src = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((8, 8)) * 255).astype(np.uint8)).save(src)
    run_dir = tmp_path / "run"
    assert run(capsys, "train", digits_config, "--out", run_dir, *TINY, "--set", "train.samples=0")[0] == 0
    _full_disk(monkeypatch)
    cases = [["generate", "image", "-n", "2", "--out", tmp_path / "g.png"],
             ["edit", "image", "--input", src, "--mask", "center", "--out", tmp_path / "e.png"],
             ["export", run_dir, "--out", tmp_path / "exp"],
             ["train", digits_config, "--out", tmp_path / "run2", *TINY]]
    for argv in cases:
        code, _, err = run(capsys, *argv)
        assert_error(code, err, "No space left")


def test_disk_full_while_writing_leaves_no_partial_grid(capsys, tmp_path, monkeypatch):
    from modalities.image import io

    def boom(self, pixels):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(io.GridPNG, "_rows", boom)
    code, _, err = run(capsys, "generate", "image", "-n", "3", "--out", tmp_path / "g.png")
    assert_error(code, err, "g.png", "No space left")
    assert list(tmp_path.iterdir()) == []  # the temporary grid is gone too


# ------------------------------------------------------------------ edit


@pytest.fixture(scope="module")
def note(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edit")
    assert main(["generate", "audio", "-n", "1", "--seconds", "1", "--out", str(folder / "note.wav")]) == 0
    assert main(["generate", "video", "-n", "1", "--out", str(folder / "clip.mp4")]) == 0
    return folder


@pytest.mark.parametrize("argv,needle", [
    (["--mask", "0.1:inf"], "--mask"), (["--mask", "nan:0.2"], "--mask"), (["--mask", "continue:nan"], "--mask"),
    (["--mask", "0.5:3"], "not inside"), (["--mask", "0.2:0.1"], "selects nothing"),
    (["--mask", "0.1:0.2", "--steps", "-1"], "--steps"), (["--mask", "0.1:0.2", "--guidance", "nan"], "--guidance"),
    (["--mask", "0.1:0.2", "--guidance", "inf"], "--guidance"), (["--mask", "0.1:0.2", "--sigmas", "nan"], "--sigmas"),
    (["--mask", "0.1:0.2", "--sigmas", "inf,1"], "--sigmas"), (["--mask", "0.1:0.2", "--sigmas", "1,2"], "--sigmas"),
    (["--mask", "0.1:0.2", "--sigmas", "1000,1"], "--sigmas"), (["--mask", "0.1:0.2", "--from-guess", "inf"], "--from-guess"),
    (["--mask", "0.1:0.2", "--seed", "-5"], "--seed"),
])
def test_bad_audio_edit_values(capsys, note, tmp_path, argv, needle):
    code, _, err = run(capsys, "edit", "audio", "--input", note / "note.wav", *argv, "--out", tmp_path / "e.wav")
    assert_error(code, err, needle)
    assert not (tmp_path / "e.wav").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--mask", "2-99999999999"], "0..15"), (["--mask", "5-3"], "backwards"), (["--mask", "3-5", "--from-guess", "inf"],
                                                                                "--from-guess"),
    (["--mask", "3-5", "--from-guess", "nan"], "--from-guess"), (["--mask", "x-y"], "frame indices"),
    (["--mask", "3-5", "--from-guess", "1000"], "highest noise level"),
])
def test_bad_video_edit_values(capsys, note, tmp_path, argv, needle):
    code, _, err = run(capsys, "edit", "video", "--input", note / "clip.mp4", *argv, "--out", tmp_path / "e.mp4")
    assert_error(code, err, needle)


def test_edit_audio_files_too_short_too_long_or_odd(capsys, tmp_path):
    sf.write(tmp_path / "short.wav", np.zeros(50, dtype="int16"), 8000, subtype="PCM_16")
    code, _, err = run(capsys, "edit", "audio", "--input", tmp_path / "short.wav", "--mask", "0:0.001")
    assert_error(code, err, "too short", "samples")
    sf.write(tmp_path / "long.wav", np.zeros(8000 * 601, dtype="int16"), 8000, subtype="PCM_16")  # 10 min 1 s
    code, _, err = run(capsys, "edit", "audio", "--input", tmp_path / "long.wav", "--mask", "1:2")
    assert_error(code, err, "601.0 s", "at most 60 s")
    (tmp_path / "junk.wav").write_bytes(b"RIFF not really a wave file")
    code, _, err = run(capsys, "edit", "audio", "--input", tmp_path / "junk.wav", "--mask", "0:0.1")
    assert_error(code, err, "junk.wav")


def test_edit_keeps_a_constant_file_exactly(capsys, tmp_path):
    """A file of constant -32768 (a DC offset at full scale): valid, and the kept region comes back unchanged."""
    sf.write(tmp_path / "c.wav", np.full(8000, -32768, dtype="int16"), 8000, subtype="PCM_16")
    code, _, err = run(capsys, "edit", "audio", "--input", tmp_path / "c.wav", "--mask", "0.25:0.5",
                       "--out", tmp_path / "e.wav", "--guidance", "1")
    assert code == 0, err
    out, _ = sf.read(tmp_path / "e.wav")
    assert out.shape == (8000,) and np.isfinite(out).all()  # the input's length, not whole STFT hops
    kept = np.concatenate([out[:1600], out[4400:]])  # away from the regenerated 0.25-0.5 s (one window each side)
    assert np.abs(kept + 0.9).max() < 5e-3  # the normalized level, unchanged (iSTFT edges: a few 1e-3)


# ------------------------------------------------------------------ model files


def _tiny_export(tmp_path, digits_config):
    run_dir, out = tmp_path / "run", tmp_path / "exp"
    assert main(["train", digits_config, "--out", str(run_dir), *TINY, "--set", "train.samples=0"]) == 0
    assert main(["export", str(run_dir), "--out", str(out)]) == 0
    return out / "model.safetensors"


def test_crafted_model_files(capsys, tmp_path, digits_config):
    good = _tiny_export(tmp_path, digits_config)
    tensors, meta = ckpt.load_checkpoint(good)

    def craft(name, metadata, tensors=tensors):
        path = tmp_path / name
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
        return path

    cases = [
        (craft("notjson.safetensors", {ckpt.META_KEY: "{not json"}), "not JSON"),
        (craft("array.safetensors", {ckpt.META_KEY: "[1, 2]"}), "not an object"),
        (craft("noconfig.safetensors", {ckpt.META_KEY: json.dumps({"step": 1})}), "no run config"),
        (craft("huge.safetensors", {ckpt.META_KEY: json.dumps(
            {**meta, "config": {**meta["config"], "backbone": {**meta["config"]["backbone"], "channels": 12000}}})}),
         "parameters"),
        (craft("overflow.safetensors", {ckpt.META_KEY: json.dumps(
            {**meta, "config": {**meta["config"], "backbone": {**meta["config"]["backbone"], "channels": 10**9}}})}),
         "backbone.channels"),
        (craft("bigger.safetensors", {ckpt.META_KEY: json.dumps(
            {**meta, "config": {**meta["config"], "backbone": {**meta["config"]["backbone"], "channels": 256}}})}),
         "inconsistent"),
        (craft("nan.safetensors", {ckpt.META_KEY: json.dumps(meta)},
               {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}),
         "non-finite"),
    ]
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    cases.append((truncated, "truncated.safetensors"))
    for path, needle in cases:
        code, _, err = run(capsys, "generate", path, "-n", "1", "--out", tmp_path / "g.png")
        assert_error(code, err, needle)
    code, _, err = run(capsys, "export", tmp_path / "huge.safetensors", "--out", tmp_path / "exp2")
    assert_error(code, err, "parameters")


# ------------------------------------------------------------------ correct results


def test_streamed_outputs_match_one_batch(tmp_path):
    """Written batch by batch (-n 5 in batches of 2), the files hold what one batch gives."""
    import cm_media
    from modalities.image.io import save_images

    gen = cm_media.load("image")
    assert main(["generate", "image", "-n", "5", "--batch-size", "2", "--out", str(tmp_path / "g.png")]) == 0
    save_images(gen.generate(5, batch_size=2), tmp_path / "ref.png", grid=True)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), np.asarray(Image.open(tmp_path / "ref.png")))
    assert main(["generate", "audio", "-n", "3", "--batch-size", "2", "--out", str(tmp_path / "a.wav")]) == 0
    assert sorted(p.name for p in tmp_path.glob("a_*.wav")) == ["a_000.wav", "a_001.wav", "a_002.wav"]
    assert main(["generate", "video", "-n", "3", "--batch-size", "2", "--separate", "--out",
                 str(tmp_path / "v.mp4")]) == 0
    assert sorted(p.name for p in (tmp_path / "v").iterdir()) == ["0000.mp4", "0001.mp4", "0002.mp4"]
    assert (tmp_path / "v_frames.png").is_file()


def test_long_audio_uses_smaller_default_batches():
    import cm_media

    gen = cm_media.load("audio")
    shape = gen.shape(seconds=60)
    assert gen.batch_for(shape) * math.prod(shape) <= 2**22 < 64 * math.prod(shape)
    assert gen.batch_for(gen.shape()) == gen.cfg.sample.batch_size  # training-length clips: the config's batch


def test_huge_frame_grid_is_refused_before_work(capsys, tmp_path):
    code, _, err = run(capsys, "generate", "video", "-n", "100000", "--out", tmp_path / "frames.png")
    assert_error(code, err, "--separate")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------ options a model cannot honour (issue 37)


def test_each_modality_honours_the_options_it_names():
    from cm_media.registry import get_modality

    assert get_modality("av").option_names() == set()  # one clip length, one writer
    assert {"seconds", "frames", "fps", "scale", "separate", "first_frame"} <= get_modality("video").option_names()
    assert {"seconds", "audio_format", "peak"} <= get_modality("audio").option_names()
    assert "seconds" not in get_modality("image").option_names()


def test_an_option_the_model_ignores_is_an_error(capsys, tmp_path, bundled):
    bundled("sounding-digits", True)
    code, _, err = run(capsys, "generate", "sounding-digits", "--cond", "digit=3", "--seconds", "5",
                       "--out", tmp_path / "clip.mp4")
    assert_error(code, err, "--seconds", "av model", "sounding_digits")
    code, _, err = run(capsys, "generate", "image", "-n", "1", "--frames", "9", "--out", tmp_path / "g.png")
    assert_error(code, err, "--frames", "--separate")
    assert list(tmp_path.iterdir()) == []


def test_two_options_naming_one_condition_are_an_error(capsys, tmp_path, bundled):
    bundled("fashion-mnist", True)
    for argv, needle in [(["--class", "sneaker", "--cond", "class=bag"], "--class and --cond class"),
                         (["--cond", "class=bag", "--cond", "class=sneaker"], "twice")]:
        code, _, err = run(capsys, "generate", "fashion-mnist", *argv, "--out", tmp_path / "g.png")
        assert_error(code, err, needle)
    assert list(tmp_path.iterdir()) == []
