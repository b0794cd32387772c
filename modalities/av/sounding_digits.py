"""Sounding digits: a handwritten digit bouncing in a 64x64 frame that plays a note each time it hits a wall.

The picture is Moving MNIST with one digit (modalities/video/moving_mnist.py: OpenCV's digits from Debian's
`opencv-doc`, the last 50 of each class held out for the test split), 16 frames at 8 fps = 2 s. The sound is a
16 kHz mono track of the same 2 s: at every wall hit (the exact time the digit's corner reaches 0 or the free
range on either axis, between the first and the last frame) a short plucked note starts whose pitch names the
digit (DIGIT_MIDI: the C major scale from middle C). The second setting, `sound="word"`, says the digit's word
instead: a word rendered by the spoken_digits voices (modalities/audio/spoken_digits.py; the held-out voices for
the test split) starts at every hit and is cut, with a 10 ms fade, where the next hit begins. Clip i is a
function of (seed, split, i) alone.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from cm_media.errors import UserError
from modalities.video.moving_mnist import MovingMNIST

FPS = 8.0
FRAMES = 16
SIZE = 64
SAMPLE_RATE = 16000
# digit -> MIDI note: C4 D4 E4 F4 G4 A4 B4 C5 D5 E5 (261.6 Hz .. 659.3 Hz)
DIGIT_MIDI = (60, 62, 64, 65, 67, 69, 71, 72, 74, 76)
NOTE_SECONDS = 0.3  # length of one note (its decay is about 0.1 s)


def midi_hz(midi: float) -> float:
    """Equal temperament, A4 = MIDI 69 = 440 Hz."""
    return 440.0 * 2.0 ** ((midi - 69) / 12)


def pluck(midi: int, sample_rate: int = SAMPLE_RATE, seconds: float = NOTE_SECONDS) -> np.ndarray:
    """A plucked note [N]: six harmonics at amplitudes 0.6^(h-1), a 5 ms linear attack, exp(-t / 0.1 s) decay,
    peak 0.5. Harmonics above Nyquist are left out."""
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    f0 = midi_hz(midi)
    wave = sum(0.6 ** (h - 1) * np.sin(2 * np.pi * h * f0 * t) for h in range(1, 7) if h * f0 < sample_rate / 2)
    env = np.minimum(t / 0.005, 1.0) * np.exp(-t / 0.1)
    note = wave * env
    return (0.5 * note / np.abs(note).max()).astype(np.float32)


def wall_hits(start: np.ndarray, vel: np.ndarray, room: float, last: float) -> np.ndarray:
    """Times in frames (0, last] at which a corner moving as start + vel * t (unfolded) reaches a wall (a multiple
    of `room`) on either axis: start, vel [2] (y, x). Sorted; a corner hit on both axes at once counts once."""
    times = []
    for p0, v in zip(start, vel):
        if abs(v) < 1e-12:
            continue
        end = p0 + v * last
        lo, hi = min(p0, end), max(p0, end)
        for k in range(math.ceil(lo / room), math.floor(hi / room) + 1):
            t = (k * room - p0) / v
            if 1e-9 < t <= last + 1e-9:
                times.append(t)
    times = np.unique(np.round(np.asarray(times, np.float64), 9))
    return times


SOUNDS = ("note", "word")
WORD_PEAK = 0.5  # every word is scaled to the notes' peak
CUT_FADE_S = 0.01  # a word cut short by the next hit fades out over 10 ms instead of clicking


def mix_words(hits_s: np.ndarray, word: np.ndarray, samples: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A track [samples] that says `word` [N] (trimmed, at `sample_rate`) from each hit time (seconds) until the
    word ends or the next hit begins (then faded out over CUT_FADE_S), at peak WORD_PEAK."""
    track = np.zeros(samples, np.float32)
    word = (WORD_PEAK * word / max(float(np.abs(word).max()), 1e-9)).astype(np.float32)
    starts = [int(round(t * sample_rate)) for t in hits_s]
    fade = max(1, round(CUT_FADE_S * sample_rate))
    for k, i in enumerate(starts):
        if i >= samples:
            continue
        end = min(samples, i + len(word), starts[k + 1] if k + 1 < len(starts) else samples)
        piece = word[: end - i].copy()
        if end - i < len(word):  # cut short: fade out
            m = min(fade, len(piece))
            piece[len(piece) - m:] *= np.linspace(1, 0, m, dtype=np.float32)
        track[i:end] = piece
    return track


@lru_cache(maxsize=4)
def word_bank(split: str, sample_rate: int = SAMPLE_RATE, small: bool = False) -> list[list[np.ndarray]]:
    """Per digit, the trimmed words [N] of every spoken_digits voice setting of `split` at `sample_rate` (rendered
    into the cache on first use; a missing speech package is a one-line error naming it)."""
    from modalities.audio.spoken_digits import SpokenDigits, trim

    words = SpokenDigits(split=split, sample_rate=sample_rate, small=small)
    bank: list[list[np.ndarray]] = [[] for _ in range(10)]
    waves = words.get_waveforms(range(len(words)))  # [N, 1, 16000]
    for wave, label in zip(waves, words.labels.tolist()):
        bank[label].append(trim(wave[0]).numpy())
    if not all(bank):
        raise UserError(f"the spoken_digits {split} renders lack a digit's word; render them again")
    return bank


def mix_notes(hits_s: np.ndarray, midi: int, samples: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A track [samples] with a `pluck(midi)` starting at each hit time (seconds); scaled down if it would clip."""
    track = np.zeros(samples, np.float32)
    note = pluck(midi, sample_rate)
    for t in hits_s:
        i = int(round(t * sample_rate))
        if i >= samples:
            continue
        n = min(len(note), samples - i)
        track[i:i + n] += note[:n]
    peak = float(np.abs(track).max())
    return track * (0.95 / peak) if peak > 0.95 else track


class SoundingDigits:
    """Clips made on demand: `get_clips(indices)` -> (video [B, 1, 16, 64, 64] in [0, 1], audio [B, 1, 32000])."""

    fps = FPS
    sample_rate = SAMPLE_RATE

    def __init__(self, split: str = "train", num_clips: int = 10000, seed: int = 0, frames: int = FRAMES,
                 size: int = SIZE, sample_rate: int = SAMPLE_RATE, sound: str = "note", small_words: bool = False):
        if sound not in SOUNDS:
            raise UserError(f"unknown sounding_digits sound {sound!r} ({' or '.join(SOUNDS)})")
        self.video = MovingMNIST(split, num_clips, frames, size, seed, num_digits=1)
        self.split, self.num_clips, self.frames, self.sample_rate = split, int(num_clips), int(frames), int(sample_rate)
        self.samples = round(self.frames / self.fps * self.sample_rate)
        self.seed, self.sound, self.small_words = int(seed), sound, bool(small_words)

    def __len__(self) -> int:
        return self.num_clips

    @property
    def labels(self) -> torch.Tensor:
        """The digit of every clip [N] (LongTensor)."""
        return self.video.labels[:, 0]

    def clip_labels(self, indices) -> torch.Tensor:
        """The digit of each clip [B]."""
        return self.video.clip_labels(indices)[:, 0]

    def hit_times(self, indices) -> list[np.ndarray]:
        """Per clip, the seconds at which the digit hits a wall between the first and the last frame: the note onsets."""
        _, start, vel = self.video._specs(indices)
        return [wall_hits(start[b, 0], vel[b, 0], self.video.room, self.frames - 1) / self.fps
                for b in range(len(start))]

    def get_audio(self, indices) -> torch.Tensor:
        """Soundtracks [B, 1, samples] in [-1, 1]."""
        indices = [int(i) for i in (indices.tolist() if torch.is_tensor(indices) else indices)]
        digits = self.clip_labels(indices).tolist()
        hits = self.hit_times(indices)
        if self.sound == "note":
            tracks = [mix_notes(h, DIGIT_MIDI[d], self.samples, self.sample_rate) for h, d in zip(hits, digits)]
        else:  # one voice per clip, the same word at every hit
            from modalities.audio.spoken_digits import clip_rng

            bank = word_bank(self.split, self.sample_rate, self.small_words)
            tracks = []
            for i, h, d in zip(indices, hits, digits):
                pick = int(clip_rng(self.seed, "word", self.split, i).integers(len(bank[d])))
                tracks.append(mix_words(h, bank[d][pick], self.samples, self.sample_rate))
        return torch.from_numpy(np.stack(tracks)).unsqueeze(1)

    def get_clips(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(video [B, 1, T, H, W] in [0, 1], audio [B, 1, samples] in [-1, 1]) of the same clips."""
        return self.video.get_clips(indices), self.get_audio(indices)
