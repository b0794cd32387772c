"""Still pictures for a video codec to generalize beyond its training footage: opencv-doc's photographs and
tutorial figures, served as still clips (one random crop repeated over the clip's frames).

A codec trained on three videos decoded photographs at 18.6 dB (issue 34: a first frame from outside the
footage). Mixing still pictures into the codec's data (`data.pictures`, the share of clips that are pictures)
is what lets it code what a user gives it. HELD_OUT are the photos the benchmarks animate
(benchmarks/video_rungs.py): they, their stereo / sequence partners, and any picture whose centre thumbnail is
within 17 dB PSNR of one of them are never served.

The pictures are decoded once into a cache (`$CM_MEDIA_CACHE/pictures`, else ~/.cache/cm-media/pictures): RGB
uint8 with the short side at most 192 px. Clip i is a function of (seed, i): a picture, a crop side uniform
between the clip size and the picture's short side, a uniform position, a horizontal flip half the time.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cm_media.errors import UserError

PACKAGE = "opencv-doc"
ROOTS = ("/usr/share/doc/opencv-doc/examples/data", "/usr/share/doc/opencv-doc/opencv4/html")
HELD_OUT = ("baboon.jpg", "fruits.jpg", "butterfly.jpg", "home.jpg", "building.jpg", "apple.jpg", "orange.jpg",
            "messi5.jpg", "aero1.jpg", "HappyFish.jpg", "squirrel_cls.jpg", "smarties.png", "stuff.jpg",
            "starry_night.jpg", "leuvenA.jpg", "board.jpg")
PARTNERS = ("leuvenB.jpg", "aero3.jpg")  # the other views of held-out scenes
SHORT_SIDE = 192  # cached size; crops go up to it
MIN_SIDE = 96  # smaller files (icons, formula images) are skipped
DUPLICATE_DB = 17.0
CACHE_VERSION = 1


def held_out_paths() -> list[Path]:
    """The benchmark's held-out photos that exist on this machine."""
    return [Path(ROOTS[0]) / n for n in HELD_OUT if (Path(ROOTS[0]) / n).is_file()]


def _stem(name: str) -> str:
    return Path(name).stem.lower().rstrip("0123456789_").removesuffix("_cls")


def _rgb(path: Path) -> torch.Tensor | None:
    """[1, 3, H, W] float in [0, 1], or None when the file is no readable picture."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    except (OSError, ValueError):
        return None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 255


def scale_short_side(img: torch.Tensor, side: int) -> torch.Tensor:
    """[B, C, H, W] resized (antialiased) so its short side is `side`."""
    h, w = img.shape[2:]
    s = side / min(h, w)
    return F.interpolate(img, size=(max(side, round(h * s)), max(side, round(w * s))), mode="bilinear",
                         antialias=True, align_corners=False).clamp_(0, 1)


def centre_thumbnail(img: torch.Tensor, size: int = 64) -> torch.Tensor:
    """The short side scaled to `size`, centre-cropped: how the benchmarks frame a picture [B, C, size, size]."""
    t = scale_short_side(img, size)
    top, left = (t.shape[2] - size) // 2, (t.shape[3] - size) // 2
    return t[:, :, top:top + size, left:left + size]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).square().mean().clamp_min(1e-10)))


def cache_path() -> Path:
    root = os.environ.get("CM_MEDIA_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "cm-media") / "pictures" / f"v{CACHE_VERSION}.pt"


def candidate_files() -> list[Path]:
    files = []
    for root in ROOTS:
        for suffix in ("*.jpg", "*.png"):
            files += Path(root).rglob(suffix)
    return sorted(files)


def load_pictures() -> list[torch.Tensor]:
    """The training pictures, uint8 [3, H, W] with short side SHORT_SIDE (decoded once, then from the cache)."""
    path = cache_path()
    if path.is_file():
        return torch.load(path)
    files = candidate_files()
    if not files:
        raise UserError(f"data.pictures needs the pictures of the Debian package {PACKAGE}: apt-get install {PACKAGE}")
    held = [centre_thumbnail(x) for x in map(_rgb, held_out_paths()) if x is not None]
    banned = {_stem(n) for n in HELD_OUT + PARTNERS}
    out = []
    for file in files:
        if file.name in HELD_OUT + PARTNERS or _stem(file.name) in banned:
            continue
        img = _rgb(file)
        if img is None or min(img.shape[2:]) < MIN_SIDE:
            continue
        if any(_psnr(centre_thumbnail(img), h) > DUPLICATE_DB for h in held):
            continue  # a copy or crop of a held-out photo
        if min(img.shape[2:]) > SHORT_SIDE:
            img = scale_short_side(img, SHORT_SIDE)
        out.append((img[0] * 255).round().to(torch.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)
    return out


class Pictures:
    """Still clips of random picture crops: `get_clips(indices)` -> [B, 3, T, H, W] in [0, 1]."""

    def __init__(self, num_clips: int, frames: int = 16, size: int = 64, seed: int = 0):
        self.num_clips, self.frames, self.size, self.seed = int(num_clips), int(frames), int(size), int(seed)
        self.pictures = load_pictures()
        if not self.pictures:
            raise UserError(f"no usable pictures in {', '.join(ROOTS)} (Debian package {PACKAGE})")

    def __len__(self) -> int:
        return self.num_clips

    def get_clips(self, indices) -> torch.Tensor:
        clips = []
        for i in torch.as_tensor(indices).reshape(-1).tolist():
            rng = np.random.default_rng([self.seed, 31, int(i)])
            pic = self.pictures[rng.integers(len(self.pictures))]  # [3, H, W] uint8
            h, w = pic.shape[1:]
            side = int(rng.integers(self.size, min(h, w) + 1))
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            x = pic[None, :, top:top + side, left:left + side].float() / 255  # [1, 3, c, c]
            if side != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                  align_corners=False).clamp_(0, 1)
            if rng.random() < 0.5:
                x = x.flip(3)
            clips.append(x[0, :, None].expand(3, self.frames, self.size, self.size))  # [3, T, H, W]
        return torch.stack(clips)


class WithPictures:
    """A clip source where a `share` of the clips (chosen per index from the seed) are still pictures."""

    def __init__(self, source, pictures: Pictures, share: float, seed: int = 0):
        self.source, self.pictures, self.share, self.seed = source, pictures, float(share), int(seed)

    def __len__(self) -> int:
        return len(self.source)

    def get_clips(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(indices).reshape(-1)
        still = torch.tensor([np.random.default_rng([self.seed, 37, int(i)]).random() < self.share
                              for i in idx.tolist()], dtype=torch.bool)
        out = torch.empty(len(idx), 3, self.pictures.frames, self.pictures.size, self.pictures.size)
        if still.any():
            out[still] = self.pictures.get_clips(idx[still])
        if (~still).any():
            out[~still] = self.source.get_clips(idx[~still])
        return out
