"""Sounding video end to end through the CLI: a tiny joint run, one-step mp4 files with sound, and editing one
stream of a clip while keeping the other."""

from pathlib import Path

import av
import numpy as np
import pytest

from cm_media.cli import main

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "av" / "sounding_digits_ict.yaml"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("av") / "run"
    sets = {"train.steps": 2, "train.batch_size": 2, "train.bf16": "false", "train.samples": 2,
            "train.log_every": 1, "train.warmup_steps": 1, "backbone.preset": "tiny", "data.clips": 16,
            "codec.frames": 4, "codec.size": 32, "sample.bf16": "false"}
    argv = ["train", str(CONFIG), "--out", str(run), "--no-progress"]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    assert main(argv) == 0
    return run


def streams(path):
    """(video codec, frames, fps, audio codec, audio sample rate, audio samples) of an mp4."""
    with av.open(str(path)) as c:  # read every property while the container is open
        v, a = c.streams.video[0], c.streams.audio[0]
        head = (v.codec_context.name, float(v.average_rate), a.codec_context.name, a.rate)
        frames = sum(1 for _ in c.decode(v))
    with av.open(str(path)) as c:
        samples = sum(f.samples for f in c.decode(c.streams.audio[0]))
    return head[0], frames, head[1], head[2], head[3], samples


def test_generate_writes_mp4_with_h264_and_aac(tiny_run, tmp_path):
    out = tmp_path / "clip.mp4"
    assert main(["generate", str(tiny_run), "-n", "1", "--steps", "1", "--cond", "digit=3", "--out", str(out)]) == 0
    vname, frames, fps, aname, rate, samples = streams(out)
    assert (vname, frames, fps, aname, rate) == ("h264", 4, 8.0, "aac", 16000)
    assert abs(samples - 8000) <= 1024  # 0.5 s of audio, within one AAC frame


def test_edit_keeps_the_video_when_regenerating_the_audio(tiny_run, tmp_path):
    from modalities.av.io import read_av, write_av
    from modalities.av.sounding_digits import SoundingDigits

    video, audio = SoundingDigits("test", 4, frames=4, size=32).get_clips([0])
    silent = tmp_path / "silent.mp4"
    write_av(silent, video[0], audio[0] * 0, 8.0, 16000)
    out = tmp_path / "sounded.mp4"
    assert main(["edit", str(tiny_run), "--input", str(silent), "--mask", "audio", "--steps", "1",
                 "--out", str(out)]) == 0
    v_in, _, _, _ = read_av(silent)
    v_out, a_out, fps, rate = read_av(out)
    assert v_out.shape == v_in.shape and fps == 8.0 and rate == 16000
    assert float((v_out - v_in).abs().mean()) < 0.02  # the picture is kept (up to H.264 coding)
    assert a_out is not None and np.isfinite(a_out.numpy()).all()
    assert main(["edit", str(tiny_run), "--input", str(silent), "--mask", "frames", "--out",
                 str(tmp_path / "x.mp4")]) == 2
