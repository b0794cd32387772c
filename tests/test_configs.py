"""Every shipped config loads, validates and builds its model; teacher-based ones name an EDM teacher config."""

from pathlib import Path

import pytest
import torch

from cm_media.runs.config import load_config
from cm_media.runs.model import build_model

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


def test_every_modality_has_teacher_cd_and_ect_configs():
    names = {p.name for p in CONFIGS}
    for prefix in ("digits", "tones_waveform", "tones_spectrogram", "moving_digits"):
        for kind in ("edm", "cd", "ect"):
            assert f"{prefix}_{kind}.yaml" in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_builds_and_runs_one_forward(path):
    cfg = load_config(path, [])
    modality, codec, model = build_model(cfg)
    shape = modality.sample_shape(cfg, codec)
    with torch.no_grad():
        out = model(torch.randn(1, *shape), torch.full((1,), 1.0))
    assert out.shape == (1, *shape)
    if cfg.method.name in ("cd", "ect"):  # the teacher run it names is trained by an EDM config beside it
        teacher_cfg = path.with_name(Path(cfg.method.teacher).name + ".yaml")
        assert teacher_cfg.is_file() and load_config(teacher_cfg, []).method.name == "edm"


def test_a_config_without_a_method_name_takes_the_modalitys_default(tmp_path):
    from cm_media.registry import get_modality

    base = (ROOT / "configs" / "image" / "digits_ict.yaml").read_text()
    path = tmp_path / "c.yaml"
    path.write_text(base.replace("  name: ict\n", ""))
    defaults = get_modality("image").default_methods
    assert load_config(path, []).method.name == defaults["from_data"] == "ict"
    path.write_text(base.replace("  name: ict\n", "  teacher: runs/digits_edm\n"))
    assert load_config(path, []).method.name == defaults["from_teacher"] == "cmt"
    assert load_config(path, ["method.name=cd"]).method.name == "cd"  # a named method always wins
