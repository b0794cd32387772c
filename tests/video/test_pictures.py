"""Still pictures for the footage codec (pictures.py): held-out photos and their near-copies never served, still
clips, the share of pictures in a footage source, and the config check."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cm_media.errors import UserError
from modalities.video import pictures as pics

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


@pytest.fixture()
def picture_dirs(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    data, docs = tmp_path / "data", tmp_path / "html" / "sub"
    held = (rng.random((120, 160, 3)) * 255).astype(np.uint8)
    _save(data / "baboon.jpg", held)  # a held-out photo (HELD_OUT)
    _save(data / "leuvenB.jpg", held[::-1].copy())  # a held-out scene's partner view
    _save(docs / "copy_of_it.png", held)  # a copy under another name: caught by its thumbnail
    for k in range(3):  # stripes of a colour each: nothing like the held-out photo
        fig = np.zeros((100 + 10 * k, 130, 3), np.uint8)
        fig[:, ::8 + k, k] = 255
        _save(docs / f"figure{k}.png", fig)
    _save(docs / "icon.png", np.zeros((40, 40, 3), np.uint8))  # too small
    monkeypatch.setattr(pics, "ROOTS", (str(data), str(tmp_path / "html")))
    monkeypatch.setenv("CM_MEDIA_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_held_out_photos_and_their_copies_are_never_served(picture_dirs):
    served = pics.load_pictures()
    assert len(served) == 3 and all(p.dtype == torch.uint8 and p.shape[0] == 3 for p in served)
    assert pics.cache_path().is_file() and len(pics.load_pictures()) == 3  # read back from the cache


def test_still_clips_are_deterministic_crops(picture_dirs):
    source = pics.Pictures(num_clips=10, frames=4, size=32, seed=1)
    clips = source.get_clips(torch.tensor([3, 7]))
    assert clips.shape == (2, 3, 4, 32, 32) and 0 <= clips.min() and clips.max() <= 1
    assert torch.equal(clips[:, :, 1:], clips[:, :, :1].expand(-1, -1, 3, -1, -1))  # a still: frames equal
    assert torch.equal(source.get_clips([7])[0], clips[1])  # clip i is a function of (seed, i)


def test_with_pictures_mixes_by_share(picture_dirs):
    class Moving:
        def __len__(self):
            return 200

        def get_clips(self, indices):
            n = len(torch.as_tensor(indices).reshape(-1))
            return torch.rand(n, 3, 4, 32, 32)  # frames differ

    mixed = pics.WithPictures(Moving(), pics.Pictures(200, frames=4, size=32), share=0.25)
    clips = mixed.get_clips(torch.arange(200))
    still = (clips[:, :, 1:] == clips[:, :, :1]).flatten(1).all(1)
    assert 30 <= int(still.sum()) <= 70  # about a quarter
    none = pics.WithPictures(Moving(), pics.Pictures(200, frames=4, size=32), share=0.0).get_clips(torch.arange(50))
    assert not (none[:, :, 1:] == none[:, :, :1]).flatten(1).all(1).any()


def test_no_pictures_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pics, "ROOTS", (str(tmp_path / "nothing"),))
    monkeypatch.setenv("CM_MEDIA_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="apt-get install opencv-doc"):
        pics.load_pictures()


def test_the_share_of_pictures_is_checked_when_the_config_loads(repo_root):
    from cm_media.runs.config import load_config

    with pytest.raises(UserError, match="data.pictures"):
        load_config(Path(repo_root) / "configs" / "video" / "footage_codec_pictures.yaml", ["data.pictures=1.5"])
