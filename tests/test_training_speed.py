"""The training fast path: bf16 only where the device computes it fast, the foreach EMA."""

import copy

import pytest
import torch

from cm_media.errors import UserError
from cm_media.runs import precision
from cm_media.runs.config import load_config
from cm_media.runs.ema import update_ema


def test_auto_bf16_follows_the_cpus_native_bf16_and_true_false_force_it():
    fast = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert precision.resolve_bf16("auto", "cpu") is fast
    assert precision.resolve_bf16(True, "cpu") is True and precision.resolve_bf16(False, "cpu") is False
    note = precision.slow_bf16_note(True, "cpu")
    assert (note is None) is fast  # a forced bf16 on a slow CPU is named in one line
    if note is not None:
        assert "train.bf16=auto" in note and "\n" not in note
    assert precision.slow_bf16_note("auto", "cpu") is None and precision.slow_bf16_note(False, "cpu") is None


def test_train_bf16_accepts_true_false_auto_and_names_anything_else(digits_config):
    assert load_config(digits_config, ["train.bf16=auto"]).train.bf16 == "auto"
    assert load_config(digits_config, ["train.bf16=false"]).train.bf16 is False
    with pytest.raises(UserError, match="train.bf16 must be true, false or auto, got 'fast'"):
        load_config(digits_config, ["train.bf16=fast"])


def test_foreach_ema_is_the_lerp_of_every_parameter_and_copies_buffers():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    ema = copy.deepcopy(model)
    before = [p.detach().clone() for p in ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        model[1].running_mean.fill_(0.25)
    update_ema(ema, model, 0.9)
    for e, b, p in zip(ema.parameters(), before, model.parameters()):
        torch.testing.assert_close(e, 0.9 * b + 0.1 * p)
    assert torch.equal(ema[1].running_mean, model[1].running_mean)
    update_ema(ema, model, 0.0)  # decay 0: the EMA is the model
    for e, p in zip(ema.parameters(), model.parameters()):
        torch.testing.assert_close(e, p)


def test_training_names_a_slow_forced_bf16_on_stderr(digits_config, tmp_path, capsys, monkeypatch):
    from cm_media.runs.training import train

    seen = []
    monkeypatch.setattr(precision, "slow_bf16_note", lambda setting, device: seen.append(setting) or "bf16 is slow")
    sets = ["train.steps=1", "train.batch_size=2", "backbone.preset=tiny", "train.samples=0", "train.threads=1",
            "train.bf16=false"]
    train(load_config(digits_config, sets), tmp_path / "run", progress=False)
    assert seen == [False] and "warning: bf16 is slow" in capsys.readouterr().err


@pytest.mark.parametrize("fast", [True, False])
def test_generation_default_bf16_only_where_bf16_is_fast_and_explicit_requests_win(monkeypatch, fast):
    """A bundled model's sample.bf16 default becomes float32 on a CPU without native bf16; bf16=True/False force."""
    import cm_media
    from cm_media.runs import generator

    monkeypatch.setattr(generator, "bf16_is_fast", lambda device: fast)
    gen = cm_media.load("image")
    assert gen.cfg.sample.bf16 is True
    assert gen.options().bf16 is fast
    assert gen.options(bf16=True).bf16 is True and gen.options(bf16=False).bf16 is False
