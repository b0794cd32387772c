"""benchmarks/gpu_check.py's bundled-model rows, run on the CPU at batch 2: the generate path and an iCT step of the
backbone run, and the media rates follow from the batch time and the clip's length."""

import types

import pytest


def test_media_rates_from_the_clip_length(bench_script):
    gc = bench_script("gpu_check")
    audio = types.SimpleNamespace(modality="audio", codec=types.SimpleNamespace(sample_rate=16000))
    assert gc.media_rates(audio, (4, 1, 8000), 4, 0.5) == {"audio_real_time_factor": 4.0}  # 4 x 0.5 s in 0.5 s
    video = types.SimpleNamespace(modality="video", codec=types.SimpleNamespace(frames=16))
    assert gc.media_rates(video, (4, 1, 16, 64, 64), 4, 2.0) == {"frames_per_s": 32.0}
    av = types.SimpleNamespace(modality="av", codec=types.SimpleNamespace(frames=16, fps=8.0))
    assert gc.media_rates(av, (4, 1, 131072), 4, 1.0) == {"audio_real_time_factor": 8.0, "frames_per_s": 64.0}
    image = types.SimpleNamespace(modality="image", codec=types.SimpleNamespace())
    assert gc.media_rates(image, (4, 1, 8, 8), 4, 1.0) == {}


@pytest.mark.parametrize("name", ["image", "sounding-digits"])
def test_bundled_row_on_the_cpu(bench_script, name):
    import torch

    gc = bench_script("gpu_check")
    [row] = gc.check_bundled(name, torch.device("cpu"), batch=2, repeats=1)
    assert row["model"] == name and row["batch"] == 2 and row["bundled"]
    assert row["onestep_samples_per_s"] == pytest.approx(2000 / row["onestep_ms"], rel=0.01)
    assert row["train_steps_per_s"] > 0 and row["gflops_per_forward"] > 0
    assert "mfu_train" not in row  # no peak on a CPU
    if name == "sounding-digits":  # 2 s clips of 16 frames
        assert row["frames_per_s"] == pytest.approx(8 * row["audio_real_time_factor"], rel=0.01)
