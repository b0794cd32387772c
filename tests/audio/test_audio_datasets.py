"""Built-in `tones` (pitch checked with librosa's pYIN) and the folder dataset (bad files skipped by name)."""

import logging

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from cm_media.errors import UserError
from cm_media.runs.config import config_from_dict
from modalities.audio import MODALITY
from modalities.audio.datasets import ToneDataset, make_tones, midi_to_hz, synth_tones, tone_params


def audio_cfg(tmp_path=None, **data):
    raw = {"modality": "audio", "data": {"seconds": 0.25, "tones": 40, **data},
           "codec": {"sample_rate": 8000, "representation": "waveform"}, "backbone": {"preset": "tiny"}}
    cfg = config_from_dict(raw)
    return cfg, MODALITY.build_codec(cfg)


def test_tones_are_deterministic_and_split():
    a, midi_a = make_tones(12, 8000, 0.3, seed=3)
    b, midi_b = make_tones(12, 8000, 0.3, seed=3)
    c, _ = make_tones(12, 8000, 0.3, seed=4)
    assert a.shape == (12, 1, 2400) and torch.equal(a, b) and torch.equal(midi_a, midi_b)
    assert not torch.equal(a, c)
    assert a.abs().max() <= 0.9 + 1e-6 and a.abs().amax(-1).min() >= 0.25 - 1e-6  # loudness range
    assert ((midi_a >= 48) & (midi_a <= 72)).all()
    cfg, codec = audio_cfg()
    train, held = MODALITY.build_dataset(cfg, codec, "train"), MODALITY.build_dataset(cfg, codec, "eval")
    assert (len(train), len(held)) == (36, 4)
    assert train.get_batch(torch.tensor([0, 5])).shape == (2, 1, 2000)
    assert not torch.equal(train[0], held[0])
    # any subset renders the full set's notes (chunks of 5 cross the subset), and a split renders on demand
    params = tone_params(12, 8000, 0.3, seed=3)
    assert torch.equal(synth_tones(params, torch.tensor([7, 2, 11, 3]), chunk=3), a[[7, 2, 11, 3]])
    lazy = ToneDataset(params, 4, 12, codec)
    assert len(lazy) == 8 and not lazy.ready.any() and torch.equal(lazy.labels, midi_a[4:12])
    batch = lazy.get_batch(torch.tensor([5, 1, 5]))
    assert lazy.ready.tolist() == [False, True, False, False, False, True, False, False]
    assert torch.equal(batch, codec.encode(a[[9, 5, 9], :, :]))


def test_tones_stereo_and_sample_rate():
    wav, _ = make_tones(4, 22050, 0.2, channels=2, seed=1)
    assert wav.shape == (4, 2, 4410)
    assert not torch.equal(wav[:, 0], wav[:, 1])  # panned


def test_tones_pitch_is_the_stated_note():
    wav, midi = make_tones(4, 16000, 0.5, midi_low=45, midi_high=76, seed=7)
    for clip, note in zip(wav[:, 0].numpy(), midi.tolist()):
        f0, voiced, _ = librosa.pyin(clip, fmin=80, fmax=1000, sr=16000, frame_length=1024)
        assert voiced.mean() > 0.4
        median = np.nanmedian(f0[voiced])
        assert abs(median / float(midi_to_hz(torch.tensor(note))) - 1) < 0.03, (note, median)


def write_folder(root):
    root.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(44100 * 2) / 44100
    sf.write(str(root / "stereo_44k.wav"), np.stack([np.sin(2 * np.pi * 330 * t), 0.5 * np.sin(2 * np.pi * 220 * t)], 1)
             * 0.3, 44100)
    sf.write(str(root / "sub" / "mono_16k.flac") if (root / "sub").mkdir() is None else "",
             rng.uniform(-0.2, 0.2, 16000 // 10).astype(np.float32), 16000)  # 0.1 s: shorter than a crop
    sf.write(str(root / "empty.wav"), np.zeros((0, 1), np.float32), 8000)
    (root / "broken.mp3").write_bytes(b"ID3 not really an mp3 at all" * 10)
    (root / "notes.txt").write_text("not audio")


def test_folder_dataset_skips_bad_files_by_name(tmp_path, caplog):
    write_folder(tmp_path / "music")
    cfg, codec = audio_cfg(dataset="folder", root=str(tmp_path / "music"), crop="fixed", holdout=0.0)
    with caplog.at_level(logging.WARNING):
        ds = MODALITY.build_dataset(cfg, codec, "train")
    assert "empty.wav" in caplog.text and "broken.mp3" in caplog.text
    assert "stereo_44k.wav" not in caplog.text
    assert len(ds) == 8 + 1  # 2 s in 0.25 s windows, plus one padded window of the short file
    x = ds.get_batch(torch.arange(len(ds)))
    assert x.shape == (9, 1, 2000)  # resampled to 8 kHz, mixed to mono
    assert x.abs().amax(-1).max() == pytest.approx(0.9, abs=1e-3)  # peak-normalized
    assert x[-1, 0, 1000:].abs().max() == 0  # the 0.1 s file is zero-padded to the crop length
    # the stereo mix of 330 Hz and 220 Hz survives resampling
    spectrum = np.abs(np.fft.rfft(x[0, 0].numpy() * np.hanning(2000)))
    floor = np.median(spectrum)  # 4 Hz bins: 220 Hz is bin 55, 330 Hz bin 82.5
    assert spectrum[55] > 1e4 * floor and 1.3 < spectrum[82:84].max() / spectrum[55] < 2.2  # mixed 0.3 : 0.15


def test_folder_random_crops_move(tmp_path):
    write_folder(tmp_path / "music")
    cfg, codec = audio_cfg(dataset="folder", root=str(tmp_path / "music"), crop="random")
    ds = MODALITY.build_dataset(cfg, codec, "train")
    torch.manual_seed(0)
    a, b = ds[0], ds[0]
    assert a.shape == b.shape == (1, 2000) and not torch.equal(a, b)


def test_folder_without_usable_audio_is_a_clear_error(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.wav").write_bytes(b"garbage")
    cfg, codec = audio_cfg(dataset="folder", root=str(tmp_path / "junk"))
    with pytest.raises(UserError, match=r"no usable audio in .*junk.*1 audio file"):
        MODALITY.build_dataset(cfg, codec, "train")
    cfg, codec = audio_cfg(dataset="folder", root=str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="nowhere"):
        MODALITY.build_dataset(cfg, codec, "train")
    cfg, codec = audio_cfg(dataset="folder")
    with pytest.raises(UserError, match="data.root"):
        MODALITY.build_dataset(cfg, codec, "train")
    cfg, codec = audio_cfg(dataset="speech")
    with pytest.raises(UserError, match="data.dataset"):
        MODALITY.build_dataset(cfg, codec, "train")
