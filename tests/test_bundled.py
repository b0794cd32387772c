"""Bundled pretrained models and `cm-media export`.

Each bundled model (modalities/<m>/pretrained/) loads by name, generates media of the right shape, duration and
file format, scores far better than an untrained network of the same config, is small, and records a training
command whose config reproduces its weights' architecture and recipe.
"""

import json
import shlex
from pathlib import Path

import av
import pytest
import soundfile as sf
import torch
from PIL import Image
from safetensors import safe_open

import cm_media
from cm_media.cli import main
from cm_media.eval import bench, metrics
from cm_media.nn import resolve_backbone
from cm_media.registry import get_modality
from cm_media.runs.checkpoint import META_KEY, load_checkpoint
from cm_media.runs.config import load_config
from cm_media.runs.generator import Generator
from cm_media.runs.model import build_model
from cm_media.runs.training import train
from modalities.image.feature_net import load_feature_net

ALL = ["image", "video", "audio"]
SHIPPED = ALL  # committed with this version: a missing one fails
# what shapes the weights: everything but bookkeeping (logging, checkpoints, device, threads, sample grid size)
TRAIN_KEYS = ("steps", "batch_size", "lr", "optimizer", "weight_decay", "warmup_steps", "grad_clip", "ema_decay",
              "bf16", "seed")


@pytest.fixture(scope="module")
def gens(bundled):
    """Function m -> the bundled model of modality m, loaded once per module."""
    cache = {}

    def gen(m):
        if m not in cache:
            cache[m] = bundled(m, m in SHIPPED)
        return cache[m]

    return gen


@pytest.mark.parametrize("m", ALL)
def test_bundled_folder_is_small_and_self_describing(m, gens, repo_root):
    gens(m)
    folder = get_modality(m).pretrained_dir()
    weights = folder / "model.safetensors"
    assert weights.stat().st_size < 12 * 2**20  # a few MB
    with safe_open(str(weights), framework="pt") as f:
        keys = list(f.keys())
        meta = json.loads(f.metadata()[META_KEY])
        dtypes = {f.get_tensor(k).dtype for k in keys[:5]}
    assert keys and all(k.startswith("ema.") for k in keys)  # only the EMA weights ship
    assert dtypes == {torch.bfloat16} and meta["dtype"] == "bf16"
    assert meta["config"]["modality"] == m and meta["step"] > 0
    # config.yaml and README.md beside it; the README records the exact training command, whose config exists
    assert (folder / "config.yaml").is_file()
    readme = (folder / "README.md").read_text()
    command = meta["command"]
    assert command in readme and f"{meta['step']}" in readme and "parameters" in readme and "MiB" in readme
    argv = shlex.split(command)
    assert argv[:2] == ["cm-media", "train"] and argv[2].startswith(f"configs/{m}/")
    assert (Path(repo_root) / argv[2]).is_file()


@pytest.mark.parametrize("m", ALL)
def test_recorded_command_trains_the_bundled_recipe(m, gens, repo_root):
    """The recorded config (with its --set overrides) gives the bundled weights' architecture and recipe."""
    gen = gens(m)
    argv = shlex.split(load_checkpoint(gen.source)[1]["command"])
    sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
    cfg = load_config(Path(repo_root) / argv[2], sets)
    bundled = gen.cfg
    presets = get_modality(m).backbone_presets
    def arch(section):  # the conditions are recorded by training from the data (data.cond), not written in configs
        return {k: v for k, v in resolve_backbone(section, presets).items() if k != "cond"}

    assert arch(cfg.backbone) == arch(bundled.backbone)
    assert cfg.data == bundled.data and cfg.codec == bundled.codec and cfg.method == bundled.method
    for key in TRAIN_KEYS:
        recipe, shipped = getattr(cfg.train, key), getattr(bundled.train, key)
        if key == "bf16" and recipe == "auto":  # bf16 where the device computes it fast: the run's choice there
            assert isinstance(shipped, bool), "train.bf16"
            continue
        assert recipe == shipped, f"train.{key}"


def test_bundled_image_is_class_conditional_and_makes_the_requested_digit(gens, tmp_path, capsys):
    """`cm-media generate image --class 7 -n 64 --steps 1` gives sevens (the shipped digit classifier agrees)."""
    gen = gens("image")
    assert gen.condition_spec() == {"class": [str(d) for d in range(10)]}
    net = load_feature_net()
    for digit in ("7", "2"):
        images = gen.generate(64, steps=1, seed=0, cond={"class": digit})
        with torch.no_grad():
            share = (net(images).argmax(1) == int(digit)).float().mean().item()
        assert share >= 0.9, (digit, share)
    assert main(["generate", "image", "--class", "7", "-n", "64", "--steps", "1", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["info", "image", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["conditions"]["class"][7] == "7"


def test_bundled_image_generates_digits_grid(gens, tmp_path):
    gen = gens("image")
    assert all(p.dtype == torch.float32 for p in gen.model.parameters())  # bf16 storage, float32 compute
    images = gen.generate(16, steps=1, seed=0)
    assert images.shape == (16, 1, 8, 8) and images.dtype == torch.float32
    assert 0 <= images.min() and images.max() <= 1 and images.std() > 0.1
    path = gen.save(images, tmp_path / "grid.png")[0]
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width == im.height > 4 * 8


def test_bundled_video_generates_browser_playable_clips(gens, tmp_path):
    gen = gens("video")
    clips = gen.generate(2, steps=1, seed=0)
    c, t, h, w = gen.modality.sample_shape(gen.cfg, gen.codec)
    assert clips.shape == (2, c, t, h, w) == (2, 1, 16, 32, 32)
    assert 0 <= clips.min() and clips.max() <= 1
    longer = gen.generate(1, steps=1, seed=0, frames=24)
    assert longer.shape[2] == 24
    path = gen.save(clips[:1], tmp_path / "clip.mp4")[0]
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f for f in container.decode(stream)]
    assert len(frames) == 16
    assert frames[-1].time == pytest.approx((16 - 1) / gen.cfg.codec.fps, abs=1e-3)  # 2 s at 8 fps


def test_bundled_audio_generates_clips_of_the_asked_length(gens, tmp_path):
    gen = gens("audio")
    rate = gen.cfg.codec.sample_rate
    clips = gen.generate(2, steps=1, seed=0, seconds=2.0)
    assert clips.ndim == 3 and clips.shape[:2] == (2, gen.cfg.codec.channels)
    assert abs(clips.shape[-1] - 2 * rate) <= 0.05 * rate  # spectrogram models decode to whole hops
    assert clips.abs().max() <= 1 and clips.std() > 1e-3
    paths = gen.save(clips, tmp_path / "tones.wav", seconds=2.0)
    assert len(paths) == 2
    info = sf.info(str(paths[0]))
    assert info.samplerate == rate and info.subtype == "PCM_16" and info.format == "WAV"
    assert info.duration == pytest.approx(2.0, abs=1.5 / rate)


QUALITY_N = {"image": 64, "video": 16, "audio": 32}


@pytest.mark.parametrize("m", ALL)
def test_bundled_model_is_far_better_than_untrained(m, gens):
    """FD and KID on the modality's features against held-out real data: trained << untrained of the same config."""
    gen = gens(m)
    n = QUALITY_N[m]
    ref = gen.modality.features(bench._decode(gen, bench.data_items(gen, "eval", 2 * n, 0), 64), gen.cfg)
    torch.manual_seed(0)
    _, codec, model = build_model(gen.cfg)
    untrained = Generator(gen.cfg, model.to(gen.device).eval(), codec, gen.modality, gen.device, gen.source)
    good = metrics.quality_metrics(ref, gen.modality.features(gen.generate(n, steps=1, seed=1), gen.cfg))
    bad = metrics.quality_metrics(ref, gen.modality.features(untrained.generate(n, steps=1, seed=1), gen.cfg))
    assert good["fd"] < 0.25 * bad["fd"], (good, bad)
    assert good["kid"] < 0.25 * bad["kid"], (good, bad)


# ---------------------------------------------------------------- cm-media export


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, digits_config_path):
    sets = {"train.steps": 2, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
            "backbone.preset": "tiny", "train.checkpoint_every": 1000, "train.samples": 4}
    cfg = load_config(digits_config_path, [f"{k}={v}" for k, v in sets.items()])
    out = tmp_path_factory.mktemp("export") / "run"
    train(cfg, out, progress=False)
    return out


@pytest.fixture(scope="module")
def digits_config_path():
    import os

    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "image",
                        "digits_ict.yaml")


def test_export_roundtrip_bf16_and_float32(tiny_run, tmp_path, capsys):
    run = cm_media.load(tiny_run)
    ref = run.generate(8, steps=2, seed=3, bf16=False)
    for dtype, tol in (("float32", 0.0), ("bf16", 0.03)):
        out = tmp_path / dtype
        code = main(["export", str(tiny_run), "--out", str(out), "--dtype", dtype,
                     "--command", "cm-media train configs/image/digits_ict.yaml --set backbone.preset=tiny",
                     "--set", "sample.steps=2"])
        assert code == 0
        assert "exported step 2" in capsys.readouterr().out
        assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.yaml", "model.safetensors"]
        gen = cm_media.load(out)  # a folder with model.safetensors is a source, like a run directory
        assert gen.cfg.sample.steps == 2 and gen.cfg.train.steps == 2
        assert all(p.dtype == torch.float32 for p in gen.model.parameters())
        got = gen.generate(8, steps=2, seed=3, bf16=False)
        assert (got - ref).abs().max().item() <= tol
        readme = (out / "README.md").read_text()
        assert "cm-media train configs/image/digits_ict.yaml --set backbone.preset=tiny" in readme
        assert str(tiny_run) in readme and "step 2" in readme
        assert f"`cm-media generate {out.as_posix()}`" in readme  # not a bundled folder: named by its path
        with safe_open(str(out / "model.safetensors"), framework="pt") as f:
            assert all(k.startswith("ema.") for k in f.keys())
    # bf16 storage is about half of float32
    small, full = (tmp_path / d / "model.safetensors" for d in ("bf16", "float32"))
    assert small.stat().st_size < 0.6 * full.stat().st_size
    # an export of an export keeps the recorded command and source
    main(["export", str(tmp_path / "bf16"), "--out", str(tmp_path / "again")])
    assert "--set backbone.preset=tiny" in (tmp_path / "again" / "README.md").read_text()


def test_export_readme_names_a_bundled_folder_by_its_model_name(tiny_run, tmp_path, monkeypatch, capsys):
    """An export into a bundled model's folder says `generate notes`, not the modality's own model (`generate audio`)."""
    from cm_media.runs import export

    out = tmp_path / "pretrained_fancy"
    monkeypatch.setattr(export, "bundled_models", lambda: {"image": ("image", tmp_path / "pretrained"),
                                                           "fancy": ("image", out)})
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert "`cm-media generate fancy` or `cm_media.load(\"fancy\")`" in readme and "generate image" not in readme


def test_export_default_command_trains_the_exported_config(tiny_run, tmp_path, capsys):
    out = tmp_path / "exp"
    assert main(["export", str(tiny_run / "checkpoints" / "step_00000002.safetensors"), "--out", str(out)]) == 0
    readme = (out / "README.md").read_text()
    assert f"cm-media train {out / 'config.yaml'} --out runs/run" in readme
    assert load_config(out / "config.yaml").to_dict() == cm_media.load(out).cfg.to_dict()


@pytest.mark.parametrize("args, needle", [
    (["export", "/no/such/run", "--out", "x"], "/no/such/run"),
    (["export", "RUN", "--out", "x", "--dtype", "fp8"], "--dtype"),
    (["export", "RUN", "--out", "x", "--set", "train.steps=3"], "sample."),
    (["export", "RUN", "--out", "FILE"], "is a file"),
    (["export", "RUN"], "--out"),
])
def test_export_user_errors(args, needle, tiny_run, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    args = [str(tiny_run) if a == "RUN" else str(tmp_path / "file") if a == "FILE" else
            str(tmp_path / a) if a == "x" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and needle in err[0]


def test_export_rejects_a_checkpoint_without_config(tmp_path, capsys):
    from safetensors.torch import save_file

    bad = tmp_path / "bad.safetensors"
    save_file({"ema.w": torch.zeros(2)}, str(bad))
    assert main(["export", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert "not a cm-media checkpoint" in capsys.readouterr().err


def test_every_bundled_config_yaml_is_the_config_the_weights_load_with():
    """Loading reads the run config from the weights' metadata, not config.yaml: a hand edit of config.yaml (as
    once of `sample.channels_last` for fashion-mnist) changes nothing, so the two must say the same."""
    import yaml

    from cm_media.registry import bundled_models

    folders = bundled_models()
    assert {"image", "fashion-mnist", "sounding-digits"} <= set(folders)
    for name, (_, folder) in folders.items():
        with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
            meta = json.loads(f.metadata()[META_KEY])
        assert yaml.safe_load((folder / "config.yaml").read_text()) == meta["config"], name
