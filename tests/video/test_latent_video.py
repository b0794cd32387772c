"""Learned latent codecs end to end: a codec run trained by `cm-media train` (PSNR in metrics.jsonl, latent scale
in the EMA weights), a latent consistency model naming it in `codec.path` (the codec travels with checkpoints and
exports), first-frame conditioning (frames as input channels, `--first-frame`), and the new video datasets."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cm_media.cli import main
from cm_media.conditions import Condition, derived_conditions, drop_conditions, null_like, request_tensors
from cm_media.errors import UserError
from cm_media.nn.embedding import FrameInputs
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import load_config
from cm_media.runs.generator import load
from cm_media.runs.model import build_model
from modalities.video import moving_mnist as mm

ROOT = Path(__file__).resolve().parents[2]
CODEC_CONFIG = ROOT / "configs" / "video" / "moving_mnist_codec.yaml"
LATENT_CONFIG = ROOT / "configs" / "video" / "moving_mnist_latent_ict.yaml"
HAVE_DIGITS = mm.find_debian_file(mm.DIGITS_PACKAGE, ["digits.png", "digits.png.gz"], mm.DIGITS_CANDIDATES) is not None
needs_digits = pytest.mark.skipif(not HAVE_DIGITS, reason="Debian package opencv-doc is not installed")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _sets(d):
    out = []
    for k, v in d.items():
        out += ["--set", f"{k}={v}"]
    return out


SMALL = {"codec.size": 32, "codec.frames": 4, "data.clips": 64, "train.batch_size": 2, "train.log_every": 2,
         "train.warmup_steps": 1, "train.checkpoint_every": 100}


@pytest.fixture(scope="module")
def codec_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("codec") / "run"
    sets = {**SMALL, "train.steps": 4, "backbone.channels": 4, "backbone.latent_channels": 2}
    assert main(["train", str(CODEC_CONFIG), "--out", str(run), "--no-progress", *_sets(sets)]) == 0
    return run


@pytest.fixture(scope="module")
def latent_run(codec_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("latent") / "run"
    sets = {**SMALL, "train.steps": 2, "codec.path": str(codec_run), "backbone.preset": "tiny", "train.samples": 0,
            "train.bf16": "false", "sample.bf16": "false", "sample.channels_last": "false",
            "data.cond": "[digit1,digit2,first_frame]"}
    assert main(["train", str(LATENT_CONFIG), "--out", str(run), "--no-progress", *_sets(sets)]) == 0
    return run


@needs_digits
def test_codec_run_logs_psnr_and_fits_the_latent_scale(codec_run):
    lines = [json.loads(line) for line in (codec_run / "metrics.jsonl").read_text().splitlines()]
    assert all("psnr" in rec and rec["psnr"] > 0 for rec in lines) and lines[-1]["step"] == 4
    tensors, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(codec_run))
    scale = tensors["ema.backbone.latent_scale"]
    assert torch.equal(scale, tensors["model.backbone.latent_scale"]) and float(scale) != 1.0  # EMA copies buffers
    with pytest.raises(UserError, match="codec run"):
        load(codec_run)


@needs_digits
def test_latent_model_records_and_ships_its_codec(codec_run, latent_run, tmp_path):
    cfg = load_config(latent_run / "config.yaml")
    assert cfg.codec.kind == "latent" and cfg.codec.autoencoder["latent_channels"] == 2
    assert cfg.codec.autoencoder["in_channels"] == 1
    names = [c["name"] for c in cfg.backbone["cond"]]
    assert names == ["digit1", "digit2", "first_frame"]
    tensors, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(latent_run))
    codec_state = ckpt.prefixed(tensors, "codec")
    trained, _ = ckpt.load_checkpoint(ckpt.latest_checkpoint(codec_run))
    assert torch.equal(codec_state["ae.decoder.net.0.weight"], trained["ema.backbone.decoder.net.0.weight"])
    exported = tmp_path / "export"
    assert main(["export", str(latent_run), "--out", str(exported)]) == 0
    assert (exported / "README.md").read_text().startswith("# Bundled video model\n\nA consistency model")
    codec_export = tmp_path / "codec_export"
    assert main(["export", str(codec_run), "--out", str(codec_export)]) == 0
    text = (codec_export / "README.md").read_text()
    assert text.startswith("# Bundled video codec\n\nA learned codec (method `autoencoder`")
    assert "codec.path" in text and "cm-media generate" not in text
    moved = codec_run.with_name("moved")
    shutil.move(codec_run, moved)  # generation needs neither the codec run nor the training run
    try:
        gen = load(exported, device="cpu")
        clips = gen.generate(2, steps=1, seed=0, cond={"digit1": "3"})
        assert clips.shape == (2, 1, 4, 32, 32) and 0 <= clips.min() and clips.max() <= 1
    finally:
        shutil.move(moved, codec_run)


@needs_digits
def test_first_frame_from_the_command_line(latent_run, tmp_path):
    picture = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((48, 40)) * 255).astype(np.uint8)).save(picture)
    out = tmp_path / "animated.mp4"
    assert main(["generate", str(latent_run), "--first-frame", str(picture), "-n", "2", "--steps", "1",
                 "--cfg-scale", "1.5", "--out", str(out)]) == 0
    assert out.is_file()
    gen = load(latent_run, device="cpu")
    value = gen.cond_tensors({"first_frame": str(picture)}, 3)["first_frame"]
    assert value.shape == (3, 2 + 1, 1, 8, 8) and torch.all(value[:, -1] == 1)


@needs_digits
@pytest.mark.parametrize("steps,cfg_scale", [(1, None), (2, 1.5)])
def test_generation_keeps_the_given_first_frame(latent_run, steps, cfg_scale):
    gen = load(latent_run, device="cpu")
    given = torch.cat([torch.randn(2, 2, 1, 8, 8), torch.ones(2, 1, 1, 8, 8)], 1)  # [B, C + 1, 1, h, w]: mask last
    value = gen.cond_tensors({"first_frame": given}, 2)["first_frame"]
    value[1, -1] = 0  # sample 1 asks for nothing
    noise = torch.randn(2, 2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    x = gen.sample(noise, steps, torch.Generator().manual_seed(1), cond={"first_frame": value},
                   cfg_scale=cfg_scale)
    assert torch.equal(x[0, :, 0], value[0, :2, 0])  # the given frame, exactly, whatever the network made of it
    assert not torch.allclose(x[1, :, 0], value[1, :2, 0])


@needs_digits
def test_export_swaps_in_a_temporal_decoder_with_the_same_encoder(codec_run, latent_run, tmp_path, capsys):
    temporal = tmp_path / "temporal"
    sets = {**SMALL, "train.steps": 2, "backbone.channels": 4, "backbone.latent_channels": 2,
            "backbone.temporal_blocks": 1, "backbone.temporal_width": 4, "method.frames_per_clip": 0,
            "method.latent_noise": 0.4, "method.train_part": "temporal", "train.init_from": str(codec_run)}
    assert main(["train", str(CODEC_CONFIG), "--out", str(temporal), "--no-progress", *_sets(sets)]) == 0
    out = tmp_path / "export"
    assert main(["export", str(latent_run), "--out", str(out), "--codec", str(temporal), "--dtype", "float32"]) == 0
    swapped, plain = load(out, device="cpu"), load(latent_run, device="cpu")
    assert swapped.cfg.codec.autoencoder["temporal_blocks"] == 1 and swapped.codec.ae.temporal is not None
    clip = torch.rand(1, 1, 4, 32, 32)
    assert torch.equal(swapped.codec.encode(clip), plain.codec.encode(clip))  # the latent space is the model's
    z = plain.codec.encode(clip)
    assert not torch.allclose(swapped.codec.decode(z), plain.codec.decode(z))  # decoded through the new blocks
    noise = torch.randn(1, 2, 4, 8, 8)
    assert torch.equal(swapped.sample(noise, 1), plain.sample(noise, 1))  # the network is unchanged
    assert "--codec" in (out / "README.md").read_text()
    assert main(["export", str(latent_run), "--out", str(tmp_path / "plain")]) == 0
    assert "--codec" not in (tmp_path / "plain" / "README.md").read_text()  # no swap, no mention
    other = tmp_path / "other"  # a codec with its own encoder: the model's latents would not mean the same
    sets = {**SMALL, "train.steps": 1, "backbone.channels": 4, "backbone.latent_channels": 2, "train.seed": 5}
    assert main(["train", str(CODEC_CONFIG), "--out", str(other), "--no-progress", *_sets(sets)]) == 0
    capsys.readouterr()
    assert main(["export", str(latent_run), "--out", str(tmp_path / "bad"), "--codec", str(other)]) == 2
    assert "its encoder is not the model's" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_frame_inputs_pad_mask_and_null():
    seen = {}

    class Net(torch.nn.Module):
        def forward(self, x, c_noise, cond=None):
            seen["x"], seen["cond"] = x, cond
            return x[:, :2]

    c = Condition("first_frame", kind="frames", dim=2, frames=1)
    net = FrameInputs(Net(), [c])
    x0 = torch.randn(3, 2, 5, 4, 4)
    cond = derived_conditions([c], x0)
    assert cond["first_frame"].shape == (3, 3, 1, 4, 4)
    net(torch.zeros(3, 2, 5, 4, 4), torch.zeros(3), {**cond, "other": torch.ones(3)})
    x = seen["x"]
    assert x.shape == (3, 5, 5, 4, 4) and list(seen["cond"]) == ["other"]
    assert torch.equal(x[:, 2:4, 0], x0[:, :, 0]) and torch.all(x[:, 4, 0] == 1) and torch.all(x[:, 2:, 1:] == 0)
    null = null_like([c], cond)["first_frame"]
    assert torch.all(null == 0)
    dropped = drop_conditions([c], cond, torch.tensor([True, False, True]))["first_frame"]
    assert torch.all(dropped[0] == 0) and torch.equal(dropped[1], cond["first_frame"][1])
    assert request_tensors([c], {"first_frame": cond["first_frame"][:2]}, 5)["first_frame"].shape == (5, 3, 1, 4, 4)
    with pytest.raises(UserError):
        request_tensors([c], {"first_frame": "photo.png"}, 1)


def test_frame_conditioned_backbone_keeps_the_data_channels(tmp_path):
    cfg = load_config(ROOT / "configs" / "video" / "moving_digits_ict.yaml",
                      ["backbone.preset=tiny", "codec.size=16", "codec.frames=4"])
    spec = [Condition("first_frame", kind="frames", dim=1, frames=1).to_dict()]
    cfg.backbone = {**cfg.backbone, "cond": spec}
    _, _, model = build_model(cfg)
    x = torch.randn(2, 1, 4, 16, 16)
    assert model(x, torch.ones(2), {"first_frame": torch.ones(2, 2, 1, 16, 16)}).shape == x.shape


def test_latent_codec_errors(tmp_path):
    with pytest.raises(UserError, match="codec.path not found"):
        load_config(LATENT_CONFIG, ["codec.path=" + str(tmp_path / "missing")])
    with pytest.raises(UserError, match="codec.kind"):
        load_config(LATENT_CONFIG, ["codec.kind=vae"])


@needs_digits
def test_moving_mnist_dataset_labels_and_pixels_for_learned_codecs():
    from modalities.video import MODALITY

    cfg = load_config(ROOT / "configs" / "experiments" / "video" / "moving_mnist_pixel_ict.yaml",
                      ["data.clips=40", "codec.frames=4"])
    codec = MODALITY.build_codec(cfg)
    ds = MODALITY.build_dataset(cfg, codec, "train")
    batch = ds.get_batch(torch.arange(3))
    assert batch.shape == (3, 1, 4, 64, 64) and batch.min() >= -1 and ds.encoded
    cond = ds.get_cond(torch.arange(3))
    assert set(cond) == {"digit1", "digit2"} and cond["digit1"].dtype == torch.long
    held = MODALITY.build_dataset(cfg, codec, "eval")
    assert len(held) == 256 and held.source.split == "test"
