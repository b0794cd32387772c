"""The independent word judge (PocketSphinx with a ten-word grammar): it hears real rendered words, fails on
noise and silence, and rejects bad input."""

import shutil

import pytest
import torch

from cm_media.errors import UserError
from modalities.audio import recognizer as rec
from modalities.audio import spoken_digits as sd

pytest.importorskip("pocketsphinx")
if not (shutil.which("flite") and shutil.which("espeak-ng")):
    pytest.skip("needs the Debian packages flite, espeak-ng", allow_module_level=True)

TWO = ["flite_kal16_p1_s1", "espeak-ng_en+m1_p1.4_s0.85"]  # fast: no festival start-up


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    """20 real rendered words (two voice settings x ten words): (media [20, 1, 16000], labels [20])."""
    ds = sd.SpokenDigits(sd.render_spoken_digits(tmp_path_factory.mktemp("digits"), limit_voices=TWO).parent, "all")
    return ds.get_waveforms(torch.arange(len(ds))), ds.labels


@pytest.fixture(scope="module")
def judge():
    return rec.WordRecognizer(sd.WORDS)


def test_real_words_are_heard(words, judge):
    media, labels = words
    heard = judge.recognize(media, sd.SAMPLE_RATE)
    assert heard.shape == labels.shape and heard.dtype == torch.long
    assert (heard == labels).float().mean() >= 0.8  # real renders: ~96% over the held-out voices
    assert judge.accuracy(media, sd.SAMPLE_RATE, labels) == (heard == labels).float().mean().item()


def test_level_and_rate_do_not_change_the_verdict(words, judge):
    media, labels = words
    quiet = judge.recognize(media[:10] * 0.05, sd.SAMPLE_RATE)  # scaled back to the renders' peak first
    assert torch.equal(quiet, judge.recognize(media[:10], sd.SAMPLE_RATE))
    import torchaudio.functional as AF
    at_8k = AF.resample(media[:10], sd.SAMPLE_RATE, 8000)  # resampled up to the model's 16 kHz
    assert (judge.recognize(at_8k, 8000) == labels[:10]).float().mean() >= 0.7


def test_noise_is_not_words(judge):
    noise = 0.3 * torch.randn(10, 1, 16000, generator=torch.Generator().manual_seed(0))
    assert judge.accuracy(noise, 16000, torch.arange(10)) <= 0.3  # chance is 1 in 10


def test_bad_input(judge):
    with pytest.raises(ValueError, match=r"\[N, C, T\]"):
        judge.recognize(torch.zeros(16000), 16000)
    with pytest.raises(ValueError, match="not in the recognizer's dictionary"):
        rec.WordRecognizer(["zero", "qwzxv"])
    with pytest.raises(ValueError, match="alphabetic"):
        rec.WordRecognizer(["zero", "two words"])


def test_missing_package_is_one_clear_error(monkeypatch):
    import builtins
    real_import = builtins.__import__

    def no_sphinx(name, *args, **kw):
        if name == "pocketsphinx":
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_sphinx)
    with pytest.raises(UserError, match=r"pip install 'cm-media\[asr\]'"):
        rec.WordRecognizer(sd.WORDS)
