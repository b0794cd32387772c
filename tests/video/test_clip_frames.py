"""train.clip_frames: each clip cut to a random window of frames before the codec; ranges checked at load."""

import pytest
import torch

from cm_media.errors import UserError
from cm_media.runs import training
from cm_media.runs.config import load_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_frame_windows_cut_each_clip_at_its_own_start():
    clips = torch.arange(3 * 2 * 6 * 2 * 2, dtype=torch.float32).reshape(3, 2, 6, 2, 2)  # [B, C, T, H, W]
    starts = torch.tensor([0, 3, 5])
    out = training.frame_windows(clips, starts, 1)
    assert out.shape == (3, 2, 1, 2, 2)
    for b, s in enumerate(starts.tolist()):
        assert torch.equal(out[b, :, 0], clips[b, :, s])
    out = training.frame_windows(clips, torch.tensor([2, 0, 4]), 2)
    assert out.shape == (3, 2, 2, 2, 2) and out.is_contiguous()
    assert torch.equal(out[0], clips[0, :, 2:4]) and torch.equal(out[2], clips[2, :, 4:6])


def small(repo_root, *extra):
    sets = ["train.batch_size=4", "backbone.preset=tiny", "data.clips=40", "codec.frames=6", "train.steps=2",
            "train.warmup_steps=1", "train.log_every=1", "train.checkpoint_every=1000", "train.samples=0",
            "train.bf16=false", *extra]
    return load_config(f"{repo_root}/configs/video/moving_digits_ict.yaml", sets)


def test_batches_are_windows_of_the_drawn_clips(repo_root, tmp_path):
    run = training.setup(small(repo_root, "train.clip_frames=2"), tmp_path / "run", False, False)
    state = run.gen.get_state()
    x0, _ = training.draw_batch(run)
    assert x0.shape[2] == 2  # [B, C, 2, H, W]
    run.gen.set_state(state)  # the same draw: indices, then starts
    idx = torch.randint(0, len(run.dataset), (4,), generator=run.gen)
    starts = torch.randint(0, 6 - 2 + 1, (4,), generator=run.gen)
    whole = training.get_batch(run.dataset, idx)
    assert torch.equal(x0, training.frame_windows(whole, starts, 2))
    assert training.train_step(run, training._Stop()) is not None  # a step runs on the windows


def test_whole_clips_by_default(repo_root, tmp_path):
    run = training.setup(small(repo_root), tmp_path / "run", False, False)
    assert training.draw_batch(run)[0].shape[2] == 6


@pytest.mark.parametrize("value, message", [
    ("7", "train.clip_frames 7 needs clips of at least that many frames (codec.frames is 6)"),
    ("-1", "train.clip_frames"),
])
def test_clip_frames_out_of_range(repo_root, value, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        small(repo_root, f"train.clip_frames={value}")


@pytest.mark.parametrize("config", ["image/digits_ict.yaml", "av/sounding_digits_ict.yaml"])
def test_clip_frames_needs_frames(repo_root, config):
    """Images have no frames; sounding video has codec.frames but packs them into a flat tensor [B, 1, D]."""
    with pytest.raises(UserError, match="this data has no frames"):
        load_config(f"{repo_root}/configs/{config}", ["train.clip_frames=1"])
