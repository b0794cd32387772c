"""FluidSynth notes (TimGM6mb for speed): shapes, determinism, cache reuse, splits, pitch by pYIN, errors."""

import json

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from cm_media.errors import UserError
from modalities.audio import notes as nt

try:
    nt.load_fluidsynth()
    SOUNDFONT = nt.find_soundfont(small=True)
except UserError as e:
    pytest.skip(f"needs libfluidsynth3, pyfluidsynth and timgm6mb-soundfont ({e})", allow_module_level=True)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The `small` render: 11 families x 1 program x 4 pitches x 2 velocities."""
    return nt.render_notes(tmp_path_factory.mktemp("notes"), small=True)


def pairs(ds):
    return set(zip(ds.instruments.tolist(), ds.pitches.tolist()))


def test_small_render_shapes_labels_and_splits(small):
    train, test = nt.Notes(small.parent, "train"), nt.Notes(small.parent, split="test")
    assert len(train) + len(test) == 11 * 4 * 2 and len(test) == 11 * 4  # one of each (family, pitch) pair held out
    wav = train.get_waveforms(torch.arange(len(train)))
    assert wav.shape == (len(train), 1, 16000) and wav.dtype == torch.float32
    peaks = wav.abs().amax(-1).flatten()
    assert peaks.min() > 0.01 and peaks.max() <= nt.LIMIT + 1e-3  # every note sounds, none clips
    assert wav[..., -10:].abs().max() < 1e-3  # faded out at the end
    assert pairs(train) == pairs(test) and len(pairs(train)) == 44  # every family and pitch in both splits
    assert train.instrument_names[int(train.instruments[0])] == "keyboard" and train.pitch_names[0] == "36"
    assert train.pitch_names[int(train.pitch_index[0])] == str(int(train.pitches[0]))
    assert set(train.clips.column("velocity").tolist()) | set(test.velocities.tolist()) == {64, 127}


def test_render_is_deterministic_and_reused(tmp_path):
    kw = {"soundfont": SOUNDFONT, "pitches": (40, 67), "velocities": (100,)}
    a = nt.render_notes(tmp_path / "a", **kw)
    b = nt.render_notes(tmp_path / "b", workers=1, **kw)
    rows = json.loads(a.read_text())["clips"]
    assert len(rows) == 11 * 2 * 2
    for row in rows:
        assert (a.parent / row["file"]).read_bytes() == (b.parent / row["file"]).read_bytes()
        assert sf.info(str(a.parent / row["file"])).frames == 16000
    stamp = a.stat().st_mtime_ns
    assert nt.render_notes(tmp_path / "a", **kw) == a and a.stat().st_mtime_ns == stamp  # reused
    # a note renders the same alone as within a larger set (fresh synth per note)
    alone = nt.render_notes(tmp_path / "c", soundfont=SOUNDFONT, pitches=(67,), velocities=(100,))
    row = json.loads(alone.read_text())["clips"][-1]
    assert (alone.parent / row["file"]).read_bytes() == (a.parent / row["file"]).read_bytes()


@pytest.mark.parametrize(("family", "pitch"), [("keyboard", 48), ("string", 72), ("flute", 84)])
def test_pitch_matches_the_label(small, family, pitch):
    ds = nt.Notes(small.parent, split="all")
    i = next(i for i in range(len(ds)) if ds.instrument_names[int(ds.instruments[i])] == family
             and int(ds.pitches[i]) == pitch)
    y = ds.get_waveforms([i])[0, 0, :12000].double().numpy()  # the held part
    f0, voiced, _ = librosa.pyin(y, fmin=50, fmax=2200, sr=16000, frame_length=2048)
    assert voiced.mean() > 0.5
    error = 12 * np.log2(np.nanmedian(f0[voiced]) / librosa.midi_to_hz(pitch))
    assert abs(error) < 0.5, (family, pitch, error)


def test_missing_soundfont_names_the_debian_package(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="apt-get install fluid-soundfont-gm libfluidsynth3"):
        nt.render_notes(tmp_path, soundfont=tmp_path / "absent.sf2")
    monkeypatch.setitem(nt.SOUNDFONTS, "small", ("timgm6mb-soundfont", "Absent.sf2"))
    with pytest.raises(UserError) as err:
        nt.render_notes(tmp_path, small=True)
    assert "\n" not in str(err.value) and "apt-get install timgm6mb-soundfont" in str(err.value)
    assert "pip install pyfluidsynth" in str(err.value)
