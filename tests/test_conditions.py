"""Conditions: embeddings, requests, classifier-free guidance, condition dropout, and conditional runs end to end."""

import json

import pytest
import torch

from cm_media.cli import main
from cm_media.conditions import (
    GUIDANCE,
    Condition,
    conditions_from_spec,
    drop_conditions,
    guided_names,
    null_like,
    request_tensors,
)
from cm_media.errors import UserError
from cm_media.math.guidance import bind, classifier_free
from cm_media.nn import UNet, UNetConfig
from cm_media.nn.embedding import ConditionEmbedding
from cm_media.runs.config import load_config
from cm_media.runs.generator import load
from cm_media.runs.training import train

DIGITS = Condition("class", classes=[str(d) for d in range(10)])


def test_null_class_row_starts_at_zero_so_no_condition_is_the_plain_noise_embedding():
    emb = ConditionEmbedding([DIGITS], 16)
    null = emb(None, 3, "cpu")  # [3, 16]
    assert null.shape == (3, 16) and torch.equal(null, torch.zeros(3, 16))
    some = emb({"class": torch.tensor([0, 1, 10])}, 3, "cpu")
    assert some[0].abs().sum() > 0 and torch.equal(some[2], torch.zeros(16))


def test_conditional_unet_asked_for_nothing_equals_explicit_null_and_differs_by_class():
    torch.manual_seed(0)
    net = UNet(UNetConfig(dims=2, channels=16, cond=[DIGITS.to_dict()]))
    for name, p in net.named_parameters():  # zero-initialized convs would hide any difference
        if "table" not in name:
            torch.nn.init.normal_(p, std=0.1)
    x, c = torch.randn(2, 1, 8, 8), torch.zeros(2)
    with torch.no_grad():
        none = net(x, c)
        null = net(x, c, {"class": torch.tensor([10, 10])})
        seven = net(x, c, {"class": torch.tensor([7, 7])})
    assert torch.equal(none, null) and not torch.allclose(none, seven)
    with pytest.raises(ValueError, match="unknown condition"):
        net(x, c, {"pitch": torch.tensor([1, 2])})


def test_unconditional_backbone_rejects_a_condition():
    net = UNet(UNetConfig(dims=1, channels=8))
    with pytest.raises(ValueError, match="takes no conditions"):
        net(torch.randn(1, 1, 16), torch.zeros(1), {"class": torch.tensor([1])})


def test_request_tensors_names_indices_and_cycling():
    pitch = Condition("pitch", classes=["48", "60", "72"])
    got = request_tensors([DIGITS, pitch], {"class": "7,3", "pitch": 60}, 5)
    assert got["class"].tolist() == [7, 3, 7, 3, 7] and got["pitch"].tolist() == [1] * 5
    assert request_tensors([pitch], {"pitch": ["0", "72"]}, 2)["pitch"].tolist() == [0, 2]  # index, then name
    with pytest.raises(UserError, match=r"unknown value 'seven' for condition 'class' \(valid: 0, 1, 2"):
        request_tensors([DIGITS], {"class": "seven"}, 1)
    with pytest.raises(UserError, match="unknown condition 'digit'.*takes: class"):
        request_tensors([DIGITS], {"digit": "1"}, 1)
    vec = request_tensors([Condition("v", kind="vector", dim=2)], {"v": "0.5,1"}, 3)["v"]
    assert vec.shape == (3, 2) and vec[2].tolist() == [0.5, 1.0]


def test_spec_validation_errors_are_one_line():
    with pytest.raises(UserError, match="lists no classes"):
        conditions_from_spec([{"name": "class", "kind": "class"}])
    with pytest.raises(UserError, match="unknown kind"):
        conditions_from_spec([{"name": "x", "kind": "image"}])
    with pytest.raises(UserError, match="twice"):
        conditions_from_spec([DIGITS, DIGITS])


def test_classifier_free_guidance_matches_the_formula():
    """D_w = D(null) + w (D(c) - D(null)): w = 0 unconditional, 1 conditional, any w the line through both."""
    def model(x, s, cond):  # D(x, s, c) = x * (1 + c), null class 10 -> x * 11
        return x * (1 + cond["class"].float()).reshape(-1, 1, 1, 1)

    x, s = torch.ones(2, 1, 2, 2), torch.ones(2)
    cond = {"class": torch.tensor([1, 3])}
    null = null_like([DIGITS], cond)
    assert null["class"].tolist() == [10, 10]
    for w in (0.0, 1.0, 2.5):
        got = classifier_free(model, cond, null, w)(x, s)
        expect = 11 + w * (torch.tensor([2.0, 4.0]) - 11)
        assert torch.allclose(got[:, 0, 0, 0], expect)
    per_sample = classifier_free(model, cond, null, torch.tensor([0.0, 1.0]))(x, s)
    assert per_sample[:, 0, 0, 0].tolist() == [11.0, 4.0]
    assert bind(model, None) is model


def test_classifier_free_guidance_runs_large_inputs_one_pass_at_a_time(monkeypatch):
    """The same result whether the two evaluations run as one batch of 2B or one after the other."""
    from cm_media.math import guidance

    batches = []

    def model(x, s, cond):
        batches.append(x.shape[0])
        return x * (1 + cond["class"].float()).reshape(-1, 1, 1, 1) + s.reshape(-1, 1, 1, 1)

    x, s = torch.randn(2, 1, 4, 4), torch.tensor([0.5, 2.0])
    cond = {"class": torch.tensor([1, 3])}
    null = null_like([DIGITS], cond)
    joint = classifier_free(model, cond, null, 1.5)(x, s)
    monkeypatch.setattr(guidance, "SEQUENTIAL_NUMEL", x.numel())  # this input is now "large"
    apart = classifier_free(model, cond, null, 1.5)(x, s)
    assert batches == [4, 2, 2] and torch.allclose(joint, apart)


def test_drop_conditions_replaces_whole_samples_with_no_condition():
    pitch = Condition("pitch", classes=["1", "2"])
    cond = {"class": torch.tensor([1, 2, 3]), "pitch": torch.tensor([0, 1, 0])}
    out = drop_conditions([DIGITS, pitch], cond, torch.tensor([False, True, False]))
    assert out["class"].tolist() == [1, 10, 3] and out["pitch"].tolist() == [0, 2, 0]


def _cond_cfg(digits_config, steps=2, **extra):
    items = {"train.steps": steps, "train.batch_size": 8, "train.log_every": 1, "train.samples": 4,
             "train.warmup_steps": 1, "backbone.channels": 16, "data.cond": "[class]", "train.cond_dropout": 0.5}
    items.update(extra)
    return load_config(digits_config, [f"{k}={v}" for k, v in items.items()])


def test_conditional_run_records_its_conditions_and_generates_on_request(tmp_path, digits_config, capsys):
    run = tmp_path / "run"
    train(_cond_cfg(digits_config, **{"train.lr": 0.01}), run, progress=False)
    gen = load(run, device="cpu", weights="model")  # after 2 steps the EMA is still the (label-blind) init
    assert gen.condition_spec() == {"class": [str(d) for d in range(10)]}
    assert "class" in (run / "config.yaml").read_text()
    out = gen.generate(4, steps=1, seed=0, cond={"class": ["7", "3"]}, bf16=False)
    assert out.shape == (4, 1, 8, 8)
    same = gen.generate(4, steps=1, seed=0, cond={"class": ["7", "3"]}, bf16=False)
    other = gen.generate(4, steps=1, seed=0, cond={"class": ["1"]}, bf16=False)
    assert torch.equal(out, same) and not torch.equal(out, other)
    guided = gen.generate(2, steps=2, seed=0, cond={"class": "7"}, cfg_scale=3.0)
    assert guided.shape == (2, 1, 8, 8) and torch.isfinite(guided).all()
    assert main(["info", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["conditions"] == {"class": [str(d) for d in range(10)]}
    assert main(["generate", str(run), "--class", "7", "-n", "2", "--out", str(tmp_path / "g.png")]) == 0
    assert (tmp_path / "g.png").is_file()
    capsys.readouterr()
    assert main(["generate", str(run), "--class", "seven", "--out", str(tmp_path / "h.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown value 'seven'") and "valid: 0, 1" in err[0]
    assert main(["generate", str(run), "--cond", "class", "--out", str(tmp_path / "h.png")]) == 2
    assert "--cond expects NAME=VALUE" in capsys.readouterr().err
    assert main(["generate", str(run), "--class", "7", "--cfg-scale", "2", "--guide", "pitch", "--out",
                 str(tmp_path / "h.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--guide / sample.guide names 'pitch'" in err[0] and "its conditions: class" in err[0]
    assert main(["generate", str(run), "--class", "7", "--cfg-scale", "2", "--guide", "class", "-n", "2", "--out",
                 str(tmp_path / "i.png")]) == 0


def test_data_cond_naming_an_unlabelled_condition_is_an_error(tmp_path, digits_config):
    with pytest.raises(UserError, match="data.cond names 'pitch'.*it has: class"):
        train(_cond_cfg(digits_config, **{"data.cond": "[pitch]"}), tmp_path / "r", progress=False)


def test_guided_distillation_student_takes_the_scale_as_input(tmp_path, digits_config):
    teacher = tmp_path / "teacher"
    train(_cond_cfg(digits_config, **{"method.name": "edm"}), teacher, progress=False)
    student = tmp_path / "student"
    cfg = _cond_cfg(digits_config, **{"method.name": "cd", "method.teacher": str(teacher), "method.cfg_scale": "[0, 4]"})
    train(cfg, student, progress=False)
    gen = load(student, device="cpu")
    assert gen.guided_student and GUIDANCE not in gen.condition_spec()
    calls = []
    backbone = gen.model.backbone
    original = backbone.forward
    backbone.forward = lambda *a, **k: calls.append(a[0].shape[0]) or original(*a, **k)
    a = gen.generate(3, steps=1, seed=0, cond={"class": "7"}, cfg_scale=0.0, bf16=False)
    b = gen.generate(3, steps=1, seed=0, cond={"class": "7"}, cfg_scale=4.0, bf16=False)
    assert calls == [3, 3]  # one evaluation of the batch per sample, whatever the scale
    assert a.shape == (3, 1, 8, 8) and torch.isfinite(b).all()
    with pytest.raises(UserError, match="--cfg-scale"):
        gen.generate(1, cond={GUIDANCE: 2})


def test_method_sections_are_each_methods_own_dataclass(digits_config):
    from cm_media.methods.consistency_training import ICTConfig
    from cm_media.methods.distillation import CDConfig

    cfg = load_config(digits_config)
    assert type(cfg.method) is ICTConfig and cfg.method.s1 == 40
    cd = load_config(digits_config, ["method.name=cd", "method.teacher=x", "method.cfg_scale=[1, 3]"])
    assert type(cd.method) is CDConfig and cd.method.cfg_scale == [1, 3] and not hasattr(cd.method, "s1")
    with pytest.raises(UserError, match="unknown config key method.bogus"):
        load_config(digits_config, ["method.bogus=1"])
    with pytest.raises(UserError, match="method.cfg_scale must be"):
        load_config(digits_config, ["method.name=cd", "method.teacher=x", "method.cfg_scale=[3, 1]"])


def test_conditional_configs_label_their_data(repo_root):
    """digits by class, moving digits by digit1/digit2 (null where a clip shows one digit), tones by pitch."""
    from pathlib import Path

    from cm_media.registry import get_modality

    cases = {"video/moving_digits_cond_ict.yaml": ["data.clips=20"], "audio/tones_pitch_ict.yaml": ["data.tones=16"],
             "image/digits_class_ict.yaml": []}
    for name, extra in cases.items():
        cfg = load_config(Path(repo_root) / "configs" / name, extra)
        modality = get_modality(cfg.modality)
        ds = modality.build_dataset(cfg, modality.build_codec(cfg), "train")
        cond = ds.get_cond(torch.arange(len(ds)))
        assert [c.name for c in ds.conditions] == list(cfg.data.cond) == list(cond)
        for c in ds.conditions:
            assert cond[c.name].shape == (len(ds),) and 0 <= cond[c.name].min() and cond[c.name].max() <= len(c.classes)
        if cfg.modality == "video":  # the second digit is "no condition" exactly where a clip shows one digit
            one = cond["digit2"] == 10
            assert one.any() and (~one).any() and (cond["digit1"] < 10).all()
        if cfg.modality == "audio":  # pitch class index = MIDI number - midi_low, the note's own pitch
            assert torch.equal(cond["pitch"] + cfg.data.midi_low, ds.labels.long())


def test_null_like_and_drop_conditions_with_names_leave_the_other_conditions_as_given():
    pitch = Condition("pitch", classes=["1", "2"])
    cond = {"class": torch.tensor([1, 2, 3]), "pitch": torch.tensor([0, 1, 0])}
    null = null_like([DIGITS, pitch], cond, ["class"])
    assert null["class"].tolist() == [10, 10, 10] and null["pitch"].tolist() == [0, 1, 0]
    out = drop_conditions([DIGITS, pitch], cond, torch.tensor([True, False, True]), ["pitch"])
    assert out["class"].tolist() == [1, 2, 3] and out["pitch"].tolist() == [2, 1, 2]


def test_guidance_of_one_condition_holds_the_other_in_both_evaluations():
    """sample.guide [instrument]: D_w = D(p, null) + w (D(p, i) - D(p, null)), the pitch p given in both."""
    pitch, inst = Condition("pitch", classes=["a", "b"]), Condition("instrument", classes=["x", "y", "z"])

    def model(x, s, cond):  # D = x * (1 + pitch) * (10 + instrument): both conditions change the result
        p, i = cond["pitch"].float(), cond["instrument"].float()
        return x * ((1 + p) * (10 + i)).reshape(-1, 1)

    x, s = torch.ones(2, 1), torch.ones(2)
    cond = {"pitch": torch.tensor([0, 1]), "instrument": torch.tensor([1, 2])}
    got = classifier_free(model, cond, null_like([pitch, inst], cond, guided_names([pitch, inst], ["instrument"])), 3.0)
    p, i = torch.tensor([1.0, 2.0]), torch.tensor([11.0, 12.0])
    expect = p * 13 + 3.0 * (p * i - p * 13)  # null instrument = index 3 -> 10 + 3
    assert torch.allclose(got(x, s)[:, 0], expect)
    assert guided_names([pitch, inst], []) is None
    with pytest.raises(UserError, match=r"names 'timbre', which this model does not take \(its conditions: pitch, "):
        guided_names([pitch, inst], ["timbre"])


def test_cond_dropout_each_drops_each_condition_alone(repo_root, tmp_path):
    """train.cond_dropout_each: a sample may lose one digit label and keep the other; 0 (the default) drops none."""
    from cm_media.runs import training

    sets = ["train.batch_size=64", "backbone.preset=tiny", "data.clips=40", "codec.frames=4", "train.samples=0",
            "train.bf16=false", "data.cond=[digit1, digit2]", "data.max_digits=2"]
    cfg = load_config(f"{repo_root}/configs/video/moving_digits_ict.yaml", sets + ["train.cond_dropout_each=0.5"])
    run = training.setup(cfg, tmp_path / "run", False, False)
    state = run.gen.get_state()
    _, cond = training.draw_batch(run)
    run.gen.set_state(state)
    idx = torch.randint(0, len(run.dataset), (64,), generator=run.gen)
    given = run.dataset.get_cond(idx)
    lost1, lost2 = cond["digit1"] != given["digit1"], cond["digit2"] != given["digit2"]
    assert (cond["digit1"][lost1] == 10).all() and (cond["digit2"][lost2] == 10).all()
    assert (lost1 & ~lost2).any() and (lost2 & ~lost1).any()  # one label dropped, the other kept
    plain = training.setup(load_config(f"{repo_root}/configs/video/moving_digits_ict.yaml", sets),
                           tmp_path / "plain", False, False)
    state = plain.gen.get_state()
    _, cond = training.draw_batch(plain)
    plain.gen.set_state(state)
    given = plain.dataset.get_cond(torch.randint(0, len(plain.dataset), (64,), generator=plain.gen))
    assert all(torch.equal(cond[k], given[k]) for k in given)
    with pytest.raises(UserError, match=r"train.cond_dropout_each must be in \[0, 1\), got 1"):
        load_config(f"{repo_root}/configs/video/moving_digits_ict.yaml", sets + ["train.cond_dropout_each=1"])


def test_sample_guide_is_a_list_of_names(digits_config):
    assert load_config(digits_config, ["sample.guide=[class]"]).sample.guide == ["class"]
    assert load_config(digits_config, ["sample.guide=[a, b]"]).sample.guide == ["a", "b"]
    assert load_config(digits_config, []).sample.guide == []
    with pytest.raises(UserError, match=r"sample.guide must be a list of condition names, got \[3\]"):
        load_config(digits_config, ["sample.guide=[3]"])
    with pytest.raises(UserError, match="config key sample.guide must be a list, got 'class'"):
        load_config(digits_config, ["sample.guide=class"])


def test_generator_guide_argument_overrides_the_models_default_without_changing_it():
    """Generator.options / conditioned take `guide` (None: the run's sample.guide; []: all conditions); the
    model's config is left as it was, and an unknown name is a one-line error."""
    from cm_media import load

    gen = load("fashion-mnist", device="cpu")
    pitch, inst = Condition("pitch", classes=["a", "b"]), Condition("instrument", classes=["x", "y", "z"])
    gen.conditions, gen.cfg.sample.guide = [pitch, inst], ["pitch"]

    def model(x, s, cond):  # D = x * (1 + pitch) * (10 + instrument)
        return x * ((1 + cond["pitch"].float()) * (10 + cond["instrument"].float())).reshape(-1, 1)

    x, s = torch.ones(2, 1), torch.ones(2)
    cond = {"pitch": torch.tensor([0, 1]), "instrument": torch.tensor([1, 2])}
    p, i = torch.tensor([1.0, 2.0]), torch.tensor([11.0, 12.0])
    towards_instrument = p * 13 + 3.0 * (p * i - p * 13)  # null instrument: index 3
    towards_pitch = 3 * i + 3.0 * (p * i - 3 * i)  # null pitch: index 2 -> 1 + 2
    towards_all = 3 * 13 + 3.0 * (p * i - 3 * 13)
    assert torch.allclose(gen.conditioned(model, cond, 3.0)(x, s)[:, 0], towards_pitch)  # the model's default
    assert torch.allclose(gen.conditioned(model, cond, 3.0, ["instrument"])(x, s)[:, 0], towards_instrument)
    assert torch.allclose(gen.conditioned(model, cond, 3.0, [])(x, s)[:, 0], towards_all)
    assert gen.options().guide == ["pitch"] and gen.options(guide=["instrument"]).guide == ["instrument"]
    assert gen.options(guide=[]).guide == [] and gen.cfg.sample.guide == ["pitch"]
    with pytest.raises(UserError, match="names 'timbre', which this model does not take"):
        gen.options(guide=["timbre"])
