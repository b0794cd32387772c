import numpy as np
import pytest
import torch
from PIL import Image

from cm_media.errors import UserError
from cm_media.registry import get_modality
from cm_media.runs.config import from_dict, load_config
from modalities.image.codec import ImageCodec, ImageCodecConfig
from modalities.image.io import make_grid


def test_digits_dataset_range_and_split(digits_config):
    cfg = load_config(digits_config)
    m = get_modality("image")
    codec = m.build_codec(cfg)
    train = m.build_dataset(cfg, codec, "train")
    held = m.build_dataset(cfg, codec, "eval")
    assert len(train) + len(held) == 1797 and len(held) == 180
    assert train.data.shape[1:] == (1, 8, 8)
    assert train.data.min() == -1.0 and train.data.max() == 1.0
    assert len(set(train.labels.tolist())) == 10


def test_digits_upsampled(digits_config):
    cfg = load_config(digits_config, ["codec.size=16"])
    m = get_modality("image")
    ds = m.build_dataset(cfg, m.build_codec(cfg), "train")
    assert ds[0].shape == (1, 16, 16)


def test_codec_round_trip():
    c = ImageCodec(from_dict(ImageCodecConfig, {"size": 4}, "codec"))
    x = torch.rand(2, 1, 4, 4)
    assert torch.allclose(c.decode(c.encode(x)), x)


def test_folder_dataset_skips_bad_files(tmp_path, digits_config, caplog):
    for i in range(3):
        Image.fromarray((np.random.rand(10, 12, 3) * 255).astype(np.uint8)).save(tmp_path / f"im{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    cfg = load_config(digits_config, ["data.dataset=folder", f"data.root={tmp_path}", "data.holdout=0"])
    m = get_modality("image")
    ds = m.build_dataset(cfg, m.build_codec(cfg), "train")
    assert len(ds) == 3 and ds[0].shape == (1, 8, 8)
    assert "broken.jpg" in caplog.text


def test_folder_dataset_errors(tmp_path, digits_config):
    m = get_modality("image")
    cfg = load_config(digits_config, ["data.dataset=folder", f"data.root={tmp_path}"])
    with pytest.raises(UserError, match="no readable images"):
        m.build_dataset(cfg, m.build_codec(cfg), "train")
    cfg = load_config(digits_config, ["data.dataset=folder", f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(UserError, match="nope"):
        m.build_dataset(cfg, m.build_codec(cfg), "train")


def test_make_grid_layout():
    imgs = torch.stack([torch.full((1, 2, 2), float(i) / 4) for i in range(5)])
    g = make_grid(imgs, pad=1)
    assert g.shape == (1, 2 * 3 + 1, 3 * 3 + 1)
    assert g[0, 1, 1].item() == 0.0 and g[0, 4, 1].item() == pytest.approx(0.75)  # item 3 starts row 2
