"""A run is assembled once (issue 37): setting up training builds the preset, the conditions, the codec, the data
set and the network once each, one codec serves the data and the network, and the backbone takes typed
conditions; loading builds the network from the stored `backbone.cond`, parsed once. Parameterization kinds are objects."""

import os

import pytest
import torch

from cm_media import conditions as conditions_module
from cm_media.math.kinds import KINDS, SamplePlan, kind_of
from cm_media.registry import get_modality
from cm_media.runs import model as model_module
from cm_media.runs.config import load_config
from cm_media.runs.loader import load_run
from cm_media.runs.training import setup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASS_CONFIG = os.path.join(ROOT, "configs", "image", "digits_class_ict.yaml")


def counting(monkeypatch, owner, name, calls):
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


def test_training_setup_builds_each_part_once(monkeypatch, tmp_path):
    cfg = load_config(CLASS_CONFIG, ["backbone.preset=tiny", "train.steps=1", "train.batch_size=4",
                                     "train.threads=1"])  # (validation builds a meta-device network of its own)
    calls: dict[str, int] = {}
    image = get_modality("image")
    counting(monkeypatch, image, "build_codec", calls)
    real_dataset, seen = image.build_dataset, {}

    def build_dataset(cfg, codec, split="train"):
        calls["build_dataset"] = calls.get("build_dataset", 0) + 1
        seen["codec"] = codec
        return real_dataset(cfg, codec, split)

    monkeypatch.setattr(image, "build_dataset", build_dataset)
    for name in ("build_backbone", "resolve_backbone"):
        counting(monkeypatch, model_module, name, calls)
    for owner in (conditions_module, model_module):  # the data set's conditions come typed: no parsing
        counting(monkeypatch, owner, "conditions_from_spec", calls)
    run = setup(cfg, tmp_path / "run", resume=False, progress=False)
    assert calls == {"build_codec": 1, "build_dataset": 1, "build_backbone": 1, "resolve_backbone": 1}
    assert seen["codec"] is run.codec  # one codec for the data and the network
    assert [c.name for c in run.conditions] == ["class"] and run.cfg.backbone["cond"][0]["name"] == "class"
    assert "preset" not in run.cfg.backbone  # stored resolved


def test_loading_parses_the_stored_conditions_once(monkeypatch, tmp_path):
    from cm_media.runs.training import train

    cfg = load_config(CLASS_CONFIG, ["backbone.preset=tiny", "train.steps=1", "train.batch_size=4",
                                     "train.threads=1", "train.samples=0"])
    last = train(cfg, tmp_path / "run", progress=False)
    calls: dict[str, int] = {}
    real_assemble = model_module.assemble

    def assemble(*args, **kwargs):  # counted while the network is built (after the file's config is validated)
        for owner in (conditions_module, model_module):  # the parser, wherever it is called from
            counting(monkeypatch, owner, "conditions_from_spec", calls)
        counting(monkeypatch, model_module, "build_backbone", calls)
        return real_assemble(*args, **kwargs)

    monkeypatch.setattr("cm_media.runs.loader.assemble", assemble)
    run = load_run(last)
    assert calls == {"conditions_from_spec": 1, "build_backbone": 1}
    embedding = run.model.backbone.embed.cond
    assert [c.name for c in embedding.conditions] == ["class"] and embedding.conditions[0] is run.conditions[0]


def test_meanflow_records_its_interval_input_once():
    cfg = load_config(os.path.join(ROOT, "configs", "experiments", "image", "digits_meanflow.yaml"), ["backbone.preset=tiny"])
    parts = model_module.assemble(cfg)
    assert [c.name for c in parts.conditions] == ["interval"]
    again = model_module.assemble(parts.cfg)  # a stored config: the interval is not added twice
    assert [c.name for c in again.conditions] == ["interval"] and again.cfg.backbone == parts.cfg.backbone


def test_kinds_own_network_sampler_and_nfe():
    assert set(KINDS) == {"consistency", "edm", "trigflow", "meanflow", "codec"}
    assert kind_of("edm") == "edm" and kind_of("edm").nfe(18) == 35 and kind_of("edm").nfe(18, "euler") == 18
    assert kind_of("consistency").nfe(2) == 2 and kind_of("codec").nfe(4) == 0
    assert kind_of("edm").few_step is False and kind_of("meanflow").few_step and not kind_of("codec").generates
    with pytest.raises(ValueError, match="unknown parameterization"):
        kind_of("flow")

    class Zero(torch.nn.Module):
        def forward(self, x, c_noise, cond=None):
            return torch.zeros_like(x)

    noise = torch.randn(2, 1, 4, 4)
    plan = SamplePlan(lambda steps: [80.0, 1.0][:steps], sigma_min=0.002, sigma_max=80.0)
    for name, shift in [("consistency", 0.002), ("edm", 0.0)]:  # F = 0: one step gives x0 = c_skip(80) 80 z
        net = kind_of(name).network(Zero(), sigma_data=0.5, sigma_min=0.002)
        assert net.kind == name
        out = kind_of(name).sample(net, lambda f: f, noise, 1, plan)
        c_skip = 0.25 / ((80 - shift) ** 2 + 0.25)
        assert torch.allclose(out, c_skip * 80 * noise, rtol=1e-5, atol=1e-7), name
    with pytest.raises(ValueError, match="generates nothing"):
        kind_of("codec").sample(None, None, noise, 1, plan)
