"""Sounding digits: a handwritten digit bouncing in a 64x64 frame that plays a note each time it hits a wall.

The picture is Moving MNIST with one digit (modalities/video/moving_mnist.py: OpenCV's digits from Debian's
`opencv-doc`, the last 50 of each class held out for the test split), 16 frames at 8 fps = 2 s. The sound is a
16 kHz mono track of the same 2 s: at every wall hit (the exact time the digit's corner reaches 0 or the free
range on either axis, between the first and the last frame) a short plucked note starts whose pitch names the
digit (DIGIT_MIDI: the C major scale from middle C). Clip i is a function of (seed, split, i) alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

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
                 size: int = SIZE, sample_rate: int = SAMPLE_RATE):
        self.video = MovingMNIST(split, num_clips, frames, size, seed, num_digits=1)
        self.split, self.num_clips, self.frames, self.sample_rate = split, int(num_clips), int(frames), int(sample_rate)
        self.samples = round(self.frames / self.fps * self.sample_rate)

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
        digits = self.clip_labels(indices).tolist()
        tracks = [mix_notes(h, DIGIT_MIDI[d], self.samples, self.sample_rate)
                  for h, d in zip(self.hit_times(indices), digits)]
        return torch.from_numpy(np.stack(tracks)).unsqueeze(1)

    def get_clips(self, indices) -> tuple[torch.Tensor, torch.Tensor]:
        """(video [B, 1, T, H, W] in [0, 1], audio [B, 1, samples] in [-1, 1]) of the same clips."""
        return self.video.get_clips(indices), self.get_audio(indices)
