"""benchmarks/sounding_video.py's onset offsets: each onset's signed distance in frames to the nearest wall bounce,
on a synthetic clip whose bounces and notes are placed by hand."""

import types

import numpy as np
import pytest
import torch

from modalities.av.sounding_digits import DIGIT_MIDI, mix_notes

pytestmark = pytest.mark.usefixtures("one_thread")

FPS, SR = 8, 16000


def test_onset_offsets_are_signed_frames_to_the_nearest_wall_bounce(bench_script):
    sv = bench_script("sounding_video")
    # a 12 px square: y turns mid-frame at frame 6 (centroid 39.5, 24 px from the edge) and at the wall at frame 13
    y = np.array([10, 14, 18, 22, 26, 30, 34, 30, 26, 22, 18, 14, 10, 6, 10, 14], float)
    frames = np.zeros((16, 64, 64), np.float32)
    for k, top in enumerate(y.astype(int)):
        frames[k, top:top + 12, 30:42] = 1.0
    video = torch.from_numpy(frames)[None, None]  # [1, 1, T, H, W]
    # one note 0.75 frame after the wall bounce, one on the mid-frame turn (7 frames from the wall bounce)
    audio = torch.from_numpy(mix_notes(np.array([13.75 / FPS, 6 / FPS]), DIGIT_MIDI[4], 2 * SR))[None, None]
    cfg = types.SimpleNamespace(codec=types.SimpleNamespace(fps=FPS, sample_rate=SR))
    r = sv.onset_offsets("synthetic", video, audio.float(), torch.tensor([4]), cfg)
    assert r["onsets"] == 2 and r["clips"] == 1
    assert r["within_1_frame"] == 0.5 and r["within_2_frames"] == 0.5 and r["none_within_2"] == 0.5
    assert 0.55 < r["median_offset_frames"] < 0.95  # the detector finds a note within 25 ms (0.2 frame)
    assert r["histogram_edges"][7:9] == [0.5, 1.0] and r["histogram"] == [0] * 7 + [1] + [0] * 4
    assert r["beyond_3_or_no_wall_bounce"] == 1
    # a clip without a wall bounce: every onset counts apart, none within a frame
    still = torch.zeros_like(video)
    still[..., 26:38, 26:38] = 1.0
    r = sv.onset_offsets("still", still, audio.float(), torch.tensor([4]), cfg)
    assert r["within_1_frame"] == 0.0 and r["beyond_3_or_no_wall_bounce"] == 2 and sum(r["histogram"]) == 0
