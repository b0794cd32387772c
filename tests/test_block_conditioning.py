"""backbone.cond_mode: conditions through the noise embedding ("embed"), per-block FiLM ("block") or both."""

import pytest
import torch

from cm_media.conditions import Condition
from cm_media.errors import UserError
from cm_media.nn import UNet, UNetConfig
from cm_media.nn.registry import build_backbone
from cm_media.nn.spacetime import SpaceTimeUNet, SpaceTimeUNetConfig

DIGIT1 = Condition("digit1", classes=[str(d) for d in range(10)]).to_dict()
DIGIT2 = Condition("digit2", classes=[str(d) for d in range(10)]).to_dict()
FIRST = Condition("first_frame", kind="frames", dim=4, frames=1).to_dict()


def unet(mode, seed=0):
    torch.manual_seed(seed)
    return UNet(UNetConfig(dims=2, channels=16, channel_mult=[1, 2], num_res_blocks=1, cond=[DIGIT1],
                           cond_mode=mode))


def spacetime(mode, seed=0):
    torch.manual_seed(seed)
    return SpaceTimeUNet(SpaceTimeUNetConfig(channels=8, channel_mult=[1, 2], temporal_attn_levels=[1], num_heads=2,
                                             cond=[DIGIT1, DIGIT2], cond_mode=mode))


def randomize(net, skip=("block_cond", ".cond.")):
    """Give the zero-initialized convs weights (as training would), so a condition could show in the output."""
    with torch.no_grad():
        for name, p in net.named_parameters():
            if not any(s in name for s in skip) and "table" not in name:
                p.add_(0.05 * torch.randn_like(p))


def labels(*values):
    return torch.tensor(values)


def test_default_mode_adds_no_parameters():
    for net in (unet("embed"), spacetime("embed")):
        assert net.block_cond is None
        assert not [k for k in net.state_dict() if ".cond.weight" in k and "embed" not in k]


@pytest.mark.parametrize("make", [unet, spacetime])
def test_block_mode_starts_unchanged_then_follows_the_condition(make):
    net = make("block")
    assert net.block_cond is not None and not [k for k in net.state_dict() if k.startswith("embed.cond")]
    randomize(net)
    x = torch.randn(2, 1, 4, 8, 8) if make is spacetime else torch.randn(2, 1, 8, 8)
    c = torch.tensor([0.3, -0.2])
    names = ["digit1", "digit2"] if make is spacetime else ["digit1"]
    with torch.no_grad():
        a = net(x, c, {n: labels(3, 3) for n in names})
        b = net(x, c, {n: labels(7, 1) for n in names})
        none = net(x, c, None)
    assert a.shape == x.shape
    # the FiLM maps start at zero: the output does not depend on the condition yet (the noise embedding has none)
    assert torch.equal(a, b) and torch.equal(a, none)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith(".cond.weight"):
                p.normal_(0, 0.05)
        a, b = net(x, c, {n: labels(3, 3) for n in names}), net(x, c, {n: labels(7, 1) for n in names})
    assert (a - b).abs().max() > 1e-4


@pytest.mark.parametrize("make", [unet, spacetime])
def test_both_mode_loads_an_embed_models_weights_and_gives_its_output(make):
    """init_from an "embed" model into "both": only the block FiLM is new, and it starts at zero."""
    old, new = make("embed", seed=1), make("both", seed=2)
    randomize(old)
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("block_cond") or ".cond." in k for k in missing)
    x = torch.randn(2, 1, 4, 8, 8) if make is spacetime else torch.randn(2, 1, 8, 8)
    c, cond = torch.tensor([0.1, 0.5]), {"digit1": labels(2, 9)}
    with torch.no_grad():
        assert torch.allclose(old(x, c, cond), new(x, c, cond), atol=1e-6)


def test_block_mode_rejects_unknown_conditions_and_takes_frames_as_inputs():
    net = unet("block")
    with pytest.raises(ValueError, match="unknown condition"):
        net(torch.randn(1, 1, 8, 8), torch.zeros(1), {"colour": labels(1)})
    # a model whose only condition is a frame condition has no block FiLM to build
    video = build_backbone({"preset": "tiny", "cond": [FIRST], "cond_mode": "block"},
                           {"tiny": {"arch": "spacetime_unet", "channels": 8, "channel_mult": [1, 2],
                                     "temporal_attn_levels": [1], "num_heads": 2}}, 3, 4)
    assert video.net.block_cond is None
    x = torch.randn(1, 4, 4, 8, 8)
    first = torch.randn(1, 5, 1, 8, 8)
    assert video(x, torch.zeros(1), {"first_frame": first}).shape == x.shape


def test_bad_cond_mode_is_a_user_error_naming_the_choices():
    with pytest.raises(UserError, match="cond_mode must be one of embed, block, both"):
        build_backbone({"arch": "unet", "channels": 8, "channel_mult": [1], "cond_mode": "film"}, {}, 2, 1)
