"""Moving MNIST from OpenCV's digits.png: shapes, range, seeding, held-out sprites, bouncing inside the frame."""

import pytest
import torch

from cm_media.errors import UserError
from modalities.video import moving_mnist as mm

if mm.find_debian_file(mm.DIGITS_PACKAGE, ["digits.png", "digits.png.gz"], mm.DIGITS_CANDIDATES) is None:
    pytest.skip("Debian package opencv-doc is not installed", allow_module_level=True)


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def train():
    return mm.MovingMNIST("train", num_clips=200, seed=0)


def test_shapes_range_and_labels(train):
    clips = train.get_clips(torch.arange(5))
    assert clips.shape == (5, 1, 16, 64, 64) and clips.dtype == torch.float32
    assert clips.min() == 0 and clips.max() == 1
    assert train.labels.shape == (200, 2) and train.labels.dtype == torch.long
    assert train.labels.min() >= 0 and train.labels.max() <= 9
    assert torch.equal(train.labels[:5], train.clip_labels([0, 1, 2, 3, 4]))
    assert train[3].shape == (1, 16, 64, 64)
    assert train.positions([0, 1]).shape == (2, 2, 16, 2)
    with pytest.raises(IndexError):
        train.get_clips([200])


def test_seeded_per_clip(train):
    a = train.get_clips([7, 3])
    assert torch.equal(a[1], train.get_clips([3])[0])  # clip i depends on (seed, i) only
    assert torch.equal(a, mm.MovingMNIST("train", num_clips=10, seed=0).get_clips([7, 3]))
    assert not torch.equal(a, mm.MovingMNIST("train", num_clips=10, seed=1).get_clips([7, 3]))


def test_held_out_sprites_are_disjoint(train):
    test = mm.MovingMNIST("test", num_clips=10)
    assert len(set(train.sprite_ids.tolist()) & set(test.sprite_ids.tolist())) == 0
    assert len(train.sprite_ids) == 4500 and len(test.sprite_ids) == 500
    assert torch.equal(test.sprite_labels.bincount(), torch.full((10,), 50))
    assert not torch.equal(train.get_clips([0]), test.get_clips([0]))


def test_frames_are_max_of_the_digits_at_their_positions(train):
    clip = train.get_clips([11])[0, 0]  # [T, H, W]
    sprite, _, _ = train._specs([11])
    corners = train.positions([11])[0].round().long()  # [D, T, 2]
    expect = torch.zeros_like(clip)
    for d in range(2):
        for t in range(16):
            y, x = corners[d, t].tolist()
            region = expect[t, y:y + 28, x:x + 28]
            expect[t, y:y + 28, x:x + 28] = torch.maximum(region, train.sprites[sprite[0, d]])
    assert torch.equal(clip, expect)


def test_digits_stay_inside_and_bounce(train):
    pos = train.positions(torch.arange(200))  # [B, D, T, 2]
    assert pos.min() >= 0 and pos.max() <= 64 - 28
    step = pos.diff(dim=2)  # [B, D, T - 1, 2]
    speed = step.norm(dim=-1)
    direction = train.directions(torch.arange(200))
    flips = direction[:, :, 1:] != direction[:, :, :-1]  # [B, D, T - 1, 2]
    assert flips.any()  # some digits hit a wall within 16 frames
    # away from bounces the motion is straight at 3.6 px per frame
    straight = ~flips.any(-1)
    assert torch.allclose(speed[straight], torch.full_like(speed[straight], 3.6), atol=1e-4)
    # a flip happens only next to a wall, and the step signs follow the directions
    near = torch.minimum(pos[:, :, 1:], 36 - pos[:, :, 1:]) < 3.6
    assert near[flips].all()
    moving = step.abs() > 1e-3
    assert torch.equal(step.sign()[moving & ~flips], direction[:, :, 1:][moving & ~flips])


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setattr(mm, "DIGITS_CANDIDATES", ["/nonexistent/digits.png"])
    monkeypatch.setattr(mm, "dpkg_files", lambda package: [])
    with pytest.raises(UserError, match="apt-get install opencv-doc"):
        mm.MovingMNIST()


def test_gzipped_digits(tmp_path, monkeypatch):
    import gzip
    from pathlib import Path

    src = mm.digits_png_path()
    plain = mm.MovingMNIST(num_clips=2).get_clips([1])
    gz = tmp_path / "digits.png.gz"
    gz.write_bytes(gzip.compress(Path(src).read_bytes()))
    monkeypatch.setattr(mm, "DIGITS_CANDIDATES", [str(gz)])
    assert mm.digits_png_path() == gz
    assert torch.equal(mm.MovingMNIST(num_clips=2).get_clips([1]), plain)
    assert torch.equal(mm._load_sprites(str(gz))[0], mm._load_sprites(str(src))[0])
