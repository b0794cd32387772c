"""Fashion-MNIST: the idx loader, the class-conditional dataset, the shipped classifier-feature net, the recipe."""

from pathlib import Path

import pytest
import torch

from cm_media.cli import main
from cm_media.errors import UserError
from cm_media.registry import get_modality
from cm_media.runs.config import load_config
from modalities.image import fashion_mnist
from modalities.image.fashion_mnist import CLASSES, fashion_pixels

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "image" / "fashion_mnist_ict.yaml"
GPU_CONFIG = ROOT / "configs" / "experiments" / "image" / "fashion_mnist_gpu_ict.yaml"
needs_data = pytest.mark.skipif(not fashion_mnist.available(),
                                reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")


def test_class_names_are_single_cli_words():
    assert CLASSES == ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    assert all(c.isalpha() and c.islower() for c in CLASSES)


def test_missing_package_is_a_one_line_error_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv(fashion_mnist.ROOT_ENV, str(tmp_path))
    assert not fashion_mnist.available()
    with pytest.raises(UserError) as info:
        fashion_pixels("train")
    msg = str(info.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg and str(tmp_path) in msg
    cfg = load_config(CONFIG, [])
    modality = get_modality("image")
    with pytest.raises(UserError, match="dataset-fashion-mnist"):
        modality.build_dataset(cfg, modality.build_codec(cfg), "eval")


def test_idx_reader_checks_the_header(tmp_path):
    import gzip

    bad = tmp_path / "bad.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00"))  # float32, not uint8
    with pytest.raises(UserError, match="not an idx file"):
        fashion_mnist.read_idx(bad)
    short = tmp_path / "short.gz"
    short.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02"))  # 2 of 5 bytes
    with pytest.raises(UserError, match="truncated"):
        fashion_mnist.read_idx(short)


@needs_data
def test_loader_shapes_and_labels():
    x, y = fashion_pixels("eval")
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (10_000,)
    assert 0 <= float(x.min()) and float(x.max()) == 1.0
    assert torch.equal(torch.bincount(y, minlength=10), torch.full((10,), 1000))  # the test file is balanced
    xs, ys = fashion_pixels("train", limit=500)
    assert xs.shape == (500, 1, 28, 28) and int(ys.min()) >= 0 and int(ys.max()) <= 9
    assert len(set(ys.tolist())) == 10
    with pytest.raises(UserError, match="split"):
        fashion_pixels("test")


@needs_data
def test_dataset_with_class_condition():
    cfg = load_config(CONFIG, ["data.limit=300"])
    modality = get_modality("image")
    codec = modality.build_codec(cfg)
    train = modality.build_dataset(cfg, codec, "train")
    ev = modality.build_dataset(cfg, codec, "eval")
    assert len(train) == 300 and len(ev) == 300
    batch = train.get_batch(torch.arange(4))
    assert batch.shape == (4, 1, 28, 28) and float(batch.min()) >= -1 and float(batch.max()) <= 1
    assert [c.name for c in train.conditions] == ["class"] and train.conditions[0].classes == CLASSES
    cond = ev.get_cond(torch.arange(8))["class"]
    assert torch.equal(cond, fashion_pixels("eval", 8)[1])
    with pytest.raises(UserError, match="data.limit"):
        load_config(CONFIG, ["data.limit=-1"])


@needs_data
def test_fashion_net_accuracy_and_embedding():
    from modalities.image.fashion_net import EMBED_DIM, WEIGHTS, evaluate, load_fashion_net
    from modalities.image.features import classify, learned_features

    net = load_fashion_net()
    assert net is not None, f"{WEIGHTS} is missing"
    x, y = fashion_pixels("eval")
    idx = torch.arange(0, 10_000, 25)  # 400 test images
    assert evaluate(net, x[idx], y[idx]) >= 0.85
    cfg = load_config(CONFIG, [])
    emb = learned_features(x[idx], cfg)
    assert emb.shape == (len(idx), EMBED_DIM) and torch.isfinite(emb).all()
    assert classify(x[idx], cfg).shape == (len(idx), 10)
    assert learned_features(x[:4], None).shape == (4, EMBED_DIM)  # no config: 28 px is Fashion-MNIST
    digits = load_config(ROOT / "configs" / "image" / "digits_class_ict.yaml", [])
    assert learned_features(torch.rand(3, 1, 8, 8), digits).shape == (3, 64)  # the digits net for digits


def test_configs_load_and_build():
    from cm_media.runs.model import build_model

    for path in (CONFIG, GPU_CONFIG):
        cfg = load_config(path, [])
        assert cfg.data.dataset == "fashion_mnist" and cfg.codec.size == 28 and cfg.train.cond_dropout == 0.1
        assert cfg.train.bf16 and cfg.data.cond == ["class"]
    cfg = load_config(CONFIG, [])
    modality, codec, model = build_model(cfg)
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28), torch.full((2,), 1.0))
    assert out.shape == (2, 1, 28, 28)


@needs_data
def test_two_training_steps_then_generate_on_request(tmp_path, tiny_overrides, capsys):
    run = tmp_path / "run"
    assert main(["train", str(CONFIG), "--out", str(run), "--no-progress", "--set", "data.limit=64",
                 "--set", "train.threads=1", *tiny_overrides(2, **{"train.samples": 2})]) == 0
    out = tmp_path / "sneakers.png"
    assert main(["generate", str(run), "--class", "sneaker", "-n", "2", "--steps", "1", "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["generate", str(run), "--class", "sneakers", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "unknown value 'sneakers'" in err and "sneaker" in err


def test_demo_asks_the_fashion_model_for_a_class_per_row():
    image = get_modality("image")
    assert image.extra_bundled == {"fashion-mnist": "pretrained_fashion_mnist"}
    assert image.demo_models() == ["image", "fashion-mnist"]
    cfg = load_config(CONFIG, [])
    cfg.backbone["cond"] = [{"name": "class", "kind": "class", "classes": CLASSES}]
    req = image.demo_request(cfg)
    assert req.n == 100 and req.target == "fashion_mnist.png"
    rows = req.generate["cond"]["class"]
    assert [rows[r * 10:(r + 1) * 10] for r in range(10)] == [[c] * 10 for c in CLASSES]
    assert "a class per row: tshirt, trouser" in image.demo_describe(cfg, torch.zeros(100, 1, 28, 28), 100, 1)
    digits = load_config(ROOT / "configs" / "image" / "digits_class_ict.yaml", [])
    assert image.demo_request(digits).target == "images.png"


def test_bundled_model_draws_the_requested_class_in_one_step():
    """The bundled kd student at its default (one step, one evaluation): 89% of 500 requests by the shipped net
    (benchmarks/README.md, "Fashion-MNIST in one step"); 20 of each class here, chance is 10%."""
    import cm_media
    from modalities.image.fashion_net import load_fashion_net

    gen = cm_media.load("fashion-mnist")
    assert gen.cfg.sample.steps == 1 and gen.cfg.sample.cfg_scale == 1.0 and gen.cfg.method.name == "kd"
    labels = torch.arange(10).repeat_interleave(20)
    images = gen.generate(len(labels), seed=0, cond={"class": [CLASSES[i] for i in labels]}, bf16=False)
    assert images.shape == (200, 1, 28, 28) and 0 <= float(images.min()) and float(images.max()) <= 1
    net = load_fashion_net()
    with torch.no_grad():
        acc = float((net.head(net.embed(images)).argmax(1) == labels).float().mean())
    assert acc >= 0.8
