"""The bundled 64x64 latent video models: `moving-mnist` (two digits on request) and `footage` (animate a picture).

Both carry their trained codec inside the export, so these run from the package alone."""

import json

import av
import pytest
import torch
from PIL import Image

from cm_media.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _frames(path):
    with av.open(str(path)) as f:
        return [fr.to_ndarray(format="rgb24") for fr in f.decode(video=0)]


def test_bundled_moving_mnist_makes_the_requested_digits_clip(bundled, tmp_path, capsys):
    gen = bundled("moving-mnist", True)
    assert gen.cfg.codec.kind == "latent" and gen.shape() == (4, 16, 16, 16)  # 4 latent channels, 16 frames, 4x down
    assert main(["generate", "moving-mnist", "--cond", "digit1=3", "--cond", "digit2=7", "-n", "2", "--steps", "1",
                 "--separate", "--out", str(tmp_path / "clip.mp4")]) == 0
    frames = _frames(tmp_path / "clip" / "0000.mp4")
    assert len(frames) == 16 and frames[0].shape == (128, 128, 3)  # 64x64 written at 2x (io.MIN_SHORT_SIDE)
    capsys.readouterr()
    assert main(["info", "moving-mnist", "--json"]) == 0
    conds = json.loads(capsys.readouterr().out)["conditions"]
    assert conds == {"digit1": [str(d) for d in range(10)], "digit2": [str(d) for d in range(10)]}
    media = gen.generate(2, steps=1, seed=0, cond={"digit1": ["3", "1"], "digit2": ["7", "4"]})
    assert media.shape == (2, 1, 16, 64, 64) and 0 <= float(media.min()) and float(media.max()) <= 1
    assert float(media.mean()) < 0.3  # digits on a black background, as the real clips


def test_bundled_footage_animates_a_picture(bundled, tmp_path):
    gen = bundled("footage", True)
    picture = tmp_path / "photo.png"
    Image.fromarray((torch.rand(80, 96, 3) * 255).byte().numpy()).save(picture)  # any size: resized to 64x64
    assert main(["generate", "footage", "--first-frame", str(picture), "-n", "2", "--steps", "1",
                 "--separate", "--out", str(tmp_path / "animated.mp4")]) == 0
    frames = _frames(tmp_path / "animated" / "0001.mp4")
    assert len(frames) == gen.cfg.codec.frames and frames[0].shape == (128, 128, 3)  # 64x64 written at 2x (io.MIN_SHORT_SIDE)
    assert main(["generate", "footage", "--first-frame", str(tmp_path / "missing.png"), "-n", "1",
                 "--out", str(tmp_path / "x.mp4")]) == 2


def test_a_learned_codec_decodes_in_bf16_when_sampling_does(bundled):
    """Generator.decode: the latent models' decoder runs under bf16 autocast with bf16 sampling (it was most of
    their one-step time), close to the float32 decode; media always come back float32."""
    gen = bundled("moving-mnist", True)
    z = torch.randn(2, *gen.shape(), generator=torch.Generator().manual_seed(0))
    full, half = gen.decode(z, False), gen.decode(z, True)
    assert full.dtype == half.dtype == torch.float32 and full.shape == half.shape == (2, 1, 16, 64, 64)
    psnr = -10 * torch.log10((full - half).square().mean())
    assert not torch.equal(full, half) and psnr > 35
