"""The named video DiT presets build through the video modality's presets and map a clip to its own shape."""

import pytest
import torch

from cm_media.nn import build_backbone
from cm_media.nn.transformer import DiT
from cm_media.runs.config import load_config
from cm_media.runs.model import build_model
from modalities.video.presets import PRESETS


def perturb(model):
    """Move the zero-initialised adaLN and output maps off zero so the output depends on the input."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def test_dit_video_small_runs_on_the_moving_digits_config(repo_root):
    cfg = load_config(f"{repo_root}/configs/video/moving_digits_ict.yaml", ["backbone.preset=dit-video-small"])
    modality, codec, model = build_model(cfg)
    backbone = perturb(model.backbone.eval())
    assert isinstance(backbone, DiT) and backbone.patch == [2, 4, 4] and backbone.cfg.attention == "factorized"
    shape = modality.sample_shape(cfg, codec)  # (1, 16, 32, 32)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = backbone(x, torch.zeros(2))
    assert out.shape == x.shape and torch.isfinite(out).all()
    # frames interact: changing the last frame changes the first one's output (attention across time)
    y = x.clone()
    y[:, :, -1] += 1
    with torch.no_grad():
        assert (backbone(y, torch.zeros(2))[:, :, 0] - out[:, :, 0]).abs().max() > 0


@pytest.mark.parametrize("name", [n for n in PRESETS if n.startswith("dit-video")])
def test_every_video_dit_preset_builds_and_keeps_odd_shapes(name):
    overrides = {"depth": 1} if name != "dit-video-small" else {}  # the GPU sizes: one block is enough here
    model = build_backbone({"preset": name, **overrides}, PRESETS, dims=3, in_channels=1).eval()
    assert isinstance(model, DiT)
    x = torch.randn(1, 1, 5, 12, 10)  # not a multiple of the tubelet: padded and cropped back
    with torch.no_grad():
        out = model(x, torch.zeros(1))
    assert out.shape == x.shape and torch.isfinite(out).all()
