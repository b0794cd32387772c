"""Patch transformer (DiT): shapes on 1-3 axes, adaLN-zero init, conditioning, tokenizer, presets, CLI run."""

import pytest
import torch
from einops import rearrange

from cm_media.cli import main
from cm_media.errors import UserError
from cm_media.nn import ARCHS, build_backbone
from cm_media.nn.transformer import DiT, DiTConfig, grid_embedding, sincos_1d
from modalities.image.presets import PRESETS

CASES = {  # name: (input shape, overrides)
    "waveform-1d": ((2, 2, 37), {"patch_size": 8}),
    "image-2d": ((2, 1, 7, 9), {"patch_size": 2}),
    "video-joint": ((2, 3, 5, 9, 11), {"patch_size": [2, 4, 4]}),
    "video-factorized": ((2, 3, 5, 9, 11), {"patch_size": [2, 4, 4], "attention": "factorized"}),
}


def make(shape, **overrides) -> DiT:
    section = {"arch": "dit", "size": "dit-micro", **overrides}
    return build_backbone(section, {}, dims=len(shape) - 2, in_channels=shape[1])


def perturb(model: torch.nn.Module, seed: int = 0) -> None:
    """Move every parameter off its initial value so zero-initialized paths start to matter."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("name", list(CASES))
def test_shape_kept_and_fresh_output_is_zero(name):
    shape, overrides = CASES[name]
    model = make(shape, **overrides)
    out = model(torch.randn(shape), torch.randn(shape[0]))
    assert out.shape == shape  # sizes not divisible by the patch are padded and cropped back
    assert torch.equal(out, torch.zeros(shape))  # adaLN-zero + zero final layer


@pytest.mark.parametrize("name", list(CASES))
def test_conditioning_and_input_change_output_after_perturbation(name):
    shape, overrides = CASES[name]
    model = make(shape, **overrides)
    perturb(model)
    x = torch.randn(shape)
    out_a = model(x, torch.full((shape[0],), -1.0))
    out_b = model(x, torch.full((shape[0],), 0.5))
    assert torch.isfinite(out_a).all()
    assert (out_a - out_b).abs().max() > 1e-3  # the noise level steers the output
    assert (model(x + 1.0, torch.full((shape[0],), -1.0)) - out_a).abs().max() > 1e-3


def test_zero_init_still_trains_the_output_layer():
    model = make((2, 1, 8, 8))
    loss = (model(torch.randn(2, 1, 8, 8), torch.zeros(2)) - torch.randn(2, 1, 8, 8)).square().sum()
    loss.backward()
    assert model.final.linear.weight.grad.abs().sum() > 0  # the zeroed layer still gets a gradient


def test_factorized_attends_over_time_and_space_separately():
    shape = (1, 1, 4, 4, 4)
    joint = make(shape, patch_size=[1, 2, 2])
    fact = make(shape, patch_size=[1, 2, 2], attention="factorized")
    assert not hasattr(joint.blocks[0], "attn_t") and hasattr(fact.blocks[0], "attn_t")
    perturb(fact)
    x = torch.randn(shape)
    base = fact(x, torch.zeros(1))
    # changing frame 0 reaches frame 3 (temporal attention) and the far corner of it (spatial attention)
    x2 = x.clone()
    x2[:, :, 0, :2, :2] += 1.0
    diff = (fact(x2, torch.zeros(1)) - base).abs()
    assert diff[:, :, 3, 2:, 2:].max() > 1e-4


def test_factorized_needs_two_axes():
    with pytest.raises(UserError, match="factorized attention needs at least 2 data axes"):
        make((1, 1, 16), attention="factorized")


def test_tokens_are_patches_and_round_trip():
    model = make((1, 2, 4, 6), patch_size=2)
    x = torch.arange(48.0).reshape(1, 2, 4, 6)
    tokens = rearrange(x, model._to_tokens, p0=2, p1=2)  # [B, L, p0 p1 C]
    assert tokens.shape == (1, 6, 8)
    torch.testing.assert_close(tokens[0, 1], rearrange(x[0, :, 0:2, 2:4], "c p0 p1 -> (p0 p1 c)"))
    back = rearrange(tokens, model._from_tokens, p0=2, p1=2, g0=2, g1=3)
    assert torch.equal(back, x)


def test_sincos_grid_embedding_concatenates_axes():
    emb = grid_embedding([sincos_1d(3, 4), sincos_1d(5, 4)], width=10)  # [15, 10]
    assert emb.shape == (15, 10)
    torch.testing.assert_close(emb[7, :4], sincos_1d(3, 4)[1])  # token (1, 2)
    torch.testing.assert_close(emb[7, 4:8], sincos_1d(5, 4)[2])
    assert torch.equal(emb[:, 8:], torch.zeros(15, 2))
    omega = torch.tensor([1.0, 0.01])  # 1 / 10000^(i / 2) for i = 0, 1
    torch.testing.assert_close(sincos_1d(4, 4)[3], torch.cat([(3 * omega).sin(), (3 * omega).cos()]))


@pytest.mark.parametrize("pos_embed", ["sincos", "learned"])
def test_longer_inputs_than_trained_run(pos_embed):
    model = make((2, 1, 8, 8), pos_embed=pos_embed, pos_len=4)
    perturb(model)
    for size in (8, 20):
        out = model(torch.randn(2, 1, size, size), torch.zeros(2))
        assert out.shape == (2, 1, size, size) and torch.isfinite(out).all()


def test_size_presets_and_overrides():
    model = make((1, 1, 8, 8), size="dit-tiny", depth=2)
    assert len(model.blocks) == 2 and model.patch_embed.out_features == 128
    assert model.blocks[0].attn.num_heads == 4
    assert DiTConfig(size="dit-b").resolved() == (12, 768, 12)
    with pytest.raises(UserError, match="unknown DiT size 'dit-q'"):
        make((1, 1, 8, 8), size="dit-q")
    with pytest.raises(UserError, match="unknown attention_backend"):
        make((1, 1, 8, 8), attention_backend="fast")
    with pytest.raises(UserError, match="unknown config key backbone.channels"):
        make((1, 1, 8, 8), channels=3)


def test_registered_and_image_presets_pick_it():
    assert ARCHS["dit"] == (DiTConfig, DiT)
    model = build_backbone({"preset": "dit-digits", "depth": 1}, PRESETS, dims=2, in_channels=1)
    assert isinstance(model, DiT) and model.patch == [2, 2]


def test_bf16_autocast_forward():
    model = make((2, 1, 8, 8))
    perturb(model)
    x = torch.randn(2, 1, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x, torch.zeros(2))
    ref = model(x, torch.zeros(2))
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max() + 1e-3


def test_cli_trains_and_samples_a_dit_on_digits(tmp_path, repo_root, tiny_overrides):
    config = f"{repo_root}/configs/experiments/image/digits_dit_ict.yaml"
    out = tmp_path / "run"
    argv = ["train", config, *tiny_overrides(steps=3), "--set", "backbone.size=dit-micro", "--out", str(out),
            "--no-progress"]
    assert main(argv) == 0
    stored = (out / "config.yaml").read_text()  # the preset is stored resolved
    assert "arch: dit" in stored and "size: dit-micro" in stored
    assert list((out / "checkpoints").glob("*.safetensors"))
    assert (out / "samples" / "samples_1step.png").is_file()


def test_cli_selects_dit_over_a_unet_preset(tmp_path, capsys, digits_config, tiny_overrides):
    config = digits_config
    argv = ["train", config, *tiny_overrides(steps=1), "--set", "backbone.preset=null", "--set", "backbone.arch=dit",
            "--set", "backbone.size=dit-micro", "--set", "backbone.patch_size=4", "--out", str(tmp_path / "r"),
            "--no-progress"]
    assert main(argv) == 0
    assert main(["train", config, "--set", "backbone.arch=dit", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown config key backbone.channels for arch 'dit'" in capsys.readouterr().err


@pytest.mark.parametrize("config,extra", [
    ("configs/experiments/audio/tones_waveform_ict.yaml", ["backbone.patch_size=16"]),
    ("configs/audio/tones_spectrogram_ict.yaml", ["backbone.patch_size=4"]),
    ("configs/video/moving_digits_ict.yaml", ["backbone.patch_size=[2,4,4]", "backbone.attention=factorized"]),
])
def test_dit_trains_and_generates_on_audio_and_video(repo_root, tmp_path, tiny_overrides, config, extra):
    out = tmp_path / "run"
    sets = ["backbone.preset=null", "backbone.arch=dit", "backbone.size=dit-micro", "train.bf16=false", *extra]
    argv = ["train", f"{repo_root}/{config}", *tiny_overrides(steps=2, **{"train.samples": 2}), "--out", str(out),
            "--no-progress"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 0
    stored = (out / "config.yaml").read_text()
    assert "arch: dit" in stored
    assert list((out / "samples").iterdir())
