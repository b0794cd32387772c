"""cm_media/nn/shipped.py: the shipped feature nets' one writer and one reader."""

import json

import torch
from safetensors import safe_open
from torch import nn

from cm_media.nn.shipped import METADATA_KEY, load_shipped, save_shipped


def test_shipped_net_round_trip_with_its_metadata(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    path = tmp_path / "net.safetensors"
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}
    save_shipped(state, path, {"command": "python -m x", "test_accuracy": "0.9"})
    with safe_open(str(path), "pt") as f:
        assert json.loads(f.metadata()[METADATA_KEY]) == {"command": "python -m x", "test_accuracy": "0.9"}
    back = load_shipped(lambda: nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), path)
    assert not back.training and not any(p.requires_grad for p in back.parameters())
    assert back[0].weight.dtype == torch.float32  # stored in float16, read as float32
    assert torch.equal(back[0].weight, net[0].weight.half().float())
    assert load_shipped(nn.Identity, tmp_path / "missing.safetensors") is None
