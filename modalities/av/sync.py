"""Audio-video synchronization and pitch measures of sounding video (issue 18).

A sounding-digits clip shows one digit bouncing in a 64x64 frame (16 frames at 8 fps) and plays a note of the
digit's pitch each time the digit hits a wall. These measures read that back from the media alone:

- `track_positions`: the digit's intensity-weighted centroid per frame;
- `detect_bounces`: the times at which the centroid's motion reverses along y or x;
- `detect_onsets`: note onsets in the soundtrack (librosa's onset detector on the rise in loudness, with an
  absolute threshold in dB, so silence and hiss give none);
- `sync_scores`: the share of onsets within a tolerance (default one frame) of a bounce and of bounces with an
  onset (onsets counted inside `detectable_window`, where a bounce can show in the frames);
- `pitch_digit_agreement`: the share of clips whose median pYIN pitch is within half a semitone of the digit's
  note;
- `av_sync_report`: all of them over a batch of clips.

Times are seconds from the clip's first frame / first sample, positions pixels (row y, column x). The thresholds
were tuned on real clips (`modalities/av/sounding_digits.py`, 200 train and 200 test clips, seed 0): there the
onsets are within 25 ms of the true wall hits, 99-100% of onsets lie within a frame of a detected bounce and
100% of bounces have an onset, and the pitch matches the digit in every clip (the numbers behind each constant
are next to it; tests/av/test_sync.py checks 8 clips).
"""

from __future__ import annotations

import numpy as np
import torch

# track_positions: each frame is smoothed by a 3x3 mean and its median is subtracted (a generated frame's haze
# and pixel noise would pull the centroid to the frame centre); pixels then weigh by how far they rise above
# FLOOR times the frame's peak (relative, so a faint thin digit, a "1" of peak 0.3 after smoothing, is tracked
# like a bold one). A frame whose peak is below MIN_PEAK has no digit and takes its position from its
# neighbours. With a haze of 0.1 and Gaussian pixel noise of 0.2 added to 200 real train / test clips the sync
# shares stay at 100% / 99% and 97% / 96% (without the smoothing, the median and the relative floor: 47% / 80%).
FLOOR = 0.25
MIN_PEAK = 0.1

# detect_bounces: a turning point counts once the centroid has moved at least HYSTERESIS pixels towards it and
# then at least HYSTERESIS pixels back (a zig-zag filter); at the ends of the clip, where a turn is cut short,
# EDGE_HYSTERESIS pixels from the first frame or to the last frame suffice. Real digits move 3.6 px per frame
# in all. On 200 train / 200 test real clips (see tests/av/test_sync.py), 2.5 / 1.0 px find every wall hit in
# the detectable window but 0 / 4 (all on an axis crossed at under 0.3 px per frame: under 2.5 px of travel
# before or after the hit) and report no false bounce; shifting every frame at random by -1, 0 or 1 px per
# axis, a harsh stand-in for a generated blob's wobble, adds 13-16% false bounces (2.0 / 1.0 px: 46%).
HYSTERESIS = 2.5
EDGE_HYSTERESIS = 1.0
# wall bounces (the strict reading): a turn counts only where the centroid is within WALL_PX pixels of the frame's
# edge on that axis. On 200 real test clips every turn lies 12.4-16.3 px from an edge (a 28 px digit touching the
# wall); of the bundled shared-noise model's one-step clips' turns, 33% do (the rest are mid-frame wobble: 8.5
# turns per clip, 2.8 of them at a wall, against 1.8 real)
WALL_PX = 20.0
_EPS = 1e-6  # slack on the pixel thresholds for centroids that are whole pixels apart up to rounding

# detect_onsets: librosa's onset detector on the track's loudness. onset_strength with lag ONSET_LAG on the frame
# level in dB (RMS of 32 ms windows every 8 ms, floored at SILENCE_RMS) is the rise in loudness over 24 ms;
# onset_detect picks its peaks that stand ONSET_DELTA dB above their mean over 100 ms either side, at most one
# per ONSET_WAIT_S, and keeps those whose next 32 ms reach within AUDIBLE_DB of the clip's loudest frame.
# Stationary noise at any level rises by under 1.5 dB in 24 ms, silence by nothing; a note from silence rises by
# 40-60 dB, a repeated note over the previous one's ringing by 8-12 dB on real clips (the log-mel spectral
# flux, librosa's default, averages over 64 bands of which such a repeat changes a few: 5-6 dB, within 2 dB of
# hiss); the abrupt end of a note (real clips cut each note at 0.3 s, 26 dB down) only falls.
ONSET_N_FFT = 512
ONSET_HOP = 128
ONSET_LAG = 3
ONSET_DELTA = 4.0
ONSET_WAIT_S = 0.05
AUDIBLE_DB = -30.0
SILENCE_RMS = 1e-3  # -60 dBFS
ONSET_SHIFT_S = 0.010  # added to the peak times: the RMS window sees a note start 10 ms early on real clips

# pitch_digit_agreement: pYIN searches the digits' notes +- one octave and a semitone (so octave errors are
# seen) on a quarter-semitone grid (4.5x faster than librosa's 0.1; the grid starts an octave and a semitone
# below a MIDI note, so every MIDI note lies on it; off-grid pitches are read to within 1/8 semitone)
PITCH_MARGIN_SEMITONES = 13.0
PITCH_RESOLUTION = 0.25
PITCH_AUDIBLE_DB = -20.0
PITCH_TOLERANCE_SEMITONES = 0.5


def _numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _box3(frames: np.ndarray) -> np.ndarray:
    """Mean over each pixel's 3x3 neighbourhood inside the frame, of frames [T, H, W]."""
    padded = np.pad(frames, ((0, 0), (1, 1), (1, 1)))
    ones = np.pad(np.ones(frames.shape[1:]), 1)
    h, w = frames.shape[1:]
    total = sum(padded[:, i:i + h, j:j + w] for i in range(3) for j in range(3))
    count = sum(ones[i:i + h, j:j + w] for i in range(3) for j in range(3))
    return total / count


def track_positions(video, floor: float = FLOOR, min_peak: float = MIN_PEAK) -> np.ndarray:
    """Centroid (y, x) in pixels of one digit per frame: video [T, H, W] in [0, 1] (numpy or torch; a leading
    channel axis [1, T, H, W] is accepted) -> positions [T, 2] float64.

    Each frame is smoothed by a 3x3 mean and its median is subtracted; each pixel then weighs
    max(value - floor * peak, 0), peak the frame's largest value. A frame whose peak is below `min_peak`
    (empty, dark, or all haze) gets its position by linear interpolation between the nearest frames that have
    a digit (held at the ends); when no frame has one, every frame gets the frame centre, which never
    bounces."""
    v = _numpy(video).astype(np.float64)
    if v.ndim == 4 and v.shape[0] == 1:
        v = v[0]
    if v.ndim != 3:
        raise ValueError(f"track_positions expects a clip [T, H, W], got shape {tuple(v.shape)}")
    t, h, w = v.shape
    v = _box3(np.nan_to_num(v, nan=0.0))
    v = v - np.median(v.reshape(t, -1), axis=1)[:, None, None]
    peak = v.reshape(t, -1).max(axis=1)
    weight = np.clip(v - floor * peak[:, None, None], 0.0, None)
    mass = weight.sum(axis=(1, 2))
    ys, xs = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        y = (weight.sum(axis=2) * ys).sum(axis=1) / mass
        x = (weight.sum(axis=1) * xs).sum(axis=1) / mass
    pos = np.stack([y, x], axis=1)
    ok = (peak >= min_peak) & (mass > 0)
    if not ok.any():
        return np.tile([(h - 1) / 2, (w - 1) / 2], (t, 1)).astype(np.float64)
    frames = np.arange(t)
    for a in range(2):
        pos[:, a] = np.interp(frames, frames[ok], pos[ok, a])
    return pos


def _first_move(p, i, lo, hi, hysteresis, edge, turns):
    """Before the track first moves by `hysteresis`: follow the running minimum and maximum plateaus (lo, hi);
    once frame i leaves one of them by `hysteresis`, that extreme is a turn if the track reached it by `edge`
    from the first frame. Returns (the new direction, the new extreme's plateau), or None while not moved."""
    for run, sign in ((lo, -1), (hi, 1)):
        if sign * (p[i] - p[run[1]]) > 0:
            run[:] = [i, i]
        elif p[i] == p[run[1]] and run[1] == i - 1:
            run[1] = i
    for run, sign in ((lo, -1), (hi, 1)):  # sign: the side of the extreme
        if sign * (p[run[0]] - p[i]) >= hysteresis - _EPS:  # left the extreme by `hysteresis`
            if sign * (p[run[0]] - p[0]) >= edge - _EPS:  # ... after reaching it from the first frame
                turns.append((run[0] + run[1]) / 2)
            return -sign, [i, i]
    return None


def turning_points(p: np.ndarray, hysteresis: float = HYSTERESIS, edge: float = EDGE_HYSTERESIS) -> list[float]:
    """Frame indices where the 1-D track p [T] turns (a zig-zag filter): a local extreme that the track reached
    after moving at least `hysteresis` towards it from the previous turn (`edge` from the first frame) and then
    left by at least `hysteresis` (`edge` when the track ends first). A plateau of equal frames turns at its
    middle (k + 0.5 for two frames). The first and last frames are never turning points (the motion before or
    after them is unseen)."""
    p = np.asarray(p, dtype=np.float64)
    turns: list[float] = []
    direction = 0  # +1 rising, -1 falling, 0 not yet moved by `hysteresis` from the first frame
    lo = [0, 0]  # first and last frame of the running minimum (a plateau), before the first move
    hi = [0, 0]  # the same for the running maximum
    ext = [0, 0]  # the plateau of the running extreme in `direction`
    for i in range(1, len(p)):
        if direction == 0:
            direction, ext = _first_move(p, i, lo, hi, hysteresis, edge, turns) or (0, ext)
            continue
        if direction * (p[i] - p[ext[1]]) > 0:  # a new extreme
            ext = [i, i]
        elif p[i] == p[ext[1]] and ext[1] == i - 1:  # the extreme goes on as a plateau
            ext[1] = i
        elif direction * (p[ext[1]] - p[i]) >= hysteresis - _EPS:  # turned
            turns.append((ext[0] + ext[1]) / 2)
            direction, ext = -direction, [i, i]
    if direction and direction * (p[ext[1]] - p[-1]) >= edge - _EPS:  # turned in the last frames by less than `hysteresis`
        turns.append((ext[0] + ext[1]) / 2)
    return [k for k in turns if 0 < k < len(p) - 1]


def detect_bounces(positions, fps: float, hysteresis: float = HYSTERESIS, edge: float = EDGE_HYSTERESIS,
                   wall: tuple[float, int] | None = None) -> np.ndarray:
    """Bounce times in seconds, sorted, from a track positions [T, 2] (y, x pixels per frame at `fps`): every
    frame k (1..T-2) at which the motion along y or along x reverses (`turning_points` with `hysteresis` and
    `edge` pixels; a plateau of two equal frames gives k + 0.5), at time k / fps. A turn on both axes in the same frame
    counts once. With `wall` = (margin px, frame size px) only turns within the margin of an edge count."""
    pos = _numpy(positions).astype(np.float64)
    if pos.ndim != 2 or pos.shape[1] != 2:
        raise ValueError(f"detect_bounces expects positions [T, 2], got shape {tuple(pos.shape)}")
    found = set()
    for a in range(2):
        for k in turning_points(pos[:, a], hysteresis, edge):
            p = np.interp(k, np.arange(len(pos)), pos[:, a])
            if wall is None or min(p, wall[1] - 1 - p) <= wall[0]:
                found.add(k)
    return np.asarray(sorted(found), dtype=np.float64) / float(fps)


def onset_envelope(audio, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """The onset strength (librosa.onset.onset_strength: the rise in dB over ONSET_LAG frames of the frame
    level) and the frame RMS, both [frames] at ONSET_HOP samples per frame (frame f centred on sample
    f * ONSET_HOP), of a mono track audio [N] (or [1, N]) at `sr` Hz."""
    import librosa

    y = _numpy(audio).astype(np.float32).reshape(-1)
    if y.size < ONSET_N_FFT:
        y = np.pad(y, (0, ONSET_N_FFT - y.size))
    # reflected at the ends, so a sound already playing at the first sample does not seem to start there
    rms = librosa.feature.rms(y=y, frame_length=ONSET_N_FFT, hop_length=ONSET_HOP, center=True,
                              pad_mode="reflect")[0]
    level = 20.0 * np.log10(np.maximum(rms, SILENCE_RMS))[None]  # [1, frames]: a one-band "spectrogram" in dB
    env = librosa.onset.onset_strength(S=level, sr=sr, hop_length=ONSET_HOP, lag=ONSET_LAG, max_size=1,
                                       center=False)
    return env[: rms.size], rms


def detect_onsets(audio, sr: int, delta: float = ONSET_DELTA, audible_db: float = AUDIBLE_DB,
                  silence_rms: float = SILENCE_RMS) -> np.ndarray:
    """Note onsets in seconds, sorted, of a mono track audio [N] (or [1, N]) in [-1, 1] at `sr` Hz.

    librosa.onset.onset_detect on `onset_envelope` without normalisation (so silence and steady hiss at any
    level stay below threshold): a peak is the maximum of the envelope over the 30 ms before it and the frame
    after it, at least `delta` dB above its mean over 100 ms either side, at least ONSET_WAIT_S after the
    previous onset; it counts when the RMS of one of its next four frames is above `silence_rms` and within
    `audible_db` dB of the clip's loudest frame. Times are frame centres (ONSET_HOP / sr = 8 ms apart at 16 kHz)
    plus ONSET_SHIFT_S."""
    import librosa

    env, rms = onset_envelope(audio, sr)
    if rms.size == 0 or float(rms.max()) < silence_rms:
        return np.zeros(0)
    frames = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=ONSET_HOP, units="frames",
                                        normalize=False, backtrack=False, delta=delta,
                                        wait=max(1, round(ONSET_WAIT_S * sr / ONSET_HOP)),
                                        pre_max=round(0.03 * sr / ONSET_HOP), post_max=1,
                                        pre_avg=round(0.1 * sr / ONSET_HOP), post_avg=round(0.1 * sr / ONSET_HOP) + 1)
    floor = max(silence_rms, float(rms.max()) * 10 ** (audible_db / 20))
    keep = np.asarray([f for f in frames if rms[f:f + 4].max() >= floor], dtype=np.int64)
    times = librosa.frames_to_time(keep, sr=sr, hop_length=ONSET_HOP) + ONSET_SHIFT_S
    return np.clip(times, 0.0, None).astype(np.float64)


def sync_scores(onsets: list[np.ndarray], bounces: list[np.ndarray], tolerance_s: float = 0.125,
                window: tuple[float, float] | None = None) -> dict:
    """Agreement of onset times and bounce times (seconds), one array of each per clip, pooled over clips.

    - onsets_on_bounce: share of onsets with a bounce of the same clip within `tolerance_s` (nan: no onsets);
    - bounces_with_onset: share of bounces with an onset of the same clip within `tolerance_s` (nan: no bounces);
    - onsets, bounces: counts; onsets_matched, bounces_matched: the numerators.

    `window` (lo, hi) seconds: only onsets in [lo, hi] are counted in onsets_on_bounce (the others in
    `onsets_outside`), so an onset whose bounce a track of the frames cannot show (too near the first or the
    last frame, see `detectable_window`) does not count against a clip; every bounce is counted, and matched
    against every onset. Matching is not one-to-one: one onset can stand for two
    bounces a few ms apart (the corner of the frame) and the other way round."""
    if len(onsets) != len(bounces):
        raise ValueError(f"sync_scores needs one onset list and one bounce list per clip, got {len(onsets)} and "
                         f"{len(bounces)}")
    n_on = n_on_ok = n_b = n_b_ok = outside = 0
    for on, bo in zip(onsets, bounces):
        on = np.asarray(on, dtype=np.float64).reshape(-1)
        bo = np.asarray(bo, dtype=np.float64).reshape(-1)
        # the tolerance gets a nanosecond of slack so a hand-made pair exactly one frame apart counts
        near = np.abs(on[:, None] - bo[None, :]) <= tolerance_s + 1e-9  # [onsets, bounces]
        counted = np.ones(len(on), dtype=bool)
        if window is not None:
            counted = (on >= window[0]) & (on <= window[1])
            outside += int((~counted).sum())
        n_on += int(counted.sum())
        n_b += len(bo)
        n_on_ok += int((near.any(axis=1) & counted).sum())
        n_b_ok += int(near.any(axis=0).sum())
    return {
        "onsets_on_bounce": n_on_ok / n_on if n_on else float("nan"),
        "bounces_with_onset": n_b_ok / n_b if n_b else float("nan"),
        "onsets": n_on, "bounces": n_b, "onsets_matched": n_on_ok, "bounces_matched": n_b_ok,
        "onsets_outside": outside, "clips": len(onsets),
    }


def clip_pitches(audio, sr: int, fmin: float, fmax: float) -> np.ndarray:
    """Median f0 in Hz of each clip audio [B, N] (or [B, 1, N], mono at `sr` Hz) -> [B] (nan where no frame
    is voiced): librosa.pyin searched in [fmin, fmax] on a grid of PITCH_RESOLUTION semitones from fmin, 64 ms
    frames every 16 ms (at 16 kHz), over its voiced frames among the audible ones (RMS within PITCH_AUDIBLE_DB
    of the clip's loudest frame, as modalities/audio/pitch.py: clip_pitch)."""
    import librosa

    a = _numpy(audio).astype(np.float64)
    a = a.reshape(a.shape[0], -1)
    frame = 2 ** int(np.ceil(np.log2(sr * 0.064)))
    hop = frame // 4
    out = np.full(a.shape[0], np.nan)
    for i, y in enumerate(a):
        if y.size < frame:
            y = np.pad(y, (0, frame - y.size))
        rms = librosa.feature.rms(y=y, frame_length=frame, hop_length=hop, center=True)[0]
        if rms.max() <= 1e-6:
            continue
        f0, voiced, _ = librosa.pyin(y, fmin=fmin, fmax=min(fmax, sr / 2 - 1), sr=sr, frame_length=frame,
                                     hop_length=hop, center=True, resolution=PITCH_RESOLUTION)
        n = min(len(f0), len(rms))
        audible = 20 * np.log10(np.maximum(rms[:n], 1e-12) / rms.max()) > PITCH_AUDIBLE_DB
        ok = audible & voiced[:n] & np.isfinite(f0[:n])
        if ok.any():
            out[i] = float(np.median(f0[:n][ok]))
    return out


def pitch_digit_agreement(audio, digits, sr: int, digit_midi) -> float:
    """Share of clips audio [B, N] (or [B, 1, N], mono, at `sr` Hz) whose pitch (`clip_pitches`) lies within
    half a semitone of MIDI note digit_midi[digit] of the clip's digit (digits [B] ints; digit_midi a sequence
    or mapping digit -> MIDI number). pYIN searches the same range for every clip, the digits' lowest note
    minus to the highest plus PITCH_MARGIN_SEMITONES, so the label does not steer the estimate and octave
    errors count as misses. A clip with no pitch misses; nan for an empty batch."""
    d = [int(x) for x in _numpy(digits).reshape(-1)]
    a = _numpy(audio)
    if a.shape[0] != len(d):
        raise ValueError(f"pitch_digit_agreement: {a.shape[0]} clips but {len(d)} digits")
    if not d:
        return float("nan")
    notes = np.asarray([float(digit_midi[k]) for k in d])
    every = [float(digit_midi[k]) for k in (digit_midi.keys() if hasattr(digit_midi, "keys")
                                            else range(len(digit_midi)))]
    hz = lambda m: 440.0 * 2.0 ** ((m - 69.0) / 12.0)  # noqa: E731
    f0 = clip_pitches(a, sr, hz(min(every) - PITCH_MARGIN_SEMITONES),
                      min(hz(max(every) + PITCH_MARGIN_SEMITONES), sr / 2 - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        err = 12.0 * np.log2(f0 / hz(notes))
    return float(np.mean(np.abs(np.nan_to_num(err, nan=np.inf)) <= PITCH_TOLERANCE_SEMITONES))


def detectable_window(frames: int, fps: float) -> tuple[float, float]:
    """Seconds (lo, hi) in which a reversal can be seen in `frames` frames: its nearest frame is one of 1..T-2,
    so it lies in (0.5, T - 1.5) frames."""
    return 1.0 / fps, (frames - 2.0) / fps


def av_sync_report(video, audio, digits, fps: float, sr: int, digit_midi, tolerance_s: float | None = None,
                   pitch: bool = True, per_clip: bool = False) -> dict:
    """All measures over a batch: video [B, 1, T, H, W] in [0, 1], audio [B, 1, N] in [-1, 1] (mono; channels
    are averaged), digits [B], frames at `fps`, audio at `sr` Hz, digit_midi digit -> MIDI.

    Returns `sync_scores` (tolerance one frame, 1 / fps, unless given; onsets counted inside
    `detectable_window`), the strict `wall_onsets_on_bounce`, `wall_bounces_with_onset` and `wall_bounces` of
    bounces within WALL_PX of an edge (a wobbling generated digit turns mid-frame too), plus `pitch_digit_agreement` (skipped, nan, with pitch=False: pYIN takes about 0.05 s
    a clip), `tolerance_s` and `window_s` [lo, hi]; with per_clip=True also `bounce_times`, `wall_bounce_times`
    and `onset_times`, a list of float lists per clip. Every value is a plain int, float or list, so the dict goes
    to JSON as is."""
    v = _numpy(video)
    a = _numpy(audio)
    if v.ndim != 5:
        raise ValueError(f"av_sync_report expects video [B, 1, T, H, W], got shape {tuple(v.shape)}")
    if a.ndim == 2:
        a = a[:, None]
    if a.ndim != 3 or a.shape[0] != v.shape[0]:
        raise ValueError(f"av_sync_report expects audio [B, 1, N] for {v.shape[0]} clips, got {tuple(a.shape)}")
    mono = a.mean(axis=1)  # [B, N]
    grey = v.mean(axis=1)  # [B, T, H, W]
    tol = 1.0 / fps if tolerance_s is None else float(tolerance_s)
    window = detectable_window(v.shape[2], fps)
    tracks = [track_positions(clip) for clip in grey]
    bounces = [detect_bounces(pos, fps) for pos in tracks]
    onsets = [detect_onsets(track, sr) for track in mono]
    out = sync_scores(onsets, bounces, tol, window)
    walls = [detect_bounces(pos, fps, wall=(WALL_PX, grey.shape[-1])) for pos in tracks]
    strict = sync_scores(onsets, walls, tol, window)
    out.update({f"wall_{k}": strict[k] for k in ("onsets_on_bounce", "bounces_with_onset", "bounces")})
    out["pitch_digit_agreement"] = pitch_digit_agreement(mono, digits, sr, digit_midi) if pitch else float("nan")
    out.update(tolerance_s=tol, window_s=[float(window[0]), float(window[1])])
    if per_clip:
        out.update(bounce_times=[[float(t) for t in b] for b in bounces],
                   wall_bounce_times=[[float(t) for t in b] for b in walls],
                   onset_times=[[float(t) for t in o] for o in onsets])
    return out


__all__ = ["av_sync_report", "clip_pitches", "detect_bounces", "detect_onsets", "detectable_window",
           "onset_envelope", "pitch_digit_agreement", "sync_scores", "track_positions", "turning_points"]
