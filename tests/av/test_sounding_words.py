"""The second sounding-digits setting: the digit's spoken word (from the spoken_digits renders) at every wall hit."""

import numpy as np
import pytest
import torch

from cm_media.errors import UserError
from cm_media.runs.config import load_config
from modalities.av.sounding_digits import CUT_FADE_S, WORD_PEAK, SoundingDigits, mix_words


def test_mix_words_says_the_word_at_each_hit_and_cuts_it_at_the_next():
    rate, word = 1000, np.ones(300, np.float32)  # a 0.3 s "word" at 1 kHz
    track = mix_words(np.array([0.1, 0.25, 0.9]), word * 3, 1000, rate)
    assert track.shape == (1000,) and track.max() == pytest.approx(WORD_PEAK)  # scaled to the notes' peak
    assert np.all(track[:100] == 0) and track[100] == pytest.approx(WORD_PEAK)
    fade = round(CUT_FADE_S * rate)
    assert track[249] == 0 and track[249 - fade + 1] > 0  # the first word fades out to 0 where the second starts
    assert np.all(track[250:550] == pytest.approx(WORD_PEAK)) and np.all(track[550:900] == 0)  # whole, then silence
    assert np.all(track[900:1000 - fade] == pytest.approx(WORD_PEAK)) and track[-1] == 0  # cut by the clip's end
    assert np.all(mix_words(np.array([1.5]), word, 1000, rate) == 0)  # a hit after the clip adds nothing


def test_word_clips_start_a_word_at_every_wall_hit():
    pytest.importorskip("librosa")
    try:
        data = SoundingDigits("train", 16, seed=0, sound="word", small_words=True)
        video, audio = data.get_clips(range(8))
    except UserError as exc:  # the speech packages are missing here (.ci/run installs them)
        pytest.skip(str(exc))
    assert video.shape == (8, 1, 16, 64, 64) and audio.shape == (8, 1, 32000)
    for track, hits in zip(audio[:, 0], data.hit_times(range(8))):
        for t in hits:
            i = int(round(t * 16000))
            if i + 1600 < 32000:  # words start softly (a fricative): loud within 100 ms of each hit
                assert float(track[i:i + 1600].abs().max()) > 0.1
        if len(hits):
            assert float(track[: int(round(hits[0] * 16000))].abs().max()) == 0  # silence before the first
    again = SoundingDigits("train", 16, seed=0, sound="word", small_words=True).get_audio([3])
    assert torch.equal(again[0], audio[3])  # clip i is a function of (seed, split, i)


def test_sound_setting_is_checked_where_the_config_is_read():
    cfg = load_config("configs/experiments/av/sounding_words_ict.yaml", [])
    assert cfg.data.sound == "word"
    with pytest.raises(UserError, match=r"data.sound 'bark' \(note or word\)"):
        load_config("configs/av/sounding_digits_ict.yaml", ["data.sound=bark"])
