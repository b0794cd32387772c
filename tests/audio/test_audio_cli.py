"""A tiny audio training run through the CLI, then `cm-media generate --seconds` writes playable files."""

import os

import pytest
import soundfile as sf

import cm_media
from cm_media.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIGS = {"waveform": os.path.join("experiments", "audio", "tones_waveform_ict.yaml"),
           "stft": os.path.join("audio", "tones_spectrogram_ict.yaml")}


def tiny_train(tmp_path, rep):
    run = tmp_path / f"run_{rep}"
    sets = {"train.steps": 3, "train.batch_size": 4, "train.samples": 2, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "data.tones": 16, "data.seconds": 0.25, "train.bf16": False}
    args = ["train", os.path.join(ROOT, "configs", CONFIGS[rep]), "--out", str(run), "--no-progress"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    return run


@pytest.mark.parametrize("rep", ["waveform", "stft"])
def test_train_then_generate_wav_of_requested_length(tmp_path, rep, capsys):
    run = tiny_train(tmp_path, rep)
    assert (run / "config.yaml").is_file() and list((run / "checkpoints").glob("*.safetensors"))
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "samples_1step_000.wav", "samples_1step_001.wav", "samples_2step_000.wav", "samples_2step_001.wav"]
    # longer than the 0.25 s training crop, and not a whole number of STFT hops
    out = tmp_path / "gen" / "clip.wav"
    assert main(["generate", str(run), "-n", "2", "--steps", "1", "--seconds", "0.7", "--out", str(out)]) == 0
    for name in ("clip_000.wav", "clip_001.wav"):
        info = sf.info(str(out.parent / name))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (8000, 5600, 1, "PCM_16")
        data, _ = sf.read(str(out.parent / name))
        assert abs(data).max() <= 1.0
    one = tmp_path / "one.flac"
    assert main(["generate", str(run), "-n", "1", "--seconds", "0.3", "--out", str(one)]) == 0
    assert sf.info(str(one)).frames == 2400 and sf.info(str(one)).format == "FLAC"
    # Python API: generate(seconds=...) then save without it keeps the whole clip (STFT decodes whole hops)
    gen = cm_media.load(run)
    media = gen.generate(1, steps=1, seconds=0.7)
    frames = sf.info(str(gen.save(media, tmp_path / "api.wav")[0])).frames
    assert 5600 <= frames < 5600 + 128
    capsys.readouterr()
    assert main(["generate", str(run), "-n", "1", "--out", str(tmp_path / "x.mp3")]) == 2
    assert "x.mp3" in capsys.readouterr().err
    assert main(["generate", str(run), "-n", "1", "--seconds", "-1", "--out", str(tmp_path / "y.wav")]) == 2
    assert "--seconds" in capsys.readouterr().err


def test_folder_config_errors_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["train", os.path.join(ROOT, "configs", CONFIGS["waveform"]), "--out", str(tmp_path / "r"),
            "--set", "data.dataset=folder", "--set", f"data.root={tmp_path / 'empty'}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no usable audio in") and "empty" in err and "Traceback" not in err
    assert main(args[:4] + ["--set", "codec.representation=cqt"]) == 2
    assert "codec.representation" in capsys.readouterr().err


def test_export_may_change_the_mel_decode_but_not_the_tensors(tmp_path, capsys):
    """codec.griffin_lim_iters only changes the decode (AudioModality.decode_keys): export --set takes it; a key that
    changes the trained tensors (n_mels) stays refused with one line naming what may change."""
    sets = {"train.steps": 2, "train.batch_size": 4, "train.samples": 0, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "data.tones": 16, "data.seconds": 0.25, "train.bf16": False,
            "codec.representation": "mel", "codec.n_mels": 16, "codec.griffin_lim_iters": 32}
    run = tmp_path / "mel"
    args = ["train", os.path.join(ROOT, "configs", CONFIGS["stft"]), "--out", str(run), "--no-progress"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    assert main(args) == 0
    out = tmp_path / "exp"
    assert main(["export", str(run), "--out", str(out), "--set", "codec.griffin_lim_iters=4"]) == 0
    gen = cm_media.load(out)
    assert gen.cfg.codec.griffin_lim_iters == 4 and gen.codec.cfg.griffin_lim_iters == 4
    assert "--set codec.griffin_lim_iters=4" in (out / "README.md").read_text()  # the re-export command keeps it
    assert 2000 <= gen.generate(1, steps=1).shape[-1] < 2000 + 128  # whole hops of the 0.25 s crop
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "bad"), "--set", "codec.n_mels=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "codec.griffin_lim_iters" in err[0] and "codec.n_mels=8" in err[0]
