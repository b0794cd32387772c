"""moving-digits (seeded, bouncing, held-out eval split) and the folder dataset (clip windows, bad files skipped)."""

import pytest
import torch

from cm_media.errors import UserError
from cm_media.registry import get_modality
from cm_media.runs.config import load_config
from modalities.video.io import write_video


@pytest.fixture
def video_config(repo_root):
    return f"{repo_root}/configs/video/moving_digits_ict.yaml"


def build(config, overrides, part="train"):
    cfg = load_config(config, overrides)
    m = get_modality("video")
    return m.build_dataset(cfg, m.build_codec(cfg), part)


SMALL = ["data.clips=40", "codec.frames=10"]


def test_moving_digits_shapes_seed_and_split(video_config):
    train = build(video_config, SMALL)
    held = build(video_config, SMALL, "eval")
    assert (len(train), len(held)) == (36, 4)
    batch = train.get_batch(torch.arange(3))
    assert batch.shape == (3, 1, 10, 32, 32) and batch.min() == -1 and batch.max() <= 1
    assert torch.equal(train[0], build(video_config, SMALL)[0])  # seeded
    assert not torch.equal(train[0], build(video_config, SMALL + ["data.seed=1"])[0])
    assert not torch.equal(train.clips[:4], held.clips)


def test_moving_digits_move_smoothly_and_bounce(video_config):
    ds = build(video_config, ["data.clips=30", "codec.frames=40", "data.max_digits=1", "data.speed=[2.0, 2.0]"])
    pix = ds.clips.float()[:, 0]  # [N, T, H, W]
    mass = pix.sum((2, 3))
    ys, xs = torch.arange(32.0)[:, None], torch.arange(32.0)[None, :]
    cy = (pix * ys).sum((2, 3)) / mass
    cx = (pix * xs).sum((2, 3)) / mass
    step = torch.sqrt(cy.diff(dim=1) ** 2 + cx.diff(dim=1) ** 2)
    assert step.max() < 3.5 and step.mean() > 1.0  # about 2 px a frame, never a jump
    assert torch.allclose(mass[:, 1:], mass[:, :1].expand(-1, 39))  # one digit stays whole inside the frame
    assert (cx.diff(dim=1).sign().diff(dim=1) != 0).any()  # some digit turned around at a wall


def test_moving_digits_checks(video_config):
    with pytest.raises(UserError, match="data.digit_size"):
        build(video_config, ["data.digit_size=40"])
    with pytest.raises(UserError, match="data.dataset"):
        build(video_config, ["data.dataset=bouncing"])


def test_folder_dataset_windows_and_skips_bad_files(tmp_path, video_config, caplog):
    clip = torch.rand(1, 16, 20, 24)
    write_video(tmp_path / "a.mp4", clip, fps=8)  # 2 s
    write_video(tmp_path / "sub" / "b.webm", clip[:, :4], fps=8)  # 0.5 s: shorter than a clip, still one
    (tmp_path / "broken.mkv").write_bytes(b"garbage" * 100)
    (tmp_path / "notes.txt").write_text("ignored")
    over = ["data.dataset=folder", f"data.root={tmp_path}", "data.holdout=0", "codec.frames=8", "codec.size=16"]
    ds = build(video_config, over)
    # a.mp4: clips of 1 s every 0.5 s -> starts 0, 0.5, 1.0; b.webm: one
    assert len(ds) == 4 and [w[1] for w in ds.windows] == [0.0, 0.5, 1.0, 0.0]
    assert ds.get_batch(torch.tensor([0, 3])).shape == (2, 1, 8, 16, 16)
    assert "broken.mkv" in caplog.text


def test_folder_dataset_errors(tmp_path, video_config):
    (tmp_path / "broken.mp4").write_bytes(b"garbage")
    with pytest.raises(UserError, match="no readable videos"):
        build(video_config, ["data.dataset=folder", f"data.root={tmp_path}"])
    with pytest.raises(UserError, match="nope"):
        build(video_config, ["data.dataset=folder", f"data.root={tmp_path / 'nope'}"])
    with pytest.raises(UserError, match="data.root"):
        build(video_config, ["data.dataset=folder"])
