"""End to end through the CLI: a tiny video training run, then `generate --frames --fps` to mp4, gif and png."""

from pathlib import Path

import av
import pytest

from cm_media.cli import main
from cm_media.registry import get_modality
from cm_media.runs.config import load_config

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "video" / "moving_digits_ict.yaml"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("video") / "run"
    sets = {"train.steps": 3, "train.batch_size": 2, "train.bf16": "false", "train.samples": 2,
            "train.log_every": 1, "train.warmup_steps": 1, "backbone.preset": "tiny", "data.clips": 12,
            "codec.frames": 6, "codec.size": 16, "sample.bf16": "false"}
    argv = ["train", str(CONFIG), "--out", str(run), "--no-progress"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    return run


def read_back(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [f.to_ndarray(format="gray") for f in c.decode(s)]
        return len(frames), float(s.average_rate), s.codec_context.name, s.codec_context.pix_fmt, frames[0].shape


def test_train_writes_sample_videos(tiny_run):
    assert (tiny_run / "samples" / "samples_1step.mp4").is_file()
    assert (tiny_run / "samples" / "samples_1step_frames.png").is_file()
    n, fps, name, pix_fmt, _ = read_back(tiny_run / "samples" / "samples_1step.mp4")
    assert (n, fps, name, pix_fmt) == (6, 8.0, "h264", "yuv420p")


def test_generate_mp4_with_requested_frames_and_fps(tiny_run, tmp_path, capsys):
    out = tmp_path / "clip.mp4"
    assert main(["generate", str(tiny_run), "-n", "1", "--steps", "1", "--frames", "9", "--fps", "12",
                 "--scale", "1", "--out", str(out)]) == 0
    assert read_back(out) == (9, 12.0, "h264", "yuv420p", (16, 16))
    assert (tmp_path / "clip_frames.png").is_file()
    assert "clip.mp4" in capsys.readouterr().out


def test_generate_grid_separate_and_formats(tiny_run, tmp_path):
    assert main(["generate", str(tiny_run), "-n", "3", "--steps", "2", "--out", str(tmp_path / "grid.gif")]) == 0
    n, fps, name, _, shape = read_back(tmp_path / "grid.gif")
    assert (n, name) == (6, "gif") and fps == pytest.approx(8, abs=0.5)  # gif stores delays in 1/100 s
    assert shape[1] > 2 * 16  # three clips side by side, upscaled
    assert main(["generate", str(tiny_run), "-n", "2", "--seconds", "0.5", "--separate",
                 "--out", str(tmp_path / "many.webm")]) == 0
    assert [read_back(tmp_path / "many" / f"000{i}.webm")[:3] for i in range(2)] == [(4, 8.0, "vp9")] * 2


def test_generate_errors(tiny_run, tmp_path, capsys):
    assert main(["generate", str(tiny_run), "--frames", "0", "--out", str(tmp_path / "x.mp4")]) == 2
    assert "--frames" in capsys.readouterr().err
    assert main(["generate", str(tiny_run), "--out", str(tmp_path / "x.avi")]) == 2
    assert "x.avi" in capsys.readouterr().err


def test_sample_shape_honours_frames_and_seconds():
    cfg = load_config(CONFIG)
    m = get_modality("video")
    codec = m.build_codec(cfg)
    assert m.sample_shape(cfg, codec) == (1, 16, 32, 32)
    assert m.sample_shape(cfg, codec, frames=5) == (1, 5, 32, 32)
    assert m.sample_shape(cfg, codec, seconds=1.5, fps=4) == (1, 6, 32, 32)


def test_edit_from_crossfade_guess_keeps_frames_and_rejects_bad_use(tmp_path, capsys):
    """`edit --from-guess SIGMA` (or with --sigmas and --guidance) on the bundled video model: kept frames come back
    (to codec precision), the regenerated ones differ from the plain cross-fade; images have no guess and bad
    noise levels or weights are one-line user errors."""
    import torch

    import cm_media

    gen = cm_media.load("video")
    clip = gen.generate(1, steps=1, seed=3)  # [1, 1, 16, 32, 32]
    src = gen.save(clip, tmp_path / "in.mp4")[0]
    out = tmp_path / "out.mp4"
    assert main(["edit", "video", "--input", str(src), "--mask", "6-9", "--from-guess", "2", "--out", str(out)]) == 0
    media = gen.modality.read(src, gen.cfg, gen.codec)
    edited = gen.modality.read(out, gen.cfg, gen.codec)
    kept = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15]
    assert (edited[:, :, kept] - media[:, :, kept]).abs().mean() < 0.02  # H.264 round trip, not the model
    fade = gen.modality.edit_guess(media, gen.modality.edit_mask("6-9", (1, 1, 16, 32, 32), gen.cfg), gen.cfg)
    assert (edited[:, :, 6:10] - fade[:, :, 6:10]).abs().mean() > 0.005
    capsys.readouterr()
    assert main(["edit", "video", "--input", str(src), "--mask", "6-9", "--from-guess", "0", "--out", str(out)]) == 2
    assert "--from-guess" in capsys.readouterr().err
    # the recommended interpolation: the guess refined along several noise levels with reconstruction guidance
    guided = tmp_path / "guided.mp4"
    assert main(["edit", "video", "--input", str(src), "--mask", "6-9", "--from-guess", "--sigmas", "3,2,1",
                 "--guidance", "8", "--out", str(guided)]) == 0
    edited = gen.modality.read(guided, gen.cfg, gen.codec)
    assert (edited[:, :, kept] - media[:, :, kept]).abs().mean() < 0.02
    capsys.readouterr()
    for bad, name in ((["--sigmas", "1,2"], "--sigmas"), (["--sigmas", "3,x"], "--sigmas"),
                      (["--from-guess", "2", "--sigmas", "3,2"], "--from-guess"), (["--guidance", "-1"], "--guidance"),
                      (["--from-guess"], "--from-guess")):
        assert main(["edit", "video", "--input", str(src), "--mask", "6-9", *bad, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert name in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    png = tmp_path / "digit.png"
    cm_media.load("image").save(torch.rand(1, 1, 8, 8), png)
    assert main(["edit", "image", "--input", str(png), "--mask", "center", "--from-guess", "2"]) == 2
    assert "no first-guess fill" in capsys.readouterr().err
