"""Every named DiT preset of every modality builds through build_model with the modality's presets and maps the
shipped config's sample shape to itself. A preset not (yet) in its modality's presets dict is skipped."""

import pytest
import torch

from cm_media.nn.transformer import DiT
from cm_media.registry import get_modality
from cm_media.runs.config import load_config
from cm_media.runs.model import build_model

# (modality, preset, shipped config whose data/codec give the shape, expected patch per axis)
CASES = [
    ("image", "dit-digits", "configs/image/digits_ict.yaml", [2, 2]),
    ("audio", "dit-wave-small", "configs/experiments/audio/tones_waveform_ict.yaml", [32]),
    ("audio", "dit-spec-small", "configs/audio/tones_spectrogram_ict.yaml", [4, 4]),
    ("video", "dit-video-small", "configs/video/moving_digits_ict.yaml", [2, 4, 4]),
]


@pytest.mark.parametrize("modality,preset,config,patch", CASES, ids=[c[1] for c in CASES])
def test_named_dit_preset_forward_shape(repo_root, modality, preset, config, patch):
    if preset not in get_modality(modality).backbone_presets:
        pytest.skip(f"{modality} has no preset {preset!r} yet")
    cfg = load_config(f"{repo_root}/{config}", [f"backbone.preset={preset}"])
    mod, codec, model = build_model(cfg)
    backbone = model.backbone.eval()
    assert isinstance(backbone, DiT) and backbone.patch == patch
    shape = mod.sample_shape(cfg, codec)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = backbone(x, torch.zeros(2))
    assert out.shape == x.shape and torch.isfinite(out).all()
