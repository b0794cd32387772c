import math

import torch

from modalities.audio.datasets import make_tones, midi_to_hz
from modalities.audio.pitch import clip_pitch, stable_pitch_share


def test_tones_have_stable_pitch_at_their_note():
    waves, midi = make_tones(6, 8000, 0.5, seed=3)
    share, reports = stable_pitch_share(waves, 8000)
    assert share == 1.0
    for r, m in zip(reports, midi):
        assert abs(12 * math.log2(r.f0 / midi_to_hz(m).item())) < 0.5


def test_noise_silence_and_glide_are_not_stable():
    g = torch.Generator().manual_seed(0)
    assert stable_pitch_share(0.3 * torch.randn(4, 1, 4000, generator=g), 8000)[0] == 0.0
    assert not clip_pitch(torch.zeros(4000), 8000).stable
    t = torch.arange(8000) / 8000
    glide = torch.sin(2 * math.pi * (110 * t + 330 * t**2))  # 110 Hz -> 770 Hz in one second
    r = clip_pitch(glide, 8000)
    assert r.voiced > 0.5 and r.spread > 0.5 and not r.stable
