"""Sounding-video measures (modalities/av/sync.py): tracking, bounces, onsets, sync shares and pitch agreement
on synthetic media with known answers, and on real sounding-digits clips (which need Debian's opencv-doc)."""

import json
import math

import numpy as np
import pytest
import torch

from modalities.av import sync
from modalities.video import moving_mnist as mm

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SR = 16000
FPS = 8.0
MIDI = (60, 62, 64, 65, 67, 69, 71, 72, 74, 76)  # digit -> MIDI, as the sounding-digits data
HAVE_DIGITS = mm.find_debian_file(mm.DIGITS_PACKAGE, ["digits.png", "digits.png.gz"], mm.DIGITS_CANDIDATES) is not None
needs_digits = pytest.mark.skipif(not HAVE_DIGITS, reason="Debian package opencv-doc is not installed")


def note(midi: float, seconds: float = 0.3, sr: int = SR) -> np.ndarray:
    """A plucked note: four harmonics, a 5 ms attack, a 0.1 s decay, peak 0.5."""
    t = np.arange(round(seconds * sr)) / sr
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    wave = sum(0.6 ** (h - 1) * np.sin(2 * np.pi * h * f0 * t) for h in range(1, 5))
    wave = wave * np.minimum(t / 0.005, 1.0) * np.exp(-t / 0.1)
    return 0.5 * wave / np.abs(wave).max()


def track(onsets, midi=64, seconds=2.0, sr=SR, sound=note) -> np.ndarray:
    y = np.zeros(round(seconds * sr))
    for t in onsets:
        s = sound(midi)
        i = round(t * sr)
        n = min(len(s), len(y) - i)
        y[i:i + n] += s[:n]
    return y.astype(np.float32)


def click(_midi=None, sr=SR) -> np.ndarray:
    """A 10 ms burst of decaying noise."""
    rng = np.random.default_rng(1)
    n = round(0.01 * sr)
    return 0.8 * rng.uniform(-1, 1, n) * np.exp(-np.arange(n) / (0.003 * sr))


def square_clip(corners: np.ndarray, size: int = 64, side: int = 12) -> np.ndarray:
    """Frames [T, H, W]: a bright square with its top-left corner at the rounded (y, x) of each frame."""
    frames = np.zeros((len(corners), size, size), np.float32)
    for k, (y, x) in enumerate(np.rint(corners).astype(int)):
        frames[k, y:y + side, x:x + side] = 1.0
    return frames


# --- tracking ---------------------------------------------------------------------------------------------------

def test_track_positions_centroid_and_empty_frames():
    corners = np.array([[10, 20], [14, 24], [18, 28], [22, 32]], float)
    frames = square_clip(corners, side=12)
    frames[2] = 0.0  # a dark frame: interpolated from its neighbours
    pos = sync.track_positions(torch.from_numpy(frames))
    assert pos.shape == (4, 2)
    expect = corners + 5.5  # centre of a 12 px square
    np.testing.assert_allclose(pos, expect, atol=1e-6)
    # haze over the whole frame does not pull the centroid to the centre
    hazy = square_clip(corners) * 0.8 + 0.15
    np.testing.assert_allclose(sync.track_positions(hazy), expect, atol=0.3)
    # a channel axis is accepted; a clip without any digit sits still at the frame centre
    np.testing.assert_allclose(sync.track_positions(frames[None])[0], expect[0], atol=1e-6)
    np.testing.assert_allclose(sync.track_positions(np.zeros((5, 64, 64))), np.full((5, 2), 31.5))


# --- bounces ----------------------------------------------------------------------------------------------------

def test_bounces_of_a_known_zigzag_are_exact():
    y = np.array([10, 14, 18, 22, 18, 14, 10, 6, 10, 14, 18, 22, 26, 30, 34, 38], float)  # turns at 3 and 7
    x = np.array([40, 43, 46, 49, 52, 55, 52, 49, 46, 43, 40, 37, 34, 31, 28, 25], float)  # turns at 5
    times = sync.detect_bounces(np.stack([y, x], 1), FPS)
    np.testing.assert_array_equal(times, np.array([3, 5, 7]) / FPS)
    # the same trajectory drawn as frames and tracked
    frames = square_clip(np.stack([y, x], 1), side=10)
    np.testing.assert_array_equal(sync.detect_bounces(sync.track_positions(frames), FPS), np.array([3, 5, 7]) / FPS)


def test_wall_bounces_keep_only_turns_near_an_edge():
    y = np.array([30, 34, 38, 34, 30, 26, 22, 18, 14, 18, 22], float)  # turns at 38 (frame 2) and 14 (frame 8)
    pos = np.stack([y, np.full(11, 32.0)], 1)
    np.testing.assert_array_equal(sync.detect_bounces(pos, FPS), [2 / FPS, 8 / FPS])
    np.testing.assert_array_equal(sync.detect_bounces(pos, FPS, wall=(20.0, 64)), [8 / FPS])  # 38: 25 px from 63
    np.testing.assert_array_equal(sync.detect_bounces(pos, FPS, wall=(25.0, 64)), [2 / FPS, 8 / FPS])
    np.testing.assert_array_equal(sync.detect_bounces(pos, FPS, wall=(13.9, 64)), [])


def test_bounce_edge_cases():
    # a plateau of two equal frames turns between them; a turn on both axes in one frame counts once
    y = np.array([10, 14, 18, 21, 21, 18, 14, 10], float)
    x = np.array([30, 26, 22, 18, 14, 18, 22, 26], float)
    np.testing.assert_array_equal(sync.detect_bounces(np.stack([y, x], 1), FPS), np.array([3.5, 4]) / FPS)
    same = np.stack([np.array([1, 5, 9, 5, 1], float)] * 2, 1)
    np.testing.assert_array_equal(sync.detect_bounces(same, FPS), [2 / FPS])
    # jitter within the dead-band never turns; the first and last frames never count
    rng = np.random.default_rng(0)
    still = 30 + rng.uniform(-0.45, 0.45, (16, 2))
    assert sync.detect_bounces(still, FPS).size == 0
    moving = np.stack([np.arange(16) * 3.6 + rng.uniform(-0.45, 0.45, 16), np.full(16, 20.0)], 1)
    assert sync.detect_bounces(moving, FPS).size == 0
    wobble = np.stack([np.array([20, 22, 20, 22.2, 20, 21, 20, 20.5], float), np.full(8, 20.0)], 1)
    assert sync.detect_bounces(wobble, FPS).size == 0  # 2.2 px back and forth inside the clip: under 2.5 px
    edge = np.stack([np.array([20, 24, 20, 16, 12], float), np.array([5, 9, 13, 17, 13], float)], 1)
    np.testing.assert_array_equal(sync.detect_bounces(edge, FPS), [1 / FPS, 3 / FPS])
    # at the ends of the clip 1 px of approach (or of retreat) is enough, less is not
    y = np.array([20, 21, 17, 13, 9, 13, 17, 21, 22], float)
    np.testing.assert_array_equal(sync.detect_bounces(np.stack([y, np.zeros(9)], 1), FPS), [1 / FPS, 4 / FPS])
    y = np.array([20, 20.5, 17, 13, 9, 13, 17, 21, 20.5], float)
    np.testing.assert_array_equal(sync.detect_bounces(np.stack([y, np.zeros(9)], 1), FPS), [4 / FPS])
    # a turn of 2 px inside the clip is not a bounce, but one of 2.5 px is
    y = np.array([10, 14, 18, 16, 18, 22, 26, 23.5, 27], float)
    np.testing.assert_array_equal(sync.detect_bounces(np.stack([y, np.zeros(9)], 1), FPS), [6 / FPS, 7 / FPS])
    with pytest.raises(ValueError):
        sync.detect_bounces(np.zeros((5, 3)), FPS)


# --- onsets -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("sound", [note, click], ids=["notes", "clicks"])
def test_onsets_of_a_synthetic_track(sound):
    truth = np.array([0.1, 0.45, 0.62, 1.3, 1.85])  # 0.45 -> 0.62: a repeat over the previous note's ringing
    found = sync.detect_onsets(track(truth, sound=sound), SR)
    assert len(found) == len(truth), found
    assert np.abs(found - truth).max() <= 0.02


def test_onsets_ignore_level_and_hiss():
    truth = np.array([0.3, 1.1])
    rng = np.random.default_rng(0)
    quiet = track(truth) * 0.05 + rng.normal(0, 3e-4, 32000).astype(np.float32)
    found = sync.detect_onsets(torch.from_numpy(quiet)[None], SR)
    assert len(found) == 2 and np.abs(found - truth).max() <= 0.02
    assert sync.detect_onsets(np.zeros(32000), SR).size == 0
    assert sync.detect_onsets(np.zeros(100), SR).size == 0
    for level in (1e-3, 0.01, 0.1):
        assert sync.detect_onsets(rng.normal(0, level, 32000), SR).size == 0, level
    # a steady tone is not an onset after it starts
    assert sync.detect_onsets(0.3 * np.sin(2 * np.pi * 440 * np.arange(32000) / SR), SR).size <= 1


# --- scores -----------------------------------------------------------------------------------------------------

def test_sync_scores_exact_shares():
    onsets = [np.array([0.5, 1.0]), np.array([0.25]), np.array([1.5, 1.9])]
    bounces = [np.array([0.55, 1.5]), np.array([0.375]), np.array([])]
    r = sync.sync_scores(onsets, bounces, tolerance_s=0.125)
    # onsets: 0.5 (0.55) yes, 1.0 no, 0.25 (0.375, exactly one frame) yes, 1.5 and 1.9 (no bounces) no
    assert (r["onsets"], r["onsets_matched"], r["bounces"], r["bounces_matched"]) == (5, 2, 3, 2)
    assert r["onsets_on_bounce"] == pytest.approx(2 / 5) and r["bounces_with_onset"] == pytest.approx(2 / 3)
    assert r["clips"] == 3 and r["onsets_outside"] == 0
    # one onset can stand for two bounces close together, and two onsets for one bounce
    r = sync.sync_scores([np.array([1.0, 1.05])], [np.array([0.98, 1.02])])
    assert r["onsets_on_bounce"] == 1.0 and r["bounces_with_onset"] == 1.0
    # a window leaves onsets out of the count but not out of the matching
    r = sync.sync_scores([np.array([0.05, 0.8])], [np.array([0.1, 0.8])], 0.125, window=(0.125, 1.75))
    assert (r["onsets"], r["onsets_matched"], r["onsets_outside"], r["bounces_matched"]) == (1, 1, 1, 2)


def test_sync_scores_empty_sides():
    r = sync.sync_scores([np.array([]), np.array([])], [np.array([0.5]), np.array([])])
    assert math.isnan(r["onsets_on_bounce"]) and r["bounces_with_onset"] == 0.0
    r = sync.sync_scores([np.array([0.5, 1.0])], [np.array([])])
    assert r["onsets_on_bounce"] == 0.0 and math.isnan(r["bounces_with_onset"])
    r = sync.sync_scores([], [])
    assert math.isnan(r["onsets_on_bounce"]) and math.isnan(r["bounces_with_onset"]) and r["clips"] == 0
    with pytest.raises(ValueError):
        sync.sync_scores([np.array([1.0])], [])


# --- pitch ------------------------------------------------------------------------------------------------------

def test_pitch_digit_agreement_on_pure_notes():
    digits = np.array([0, 3, 6, 9])
    audio = np.stack([track([0.2, 0.9], MIDI[d], seconds=1.2) for d in digits])
    assert sync.pitch_digit_agreement(torch.from_numpy(audio)[:, None], torch.from_numpy(digits), SR, MIDI) == 1.0
    assert sync.pitch_digit_agreement(audio, (digits + 1) % 10, SR, MIDI) == 0.0
    assert sync.pitch_digit_agreement(audio, digits, SR, dict(enumerate(MIDI))) == 1.0
    silent = np.zeros((2, 8000))
    assert sync.pitch_digit_agreement(silent, [0, 1], SR, MIDI) == 0.0
    assert math.isnan(sync.pitch_digit_agreement(np.zeros((0, 8000)), [], SR, MIDI))


# --- the whole report -------------------------------------------------------------------------------------------

def test_av_sync_report_on_a_synthetic_sounding_clip():
    y = np.array([10, 14, 18, 22, 26, 30, 34, 30, 26, 22, 18, 14, 10, 6, 10, 14], float)  # turns at 6, 13
    x = np.full(16, 30.0)
    video = torch.from_numpy(square_clip(np.stack([y, x], 1), side=12))[None, None]  # [1, 1, T, H, W]
    synced = torch.from_numpy(track([6 / FPS, 13 / FPS], MIDI[4]))[None, None]
    off = torch.from_numpy(track([0.3, 1.2], MIDI[4]))[None, None]
    r = sync.av_sync_report(torch.cat([video, video]), torch.cat([synced, off]), [4, 4], FPS, SR, MIDI,
                            per_clip=True)
    assert r["bounce_times"][0] == [6 / FPS, 13 / FPS]
    assert r["wall_bounce_times"][0] == [13 / FPS]  # the turn at y = 6 only
    assert r["bounces"] == 4 and r["onsets"] == 4
    assert r["onsets_on_bounce"] == 0.5 and r["bounces_with_onset"] == 0.5
    # strict reading: the turn at y = 34 is mid-frame (29 px from either edge), the one at y = 6 at the wall
    assert r["wall_bounces"] == 2 and r["wall_bounces_with_onset"] == 0.5 and r["wall_onsets_on_bounce"] == 0.25
    assert r["pitch_digit_agreement"] == 1.0 and r["tolerance_s"] == 1 / FPS
    assert r["window_s"] == list(sync.detectable_window(16, FPS))
    json.dumps(r)  # plain values only
    assert "bounce_times" not in sync.av_sync_report(video, synced, [4], FPS, SR, MIDI, pitch=False)


# --- real clips -------------------------------------------------------------------------------------------------

@needs_digits
def test_real_clips_are_in_sync():
    """On real clips the detectors find the true wall hits (200 clips: onsets_on_bounce 0.99, bounces_with_onset
    1.00, pitch 1.00; see modalities/av/sync.py)."""
    from modalities.av.sounding_digits import DIGIT_MIDI, SoundingDigits

    data = SoundingDigits("train", num_clips=8, seed=0)
    idx = list(range(8))
    video, audio = data.get_clips(idx)
    r = sync.av_sync_report(video, audio, data.clip_labels(idx), data.fps, data.sample_rate, DIGIT_MIDI,
                            per_clip=True)
    assert r["onsets"] >= 8 and r["bounces"] >= 8
    assert r["onsets_on_bounce"] >= 0.9 and r["bounces_with_onset"] >= 0.9
    assert r["wall_bounces"] == r["bounces"]  # a real digit turns only at a wall
    assert r["pitch_digit_agreement"] == 1.0
    # every detected onset is a true wall hit, to within 20 ms, and every detected bounce one within a frame
    for hits, onsets, bounces in zip(data.hit_times(idx), r["onset_times"], r["bounce_times"]):
        for t in onsets:
            assert np.abs(hits - t).min() <= 0.02
        for t in bounces:
            assert np.abs(hits - t).min() <= 1 / data.fps
