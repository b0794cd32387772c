"""The core names no modality: registry discovery, bundled models, and the Modality hooks behind `cm-media demo`
and `cm-media bench`. A fourth modality registered here (`sketch`, digits under another name, with only the
generic hook defaults for the demo) gets a demo section, a report, bench options and a rate column without any
core edit.
"""

import json
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch

from cm_media import registry
from cm_media.cli import build_parser, main
from cm_media.errors import UserError
from cm_media.modality import DemoRequest, Modality
from cm_media.registry import get_modality, register_modality
from cm_media.runs.config import load_config
from cm_media.runs.training import train

ROOT = Path(__file__).resolve().parent.parent
IMAGE = get_modality("image")


class SketchModality(Modality):
    """A fourth modality: the image machinery under its own name; every demo/report hook is the base default."""

    name = "sketch"
    DataConfig = IMAGE.DataConfig
    CodecConfig = IMAGE.CodecConfig
    backbone_presets = IMAGE.backbone_presets
    default_suffix = ".png"
    bench_options: ClassVar[list] = [("--zoom", {"type": int, "help": "sketch: time at this many times the trained size"})]
    rate_columns: ClassVar[dict] = {"pixels_per_s": "px/s"}
    demo_order = 5  # before audio

    def build_codec(self, cfg):
        return IMAGE.build_codec(cfg)

    def build_dataset(self, cfg, codec, split="train"):
        return IMAGE.build_dataset(cfg, codec, split)

    def sample_shape(self, cfg, codec, zoom=None, **options):
        c, h, w = IMAGE.sample_shape(cfg, codec)
        return (c, h * (zoom or 1), w * (zoom or 1))

    def save(self, media, path, cfg, **options):
        return IMAGE.save(media, path, cfg, **options)

    def features(self, media, cfg):
        return IMAGE.features(media, cfg)

    def learned_features(self, media, cfg):
        return IMAGE.learned_features(media, cfg)

    def media_rates(self, cfg, media, seconds_per_batch):
        return {"pixels_per_s": media.shape[0] * media.shape[-2] * media.shape[-1] / seconds_per_batch}


SKETCH = SketchModality()


@pytest.fixture
def sketch(monkeypatch):
    """`sketch` registered (as module:ATTRIBUTE) for one test; the registry is restored afterwards."""
    monkeypatch.setitem(registry.MODALITIES, "sketch", f"{__name__}:SKETCH")
    registry.get_modality.cache_clear()
    yield SKETCH
    monkeypatch.undo()
    registry.get_modality.cache_clear()


@pytest.fixture(scope="module")
def sketch_run(tmp_path_factory):
    """A tiny `modality: sketch` run trained here in a few seconds."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(registry.MODALITIES, "sketch", f"{__name__}:SKETCH")
        registry.get_modality.cache_clear()
        tmp = tmp_path_factory.mktemp("sketch")
        config = tmp / "sketch.yaml"
        text = (ROOT / "configs" / "image" / "digits_ict.yaml").read_text()
        config.write_text(text.replace("modality: image", "modality: sketch"))
        sets = {"train.steps": 2, "train.batch_size": 8, "train.log_every": 1, "train.warmup_steps": 1,
                "train.samples": 4, "train.checkpoint_every": 1000, "backbone.preset": "tiny",
                "sample.batch_size": 8, "sample.bf16": False}
        cfg = load_config(config, [f"{k}={v}" for k, v in sets.items()])
        assert cfg.modality == "sketch"
        train(cfg, tmp / "run", progress=False)
    registry.get_modality.cache_clear()
    return tmp / "run"


# ---------------------------------------------------------------- registry


def test_modality_packages_and_entry_points_are_discovered(monkeypatch):
    for name in ("image", "audio", "video", "av"):
        assert registry.MODALITIES[name] == f"modalities.{name}"
    points = [metadata.EntryPoint("thing", "thing_pkg.mod:THING", registry.ENTRY_POINT_GROUP),
              metadata.EntryPoint("image", "someone_else.image", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(metadata, "entry_points", lambda group=None: [p for p in points if p.group == group])
    found = registry._discover()
    assert found["thing"] == "thing_pkg.mod:THING"
    assert found["image"] == "modalities.image"  # a third party does not shadow a built-in modality
    assert list(found)[:4] == ["audio", "av", "image", "video"]


def test_unknown_and_uninstalled_modalities_are_user_errors(monkeypatch):
    with pytest.raises(UserError, match=r"unknown modality 'smell' \(known: .*audio.*image.*video"):
        get_modality("smell")
    monkeypatch.setitem(registry.MODALITIES, "ghost", "no_such_package.ghost")
    registry.get_modality.cache_clear()
    try:
        with pytest.raises(UserError, match="modality 'ghost' is not installed"):
            get_modality("ghost")
        assert "ghost" not in registry.available_modalities()
    finally:
        registry.get_modality.cache_clear()


def test_register_modality_with_an_attribute(sketch, monkeypatch):
    register_modality("sketch2", f"{__name__}:SKETCH")
    try:
        assert get_modality("sketch2") is SKETCH and get_modality("sketch") is SKETCH
    finally:
        registry.MODALITIES.pop("sketch2")
        registry.get_modality.cache_clear()


def test_display_order_and_modality_options(sketch):
    order = registry.ordered_modalities()
    assert order[:5] == ["sketch", "audio", "video", "image", "av"]
    flags = [flag for flag, _ in registry.modality_options("bench_options")]
    assert flags[0] == "--zoom" and {"--seconds", "--frames"} <= set(flags)
    assert registry.option_dest("--audio-format", {}) == "audio_format"
    assert registry.option_dest("--x", {"dest": "y"}) == "y"


# ---------------------------------------------------------------- bundled models


def test_bundled_models_default_and_extra_folders(sketch, tmp_path, monkeypatch):
    image_dir = IMAGE.pretrained_dir()
    assert IMAGE.bundled_models() == {"image": image_dir,
                                      "fashion-mnist": IMAGE.package_dir() / "pretrained_fashion_mnist"}
    assert registry.bundled_model_dir("image") == image_dir
    assert registry.find_bundled("image") == image_dir / "model.safetensors"
    assert registry.bundled_model_dir("no-such-model") is None and registry.find_bundled("no-such-model") is None
    # a modality without its default model: its name is known, so asking for it says the model does not ship
    assert SKETCH.bundled_models() == {}
    with pytest.raises(UserError, match="no bundled pretrained sketch model"):
        registry.find_bundled("sketch")
    # more bundled models of one modality: folders with weights are listed, empty ones are not
    (tmp_path / "doodles").mkdir()
    (tmp_path / "doodles" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    monkeypatch.setattr(SKETCH, "extra_bundled", {"doodles": str(tmp_path / "doodles"), "none": str(tmp_path / "empty")})
    assert SKETCH.bundled_models() == {"doodles": tmp_path / "doodles"}
    assert registry.bundled_models()["doodles"] == ("sketch", tmp_path / "doodles")
    assert registry.find_bundled("doodles") == tmp_path / "doodles" / "model.safetensors"
    monkeypatch.setattr(SKETCH, "pretrained_dir", lambda: tmp_path / "doodles")
    assert registry.bundled_model_dir("sketch") == tmp_path / "doodles"


def test_info_lists_bundled_models(sketch, capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "modality image: presets" in out and "bundled models: image" in out
    assert "modality sketch: presets" in out and "bundled models: none" in out


# ---------------------------------------------------------------- hook defaults


def test_default_report_hooks_show_files_by_suffix():
    m = Modality()
    assert m.report_html("a/0.wav").startswith('<figure><audio controls preload="auto" src="a/0.wav">')
    assert '<video controls loop muted playsinline preload="auto" width="256" src="v/1.mp4">' in m.report_html("v/1.mp4")
    assert m.report_html("g.png") == '<figure><img class="pixel" src="g.png" alt="g.png"></figure>'
    assert m.report_html("g.png", extra=True) == '<img class="pixel" src="g.png" alt="g.png">'
    assert m.report_html("x/t.txt") == '<figure><a href="x/t.txt">t.txt</a></figure>'
    assert 'src="a&amp;b&quot;.wav"' in m.report_html('a&b".wav')  # escaped attribute
    assert m.report_markdown("a/0.wav") == "[0.wav](a/0.wav)"
    assert m.report_markdown("g.png") == "![g.png](g.png)" == m.report_markdown("g.png", extra=True)
    assert m.media_rates(None, torch.zeros(2, 3), 1.0) == {}
    assert m.demo_files([Path("a"), Path("b")]) == ([Path("a"), Path("b")], [])


def test_builtin_hooks_keep_the_demo_layout():
    audio, video = get_modality("audio"), get_modality("video")
    assert [get_modality(n).demo_order for n in ("audio", "video", "image")] == sorted(
        get_modality(n).demo_order for n in ("audio", "video", "image"))
    digits = SimpleNamespace(data=SimpleNamespace(dataset="digits"), backbone={})
    assert IMAGE.demo_request(digits) == DemoRequest(64, "images.png")
    moving_digits = SimpleNamespace(data=SimpleNamespace(dataset="moving-digits"), backbone={})
    assert video.demo_request(moving_digits) == DemoRequest(4, "video.mp4", save={"separate": True})
    mnist = SimpleNamespace(data=SimpleNamespace(dataset="moving_mnist"),
                            backbone={"cond": [{"name": "digit1"}, {"name": "digit2"}]})
    pairs = video.demo_request(mnist)
    assert pairs.target == "moving_mnist.mp4" and pairs.n == len(video.demo_digits)
    assert pairs.labels[0] == f"digit1={video.demo_digits[0][0]}, digit2={video.demo_digits[0][1]}"
    assert video.demo_files([Path("v/0.mp4"), Path("v_frames.png")]) == ([Path("v/0.mp4")], [Path("v_frames.png")])
    assert video.report_markdown("video_frames.png", extra=True) == "![frames](video_frames.png)"
    assert 'alt="frames, one row per clip"' in video.report_html("video_frames.png", extra=True)
    assert IMAGE.report_markdown("images.png") == "![generated images](images.png)"
    assert audio.rate_columns == {"real_time_factor": "RTF"} and video.rate_columns == {"frames_per_s": "frames/s"}
    assert IMAGE.demo_bench_sizes["num_samples"] > audio.demo_bench_sizes["num_samples"]


# ---------------------------------------------------------------- a fourth modality end to end


def test_fourth_modality_cli_help_lists_it(sketch):
    parser, _ = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    demo_help, bench_help = sub["demo"].format_help(), sub["bench"].format_help()
    assert "sketch,audio,video,image,av" in demo_help.replace("\n", "").replace(" ", "")
    assert "--zoom" in bench_help and "--seconds" in bench_help and "--frames" in bench_help


def test_fourth_modality_without_a_bundled_model_is_skipped(sketch, tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--only", "sketch", "--no-bench"]) == 2
    captured = capsys.readouterr()
    assert "note: skipping sketch: no bundled sketch model" in captured.out
    assert "error: no model to run" in captured.err


def test_fourth_modality_demo_with_its_bundled_model(sketch, sketch_run, tmp_path, capsys, monkeypatch):
    bundled = tmp_path / "bundled"
    assert main(["export", str(sketch_run), "--out", str(bundled)]) == 0
    monkeypatch.setattr(SKETCH, "pretrained_dir", lambda: bundled)
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--only", "sketch", "--bench-samples", "8"]) == 0
    stdout = capsys.readouterr().out
    line = next(ln for ln in stdout.splitlines() if ln.startswith("sketch: "))
    assert "4 samples (1x8x8), 1 step(s) in" in line and str(out / "sketch.png") in line
    assert (out / "sketch.png").is_file() and (out / "bench_sketch.png").is_file()
    md = (out / "report.md").read_text()
    assert "## Sketch" in md and "model `sketch`" in md and "![sketch.png](sketch.png)" in md
    assert "| px/s |" in md and md.count("| consistency |") == 2 and "| noise | baseline |" in md
    page = (out / "report.html").read_text()
    assert '<figure><img class="pixel" src="sketch.png" alt="sketch.png"></figure>' in page


def test_fourth_modality_demo_uses_a_differently_named_bundled_model(sketch, sketch_run, tmp_path, capsys,
                                                                     monkeypatch):
    bundled = tmp_path / "doodles"
    assert main(["export", str(sketch_run), "--out", str(bundled)]) == 0
    monkeypatch.setattr(SKETCH, "extra_bundled", {"doodles": str(bundled)})
    monkeypatch.setattr(SKETCH, "demo_model", lambda: "doodles")
    monkeypatch.setattr(SKETCH, "demo_request", lambda cfg: DemoRequest(3, "doodles", save={"separate": True}))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--only", "sketch", "--no-bench"]) == 0
    assert sorted(p.name for p in (out / "doodles").iterdir()) == ["0000.png", "0001.png", "0002.png"]
    md = (out / "report.md").read_text()
    assert "3 samples (1x8x8)" in md and "![0000.png](doodles/0000.png)" in md
    assert capsys.readouterr().out.count("note: skipping") == 0


def test_fourth_modality_bench_options_and_rates(sketch, sketch_run, tmp_path, capsys):
    js = tmp_path / "r.json"
    code = main(["bench", str(sketch_run), "--zoom", "2", "--steps", "1", "--batch", "2", "--num-samples", "8",
                 "--repeats", "1", "--no-baselines", "--no-progress", "--json", str(js)])
    assert code == 0, capsys.readouterr().err
    (rec,) = json.loads(js.read_text())
    assert rec["modality"] == "sketch" and rec["sample_shape"] == [1, 16, 16]  # --zoom reached sample_shape
    assert rec["pixels_per_s"] > 0
    assert "| px/s |" in capsys.readouterr().out
