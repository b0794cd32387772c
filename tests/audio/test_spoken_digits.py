"""Spoken digits rendered by flite / festival / espeak-ng: shapes, determinism, cache reuse, onset, splits, errors."""

import json
import shutil
from pathlib import Path

import pytest
import soundfile as sf
import torch

from cm_media.errors import UserError
from modalities.audio import spoken_digits as sd

FESTIVAL_OK = all(Path(folder).is_dir() for folder, _ in sd.FESTIVAL_VOICES.values())
if not (shutil.which("flite") and shutil.which("espeak-ng") and shutil.which("festival") and FESTIVAL_OK):
    pytest.skip("needs the Debian packages " + " ".join(sd.PACKAGES), allow_module_level=True)

TWO = ["flite_kal16_p1_s1", "espeak-ng_en+m1_p1.4_s0.85"]  # fast: no festival start-up


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The `small` render (5 settings, all engines, both splits) in a temporary cache."""
    return sd.render_spoken_digits(tmp_path_factory.mktemp("digits"), small=True)


def test_small_render_shapes_labels_and_splits(small):
    train, test = sd.SpokenDigits(small.parent, "train"), sd.SpokenDigits(small.parent, split="test")
    assert len(train) + len(test) == 10 * len(sd.SMALL_VOICES) and len(test) > 0
    wav = train.get_waveforms(torch.arange(len(train)))
    assert wav.shape == (len(train), 1, 16000) and wav.dtype == torch.float32
    assert (wav.abs().amax(-1) - sd.PEAK).abs().max() < 1e-3  # peak-normalized (16-bit files)
    assert sorted(train.labels[train.voices == train.voices[0]].tolist()) == list(range(10))
    assert train.class_names[7] == "seven" and train.labels.dtype == torch.long
    assert not set(train.voices.tolist()) & set(test.voices.tolist())  # split by voice setting
    split_of = {v.name: v.split for v in sd.voice_settings()}
    assert {split_of[test.voice_names[v]] for v in test.voices.tolist()} == {"test"}
    assert {split_of[train.voice_names[v]] for v in train.voices.tolist()} == {"train"}
    assert sd.SpokenDigits(small.parent, "train", sample_rate=8000).get_waveforms([0]).shape == (1, 1, 8000)


def test_word_onset_near_the_start_and_silence_after(small):
    ds = sd.SpokenDigits(small.parent, split="all")
    wav = ds.get_waveforms(torch.arange(len(ds)))[:, 0]  # [N, 16000]
    onset = (wav.abs() > 1e-3).float().argmax(-1)  # first sample above -60 dB (quiet fricatives count)
    offsets = torch.tensor([c["offset"] for c in json.loads(small.read_text())["clips"]])
    assert offsets.unique().numel() > 20 and offsets.max() < sd.MAX_OFFSET
    assert ((onset - offsets) >= 0).all() and ((onset - offsets) < 240).all()  # the word starts at its offset
    assert (wav[:, -800:].abs().amax(-1) < 1e-3).float().mean() > 0.9  # the last 50 ms silent almost always


def test_render_is_deterministic_and_reused(tmp_path):
    a = sd.render_spoken_digits(tmp_path / "a", seed=3, limit_voices=TWO)
    b = sd.render_spoken_digits(tmp_path / "b", seed=3, limit_voices=TWO)
    rows = json.loads(a.read_text())["clips"]
    assert len(rows) == 20
    for row in rows:
        assert (a.parent / row["file"]).read_bytes() == (b.parent / row["file"]).read_bytes()
        assert sf.info(str(a.parent / row["file"])).frames == 16000
    stamp = a.stat().st_mtime_ns, (a.parent / rows[0]["file"]).stat().st_mtime_ns
    assert sd.render_spoken_digits(tmp_path / "a", seed=3, limit_voices=TWO) == a  # reused, not rendered again
    assert (a.stat().st_mtime_ns, (a.parent / rows[0]["file"]).stat().st_mtime_ns) == stamp
    c = sd.render_spoken_digits(tmp_path / "a", seed=4, limit_voices=TWO)  # another seed: other offsets
    assert [r["offset"] for r in json.loads(c.read_text())["clips"]] != [r["offset"] for r in rows]


def test_voice_settings_are_many_and_split_by_voice():
    settings = sd.voice_settings()
    assert len(settings) >= 300 and len({v.name for v in settings}) == len(settings)
    test = {(v.engine, v.voice) for v in settings if v.split == "test"}
    train = {(v.engine, v.voice) for v in settings if v.split == "train"}
    assert test == sd.TEST_VOICES and not test & train
    assert len(sd.select_voices(12)) == 12
    with pytest.raises(UserError, match="unknown spoken_digits voice"):
        sd.select_voices(["flite_nobody_p1_s1"])


def test_missing_engine_names_the_debian_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine on PATH
    sd._listed_voices.cache_clear()
    with pytest.raises(UserError) as err:
        sd.render_spoken_digits(tmp_path / "cache", limit_voices=TWO)
    message = str(err.value)
    assert "\n" not in message and "apt-get install flite festival" in message and "espeak-ng" in message
    assert "missing: the espeak-ng command, the flite command" in message
