"""Words and notes on request: the spoken_digits / notes datasets (small renders), conditional training and
generation end to end, the shipped audio classifier and its scores (IS, modified IS, AM), the demo's requests,
and the bundled `spoken-digits` and `notes` models."""

import json
import math
import shutil

import pytest
import soundfile as sf
import torch

from cm_media.cli import main
from cm_media.errors import UserError
from cm_media.eval import metrics
from cm_media.runs.config import config_from_dict, load_config
from cm_media.runs.training import train
from modalities.audio import MODALITY
from modalities.audio import notes as nt
from modalities.audio import spoken_digits as sd
from modalities.audio.datasets import rendered_note
from modalities.audio.feature_net import WEIGHTS, classify, load_feature_net

HAVE_TTS = bool(shutil.which("flite") and shutil.which("espeak-ng") and shutil.which("festival"))
try:
    nt.load_fluidsynth()
    nt.find_soundfont(small=True)
    HAVE_FLUIDSYNTH = True
except UserError:
    HAVE_FLUIDSYNTH = False
needs_tts = pytest.mark.skipif(not HAVE_TTS, reason="needs the Debian packages " + " ".join(sd.PACKAGES))
needs_fluidsynth = pytest.mark.skipif(not HAVE_FLUIDSYNTH, reason="needs libfluidsynth3, pyfluidsynth, timgm6mb-soundfont")

SHIPPED: list[str] = ["spoken-digits", "notes"]  # committed with this version: a missing one fails


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """Small renders in a temporary folder (seconds): {"spoken_digits": root, "notes": root}."""
    out = {}
    if HAVE_TTS:
        out["spoken_digits"] = sd.render_spoken_digits(tmp_path_factory.mktemp("digits"), small=True).parent
    if HAVE_FLUIDSYNTH:
        out["notes"] = nt.render_notes(tmp_path_factory.mktemp("notes"), small=True).parent
    return out


def rendered_cfg(dataset, root, cond, **codec):
    raw = {"modality": "audio",
           "data": {"dataset": dataset, "root": str(root), "seconds": 1.0, "cond": cond},
           "codec": {"sample_rate": 16000, "representation": "stft", "n_fft": 512, "hop": 250, "spec_scale": 1.0,
                     **codec},
           "backbone": {"preset": "tiny"}, "method": {"name": "ict", "sigma_max": 10.0}}
    cfg = config_from_dict(raw)
    return cfg, MODALITY.build_codec(cfg)


@needs_tts
def test_spoken_digits_dataset_splits_by_voice_and_labels_words(renders):
    cfg, codec = rendered_cfg("spoken_digits", renders["spoken_digits"], ["class"], normalize="none")
    train_ds, held = MODALITY.build_dataset(cfg, codec, "train"), MODALITY.build_dataset(cfg, codec, "eval")
    assert len(train_ds) + len(held) == 10 * len(sd.SMALL_VOICES) and len(held) >= 10
    x = train_ds.get_batch(torch.tensor([0, 3]))
    assert torch.equal(train_ds.get_batch(torch.tensor([3, 0])), x[[1, 0]])  # read once, then from memory
    assert x.shape == (2, 2, 256, 65)  # n_fft 512 without Nyquist, 16000 / 250 + 1 frames
    assert codec.decode(x).shape == (2, 1, 16000)  # exactly 1.0 s again
    assert torch.allclose(codec.decode(x), train_ds.waveforms(torch.tensor([0, 3])), atol=1e-4)
    [c] = train_ds.conditions
    assert c.name == "class" and c.classes == list(sd.WORDS)
    assert train_ds.get_cond(torch.arange(10))["class"].tolist() == list(range(10))
    assert not set(train_ds.source.voices.tolist()) & set(held.source.voices.tolist())
    with pytest.raises(UserError, match="does not label"):
        rendered = rendered_cfg("spoken_digits", renders["spoken_digits"], ["pitch"])
        MODALITY.build_dataset(*rendered, "train")


@needs_fluidsynth
def test_notes_dataset_has_pitch_and_instrument_conditions(renders):
    cfg, codec = rendered_cfg("notes", renders["notes"], ["pitch", "instrument"], normalize="peak", peak=0.8)
    ds = MODALITY.build_dataset(cfg, codec, "train")
    pitch, instrument = ds.conditions
    assert pitch.classes == [str(p) for p in range(36, 97)] and instrument.classes == list(nt.FAMILIES)
    cond = ds.get_cond(torch.arange(len(ds)))
    assert torch.equal(cond["pitch"] + 36, ds.source.pitches) and torch.equal(cond["instrument"], ds.source.instruments)
    wav = ds.waveforms(torch.arange(4))
    assert wav.shape == (4, 1, 16000) and torch.allclose(wav.abs().amax(-1), torch.full((4, 1), 0.8))


def test_rendered_sets_not_rendered_yet_are_noted_not_rendered(tmp_path):
    cfg, _ = rendered_cfg("notes", tmp_path / "nothing", ["pitch"])
    assert "not rendered yet" in rendered_note(cfg) and not (tmp_path / "nothing").exists()
    tones = config_from_dict({"modality": "audio", "data": {"dataset": "tones"}})
    assert rendered_note(tones) is None


def test_missing_tts_engine_is_one_line_naming_the_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no engine on PATH, nothing rendered in the root
    sd._listed_voices.cache_clear()
    cfg, codec = rendered_cfg("spoken_digits", tmp_path / "digits", ["class"])
    with pytest.raises(UserError) as err:
        MODALITY.build_dataset(cfg, codec, "train")
    sd._listed_voices.cache_clear()
    text = str(err.value)
    assert "\n" not in text and "apt-get install" in text and "flite" in text and "espeak-ng" in text


def test_unknown_dataset_names_the_choices():
    cfg, codec = rendered_cfg("spoken_digits", "/tmp", ["class"])
    cfg.data.dataset = "sc09"
    with pytest.raises(UserError, match="spoken_digits, notes"):
        MODALITY.build_dataset(cfg, codec, "train")


@needs_tts
def test_conditional_words_train_generate_and_list_conditions(renders, tmp_path, repo_root, capsys):
    """The shipped config, tiny: trains, `--class seven` writes 1.0 s wavs, `info --json` lists the words."""
    sets = {"train.steps": 2, "train.batch_size": 4, "train.log_every": 1, "train.warmup_steps": 1,
            "train.samples": 2, "train.bf16": False, "backbone.preset": "tiny",
            "data.root": str(renders["spoken_digits"])}
    cfg = load_config(f"{repo_root}/configs/audio/spoken_digits_ict.yaml", [f"{k}={v}" for k, v in sets.items()])
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    assert main(["generate", str(run), "--class", "seven", "-n", "3", "--steps", "1", "--out", str(tmp_path / "w")]) == 0
    wavs = sorted((tmp_path / "w").glob("*.wav"))
    assert len(wavs) == 3 and all(sf.info(str(w)).duration == 1.0 and sf.info(str(w)).samplerate == 16000
                                  for w in wavs)
    capsys.readouterr()
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["conditions"] == {"class": list(sd.WORDS)}
    assert main(["generate", str(run), "--class", "eleven", "--out", str(tmp_path / "x")]) == 2
    assert "eleven" in capsys.readouterr().err


@needs_fluidsynth
def test_timbre_recipe_measures_its_table_and_guides_the_instrument(renders, tmp_path, repo_root, capsys):
    """The stage-3 notes recipe, tiny: the timbre table is measured from the training notes before step 0, kept in
    the checkpoint, and `--guide instrument` generates."""
    from cm_media.runs.generator import load

    sets = {"train.steps": 2, "train.batch_size": 4, "train.log_every": 1, "train.warmup_steps": 1,
            "train.samples": 0, "train.bf16": False, "backbone.channels": 8, "train.init_from": "",
            "data.root": str(renders["notes"]), "train.checkpoint_every": 1}
    cfg = load_config(f"{repo_root}/configs/audio/notes_ict_timbre.yaml", [f"{k}={v}" for k, v in sets.items()])
    run = tmp_path / "run"
    train(cfg, run, progress=False)
    table = load(run, device="cpu").model.backbone.timbre_table
    assert table.abs().sum() > 0 and table[:, -1].abs().max() == 0  # measured; "no pitch" stays zero
    assert main(["generate", str(run), "--cond", "pitch=60", "--cond", "instrument=flute", "--cfg-scale", "2",
                 "--guide", "instrument", "-n", "2", "--out", str(tmp_path / "n")]) == 0
    assert len(list((tmp_path / "n").glob("*.wav"))) == 2


# ---------------------------------------------------------------- the classifier and its scores


def test_classifier_ships_small_and_scores_shapes():
    assert WEIGHTS.is_file() and WEIGHTS.stat().st_size < 400 * 1024
    net = load_feature_net()
    assert net is not None and not net.training
    wave = torch.randn(3, 1, 12000) * 0.1  # shorter than 1 s: padded
    out = classify(wave, 16000)
    assert out["embed"].shape == (3, 96) and out["word"].shape == (3, 10) and out["instrument"].shape == (3, 11)
    assert torch.allclose(out["word"].sum(1), torch.ones(3), atol=1e-5)
    loud = classify(wave * 5, 16000)  # peak-normalized inside: blind to loudness
    assert torch.allclose(loud["embed"], out["embed"], atol=1e-4)
    assert classify(torch.randn(2, 1, 8000) * 0.1, 8000)["embed"].shape == (2, 96)  # resampled to 16 kHz


def test_learned_features_apply_to_the_rendered_sets_only():
    digits = config_from_dict({"modality": "audio", "data": {"dataset": "spoken_digits"}})
    tones = config_from_dict({"modality": "audio", "data": {"dataset": "tones"}})
    media = torch.randn(2, 1, 16000) * 0.1
    assert MODALITY.learned_features(media, digits).shape == (2, 96)
    assert MODALITY.learned_features(media, tones) is None


def test_inception_scores_follow_their_formulas():
    confident = torch.eye(10).repeat(3, 1) * 0.99 + 0.001  # each class equally often, confidently
    uniform = torch.full((30, 10), 0.1)
    assert metrics.inception_score(confident) == pytest.approx(10, rel=0.1)
    assert metrics.inception_score(uniform) == pytest.approx(1.0)
    assert metrics.modified_inception_score(uniform) == pytest.approx(1.0)
    assert metrics.am_score(uniform, torch.ones(10)) == pytest.approx(math.log(10))  # all entropy
    assert metrics.am_score(confident, torch.ones(10)) < 0.1
    one_class = torch.eye(10)[[3] * 30] * 0.99 + 0.001
    assert metrics.am_score(one_class, torch.ones(10)) > 2  # KL(uniform || all-three)
    p = torch.rand(6, 4).softmax(1)
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j]
    kl = sum(float((p[i] * (p[i].log() - p[j].log())).sum()) for i, j in pairs) / len(pairs)
    assert metrics.modified_inception_score(p) == pytest.approx(math.exp(kl), rel=1e-6)
    scores = metrics.classifier_scores(confident, torch.ones(10), torch.arange(10).repeat(3))
    assert scores["accuracy"] == 1.0 and set(scores) == {"is", "mis", "am", "accuracy"}


# ---------------------------------------------------------------- the demo's requests


def test_demo_asks_for_each_word_and_for_named_notes():
    words = config_from_dict({"modality": "audio", "data": {"dataset": "spoken_digits", "seconds": 1.0},
                              "backbone": {"cond": [{"name": "class", "classes": list(sd.WORDS)}]}})
    req = MODALITY.demo_request(words)
    assert req.n == 10 and req.target == "spoken_digits" and req.labels[7] == "class=seven"
    assert req.generate["cond"] == {"class": list(sd.WORDS)} and req.save == {"seconds": 1.0}
    notes = config_from_dict({"modality": "audio", "data": {"dataset": "notes", "seconds": 1.0},
                              "backbone": {"cond": [{"name": "pitch", "classes": [str(p) for p in range(36, 97)]},
                                                    {"name": "instrument", "classes": list(nt.FAMILIES)}]}})
    req = MODALITY.demo_request(notes)
    assert req.n == len(MODALITY.demo_notes) and req.labels[0] == "pitch=60, instrument=keyboard"
    tones = config_from_dict({"modality": "audio", "data": {"dataset": "tones", "seconds": 0.5}})
    assert MODALITY.demo_request(tones).labels == [] and MODALITY.demo_request(tones).target == "audio"
    assert MODALITY.demo_models() == ["audio", "spoken-digits", "notes"]


# ---------------------------------------------------------------- the bundled models


def test_bundled_spoken_digits_says_the_words_asked_for(bundled, tmp_path, capsys):
    gen = bundled("spoken-digits", "spoken-digits" in SHIPPED)
    assert main(["generate", "spoken-digits", "--class", "seven", "-n", "8", "--steps", "1", "--out",
                 str(tmp_path / "sevens")]) == 0
    wavs = sorted((tmp_path / "sevens").glob("*.wav"))
    assert len(wavs) == 8 and all(sf.info(str(w)).duration == 1.0 for w in wavs)
    clips = torch.stack([torch.from_numpy(sf.read(str(w), dtype="float32")[0]) for w in wavs])[:, None]
    assert classify(clips)["word"].argmax(1).eq(7).any()  # some of them say "seven" to the classifier
    # 4 of each word: ~50% recognized (benchmarks/README.md), chance is 10%
    media = gen.generate(40, steps=1, seed=0, cond={"class": [sd.WORDS[i % 10] for i in range(40)]})
    assert (classify(media.float())["word"].argmax(1) == torch.arange(40) % 10).float().mean() >= 0.35
    capsys.readouterr()
    assert main(["info", "spoken-digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["conditions"] == {"class": list(sd.WORDS)}


def test_bundled_notes_play_the_pitch_and_instrument_asked_for(bundled, tmp_path, capsys):
    gen = bundled("notes", "notes" in SHIPPED)
    assert main(["generate", "notes", "--cond", "pitch=60", "--cond", "instrument=flute", "-n", "2", "--out",
                 str(tmp_path / "c4.wav")]) == 0
    assert sf.info(str(tmp_path / "c4_000.wav")).duration == 1.0
    capsys.readouterr()
    assert main(["info", "notes", "--json"]) == 0
    conds = json.loads(capsys.readouterr().out)["conditions"]
    assert conds == {"pitch": [str(p) for p in range(36, 97)], "instrument": list(nt.FAMILIES)}
    from modalities.audio.pitch import pitch_accuracy

    media = gen.generate(4, steps=1, seed=0, cond={"pitch": ["60", "67"], "instrument": ["keyboard", "brass"]})
    acc, _ = pitch_accuracy(media, 16000, torch.tensor([60, 67, 60, 67]))
    assert acc >= 0.5  # 81% of requested notes within half a semitone (benchmarks/README.md)


# ---------------------------------------------------------------- the notes backbone


def test_spec_unet_adds_frequency_and_the_requested_harmonics():
    from cm_media.nn.registry import build_backbone
    from modalities.audio.presets import PRESETS
    from modalities.audio.spec_unet import harmonic_comb

    comb = harmonic_comb(torch.tensor([69.0]), 256, 16000, 512, 24, 0.6)[0]  # A4: 440 Hz, bins of 31.25 Hz
    peaks = [k for k in range(1, 255) if comb[k] > 0.2 and comb[k] >= comb[k - 1] and comb[k] >= comb[k + 1]]
    assert peaks[:3] == [14, 28, 42] and comb[:10].max() < 0.01  # 440 / 31.25 = 14.08, then 28.2, 42.2
    cond = [{"name": "pitch", "classes": [str(p) for p in range(36, 97)]}, {"name": "instrument", "classes": ["a", "b"]}]
    net = build_backbone({"preset": "spec-16k-freq", "channels": 8, "cond": cond}, PRESETS, 2, 2).eval()
    assert net.unet.inp.in_channels == (2 + 2) * 8  # x's two channels, frequency and comb, in 4x2 patches
    x = torch.randn(2, 2, 256, 65)
    with torch.no_grad():
        asked = net(x, torch.zeros(2), {"pitch": torch.tensor([24, 30]), "instrument": torch.tensor([0, 1])})
        null = net(x, torch.zeros(2))  # no condition: a zero comb
    assert asked.shape == null.shape == x.shape
    table = net._comb_table(256, "cpu")
    assert table.shape == (62, 256) and table[61].abs().max() == 0
    plain = build_backbone({"preset": "spec-16k-freq", "channels": 8, "cond": cond[1:]}, PRESETS, 2, 2)
    assert plain.pitch is None and plain.unet.inp.in_channels == 3 * 8  # frequency channel only


def test_timbre_table_is_the_mean_harmonic_magnitude_of_each_instrument_and_pitch():
    """fit_to_data: each (instrument, pitch) cell is the mean of its notes' magnitudes at the harmonics; a missing
    cell falls back to the instrument's mean; "no instrument" is the mean over instruments; the channel maps it
    back onto the harmonics' bins."""
    from cm_media.nn.registry import build_backbone
    from modalities.audio.presets import PRESETS
    from modalities.audio.spec_unet import harmonic_bumps, harmonic_magnitudes

    cond = [{"name": "pitch", "classes": ["60", "72"]}, {"name": "instrument", "classes": ["a", "b", "c"]}]
    net = build_backbone({"preset": "spec-16k-freq", "channels": 8, "cond": cond, "timbre_cond": "instrument",
                          "harmonics": 4, "timbre_frames": 3}, PRESETS, 2, 2).eval()
    assert net.unet.inp.in_channels == (2 + 3) * 8 and net.timbre_table.shape == (4, 3, 4, 3)
    assert net.complex_streams == [True]  # a complex STFT: method.magnitude_weight can weigh its magnitudes
    assert build_backbone({"preset": "spec-16k-freq", "channels": 8}, PRESETS, 2, 1).complex_streams is None  # mel
    bumps = harmonic_bumps(torch.tensor([60.0, 72.0]), 256, 16000, 512, 4, 0.6).float()  # [2, 4, 256]

    def note(pitch, amps):  # a spectrogram whose harmonics have magnitudes amps [4, T] (real part only)
        x = torch.zeros(2, 256, 4)
        x[0] = torch.einsum("hf,ht->ft", bumps[pitch] / bumps[pitch].amax(-1, keepdim=True), amps)
        return x

    a1, a2, b1 = torch.rand(4, 4), torch.rand(4, 4), torch.rand(4, 4)
    x = torch.stack([note(0, a1), note(0, a2), note(1, b1)])  # instrument a at pitch 60 twice, b at 72
    got = harmonic_magnitudes(x, bumps[[0, 0, 1]])
    assert got.shape == (3, 4, 4)
    net.fit_to_data(iter([(x[:2], {"pitch": torch.tensor([0, 0]), "instrument": torch.tensor([0, 0])}),
                          (x[2:], {"pitch": torch.tensor([1]), "instrument": torch.tensor([1])})]))
    table = net.timbre_table  # [I + 1, K + 1, H, 3]: four frames in, the table keeps three
    assert torch.allclose(table[0, 0], (got[0] + got[1])[:, :3] / 2) and torch.allclose(table[1, 1], got[2, :, :3])
    assert torch.allclose(table[0, 1], table[0, 0])  # a never heard at 72: its mean over pitches
    assert torch.allclose(table[3, 0], table[0, 0]) and torch.allclose(table[3, 1], table[1, 1])  # no instrument
    assert table[:, 2].abs().max() == 0 and table[2].abs().max() == 0  # no pitch; c never heard: zeros
    m = net.timbre_map({"pitch": torch.tensor([0, 2]), "instrument": torch.tensor([0, 0])}, 2, 256, 5, "cpu")
    assert m.shape == (2, 1, 256, 5) and m[1].abs().max() == 0 and m[0, 0, :, 3:].abs().max() == 0
    assert torch.allclose(m[0, 0, :, :3], torch.einsum("hf,ht->ft", bumps[0], table[0, 0]))


def test_init_from_a_backbone_with_fewer_input_channels_starts_as_it(tmp_path):
    """train.init_from into a backbone given new input channels: old weights on the old channels, zeros on the new,
    so the network computes what the source did; any other shape change is still refused."""
    from cm_media.runs.training import _widened_input

    old, new = torch.randn(8, 3, 3, 3), torch.randn(8, 4, 3, 3)
    wide = _widened_input(old, new)
    assert torch.equal(wide[:, :3], old) and wide[:, 3].abs().max() == 0
    assert _widened_input(old, torch.randn(9, 4, 3, 3)) is None and _widened_input(new, old) is None
    assert _widened_input(torch.randn(8), torch.randn(9)) is None
    conv_old, conv_new = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(4, 8, 3, padding=1)
    conv_new.load_state_dict({"weight": _widened_input(conv_old.weight.data, conv_new.weight.data),
                              "bias": conv_old.bias.data})
    x = torch.randn(2, 3, 5, 5)
    with torch.no_grad():
        assert torch.allclose(conv_new(torch.cat([x, torch.randn(2, 1, 5, 5)], 1)), conv_old(x), atol=1e-6)


def test_fit_to_data_leaves_tables_that_init_from_brings(monkeypatch):
    """training.fit_to_data measures a module's tables only when the train.init_from weights do not hold all of
    them (a stage trained on from a timbre model keeps its source's table and skips the pass over the data)."""
    from cm_media.runs.training import fit_to_data

    class Fitted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.zeros(2))
            self.register_buffer("cache", torch.zeros(1), persistent=False)
            self.seen = 0

        def fit_to_data(self, batches):
            self.seen += sum(len(x) for x, _ in batches)

    class Data:
        encoded = True

        def __len__(self):
            return 3

    model = torch.nn.Sequential(torch.nn.Linear(1, 1), Fitted())
    import cm_media.runs.training as tr
    monkeypatch.setattr(tr, "get_batch", lambda ds, idx: torch.zeros(len(idx), 1))
    monkeypatch.setattr(tr, "get_cond", lambda ds, idx: {})
    fit_to_data(model, Data(), None, "cpu", batch=2, have={"0.weight", "1.table"})
    assert model[1].seen == 0  # the source holds "1.table": nothing measured
    fit_to_data(model, Data(), None, "cpu", batch=2, have={"0.weight"})
    assert model[1].seen == 3  # every item once, in batches of 2
    fit_to_data(model, Data(), None, "cpu", batch=2)
    assert model[1].seen == 6
