"""SC09-like spoken digits ("zero".."nine") rendered offline by free TTS engines from Debian main.

Engines: flite (voices kal, kal16, awb, rms, slt), festival (kal_diphone, ked_diphone, cmu_us_slt_arctic_hts)
and espeak-ng (English dialects x voice variants), each at a few pitch and speed factors: one *voice setting*
is engine x voice x pitch x speed. Every clip is 1.0 s of 16 kHz mono: the word trimmed of silence, peak
normalized, starting 0-100 ms in (a seeded offset, like the real SC09 recordings), silence after.

The set is rendered once into a cache folder (wav files plus `manifest.json`) and reused while the request
(seed, voice settings, version) is unchanged. Splits hold out whole voices (every setting of them):
test = flite awb, festival ked_diphone and espeak-ng variants f1, Alex, ed, travis (`TEST_VOICES`).

The cache helpers and `RenderedClips` at the bottom are shared with `notes.py`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from cm_media.errors import UserError

log = logging.getLogger(__name__)

VERSION = 1  # bump when the rendering changes: cached sets with another version are rendered again
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 16000
CLIP = 16000  # samples per clip: 1.0 s
PEAK = 0.8  # every word is scaled to this peak
MAX_OFFSET = 1600  # word onset drawn uniformly in [0, 100 ms)
FADE = 320  # 20 ms fade-out when a (slow) word runs past the clip end
FLOOR_DB = -40.0  # frames quieter than this (relative to the loudest 5 ms frame) count as silence

PACKAGES = ("flite", "festival", "festvox-kallpc16k", "festvox-kdlpc16k", "festvox-us-slt-hts", "espeak-ng")
FESTIVAL_VOICES = {  # festival voice -> (voice folder, Debian package)
    "kal_diphone": ("/usr/share/festival/voices/english/kal_diphone", "festvox-kallpc16k"),
    "ked_diphone": ("/usr/share/festival/voices/english/ked_diphone", "festvox-kdlpc16k"),
    "cmu_us_slt_arctic_hts": ("/usr/share/festival/voices/us/cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
}
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
ESPEAK_DIALECTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
                   "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2",
                   "klatt3", "Alex", "Alicia", "Andrea", "Andy", "aunty", "belinda", "benjamin", "david", "ed",
                   "edward", "john", "linda", "max", "Michael", "norbert", "steph", "travis")
PITCHES = (0.8, 0.9, 1.0, 1.1, 1.25)  # flite / festival f0 factors (a finer grid: they have few voices)
SPEEDS = (0.8, 0.9, 1.0, 1.1, 1.2)  # flite / festival speaking-rate factors (> 1: faster)
ESPEAK_PITCHES = (0.6, 1.0, 1.4)  # espeak-ng `-p` = 50 x factor (its 0-99 scale)
ESPEAK_SPEEDS = (0.85, 1.0, 1.15)  # espeak-ng `-s` = 175 words/minute x factor


def espeak_voice(i: int) -> str:
    """The i-th espeak-ng voice: variant i with a dialect per block of 4 variants (f1, Alex, ed, travis are test)."""
    return f"{ESPEAK_DIALECTS[(i // 4) % len(ESPEAK_DIALECTS)]}+{ESPEAK_VARIANTS[i]}"


TEST_VOICES = {("flite", "awb"), ("festival", "ked_diphone")} | {
    ("espeak-ng", espeak_voice(i)) for i in range(7, len(ESPEAK_VARIANTS), 8)}
SMALL_VOICES = ("flite_kal16_p1_s1", "flite_awb_p1_s1", "festival_kal_diphone_p1_s1", "espeak-ng_en+m1_p1_s1",
                "espeak-ng_en-us+f1_p1_s1")  # a few seconds to render; both splits and all engines


@dataclass(frozen=True)
class Voice:
    """One voice setting: engine, the engine's voice name, pitch and speaking-rate factors, split."""

    engine: str  # flite | festival | espeak-ng
    voice: str  # engine voice (espeak-ng: "dialect+variant")
    pitch: float
    speed: float
    split: str  # train | test

    @property
    def name(self) -> str:
        return f"{self.engine}_{self.voice}_p{self.pitch:g}_s{self.speed:g}"


def voice_settings() -> list[Voice]:
    """All voice settings in a fixed order (a setting's index is its voice id)."""
    out = []

    def add(engine, voice, pitches, speeds=SPEEDS):
        split = "test" if (engine, voice) in TEST_VOICES else "train"
        out.extend(Voice(engine, voice, p, s, split) for p in pitches for s in speeds)

    for v in FLITE_VOICES:
        add("flite", v, (1.0,) if v == "rms" else PITCHES)  # flite's rms ignores every f0 setting
    for v in FESTIVAL_VOICES:
        add("festival", v, (1.0,) if v.endswith("_hts") else PITCHES)  # HTS: no f0 control from festival
    for i in range(len(ESPEAK_VARIANTS)):
        add("espeak-ng", espeak_voice(i), ESPEAK_PITCHES, ESPEAK_SPEEDS)
    return out


def select_voices(limit_voices: int | Sequence[str] | None = None, small: bool = False) -> list[Voice]:
    """The settings to render: all, `limit_voices` evenly spaced ones (an int), or the named ones."""
    settings = voice_settings()
    if small:
        limit_voices = SMALL_VOICES
    if limit_voices is None:
        return settings
    if isinstance(limit_voices, int):
        n = max(1, min(limit_voices, len(settings)))
        return [settings[round(i * (len(settings) - 1) / max(n - 1, 1))] for i in range(n)]
    by_name = {v.name: v for v in settings}
    unknown = [n for n in limit_voices if n not in by_name]
    if unknown:
        raise UserError(f"unknown spoken_digits voice settings {unknown}; names look like {settings[0].name}")
    return [by_name[n] for n in limit_voices]


# ---- requirements -------------------------------------------------------------------------------------------

def _install_hint(what: str, packages: Sequence[str]) -> str:
    return f"{what} needs {', '.join(packages)}: apt-get install {' '.join(packages)}"


@lru_cache(maxsize=8)
def _listed_voices(engine: str, path: str) -> frozenset:
    """Voices an engine reports: flite -lv names, espeak-ng variant file names (cached per PATH)."""
    if engine == "flite":
        text = subprocess.run(["flite", "-lv"], capture_output=True, text=True, check=False).stdout
        return frozenset(text.split(":", 1)[-1].split())
    text = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True, check=False).stdout
    return frozenset(line.split()[4].split("/")[-1] for line in text.splitlines()[1:] if len(line.split()) > 4)


def check_requirements(voices: Sequence[Voice]) -> None:
    """Raise UserError (one line naming the Debian packages) when an engine or voice of `voices` is missing."""
    missing = []
    path = os.environ.get("PATH", "")
    for engine in sorted({v.engine for v in voices}):
        if shutil.which(engine, path=path) is None:
            missing.append(f"the {engine} command")
            continue
        wanted = {v.voice for v in voices if v.engine == engine}
        if engine == "festival":
            missing += [f"festival voice {w}" for w in sorted(wanted) if not Path(FESTIVAL_VOICES[w][0]).is_dir()]
        else:
            have = _listed_voices(engine, path)
            missing += [f"{engine} voice {w}" for w in sorted(wanted) if w.split("+")[-1] not in have]
    if missing:
        raise UserError(_install_hint("spoken_digits", PACKAGES) + f" (missing: {', '.join(missing)})")


# ---- engines: each renders the ten words of one setting into wav files at the engine's own rate --------------

def _run(cmd: list[str], **kw) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed ({res.returncode}): {res.stderr.strip()[-300:]}")


def _render_flite(v: Voice, words: Sequence[str], out: Path) -> list[Path]:
    f0 = ["--setf", f"int_f0_target_mean={105 * v.pitch:g}"] if v.voice.startswith("kal") else \
         ["--setf", f"f0_shift={v.pitch:g}"]
    paths = [out / f"{w}.wav" for w in words]
    for w, p in zip(words, paths):
        _run(["flite", "-voice", v.voice, "--setf", f"duration_stretch={1 / v.speed:g}", *f0, "-t", w, "-o", str(p)])
    return paths


def _render_festival(v: Voice, words: Sequence[str], out: Path) -> list[Path]:
    """One festival process per setting: a Scheme script selects the voice, sets rate and f0, saves each word."""
    lines = [f"(voice_{v.voice})"]
    if v.voice.endswith("_hts"):  # HTS engine: "-r" is the speaking rate
        lines.append(f'(set! hts_engine_params (append {v.voice}::hts_engine_params (list (list "-r" {v.speed:g}))))')
    else:  # diphone voices: duration stretch and the target f0 mean of the linear-regression intonation
        lines.append(f"(Parameter.set 'Duration_Stretch (/ (Parameter.get 'Duration_Stretch) {v.speed:g}))")
        lines.append(f"(set! int_lr_params (cons (list 'target_f0_mean {105 * v.pitch:g}) int_lr_params))")
    paths = [out / f"{w}.wav" for w in words]
    lines += [f'(utt.save.wave (utt.synth (Utterance Text "{w}")) "{p}" \'riff)' for w, p in zip(words, paths)]
    script = out / "render.scm"
    script.write_text("\n".join(lines) + "\n")
    _run(["festival", "-b", str(script)])
    if not all(p.exists() for p in paths):
        raise RuntimeError(f"festival wrote no audio for {v.name}")
    return paths


def _render_espeak(v: Voice, words: Sequence[str], out: Path) -> list[Path]:
    paths = [out / f"{w}.wav" for w in words]
    for w, p in zip(words, paths):
        _run(["espeak-ng", "-v", v.voice, "-p", str(round(50 * v.pitch)), "-s", str(round(175 * v.speed)),
              "-w", str(p), w])
    return paths


ENGINES = {"flite": _render_flite, "festival": _render_festival, "espeak-ng": _render_espeak}


# ---- placing a word in a clip ---------------------------------------------------------------------------------

def read_mono(path: Path, rate: int = SAMPLE_RATE) -> torch.Tensor:
    """A sound file -> [T] float32 mono at `rate` (torchaudio's resampler)."""
    data, sr = sf.read(str(path), dtype="float32", always_2d=True)  # [T, C]
    wav = torch.from_numpy(data).mean(1)
    return AF.resample(wav, sr, rate) if sr != rate else wav


def trim(wav: torch.Tensor, frame: int = 80, floor_db: float = FLOOR_DB) -> torch.Tensor:
    """[T] -> the span from 5 ms before the first to 10 ms after the last frame above `floor_db` of the loudest."""
    n = wav.shape[0] // frame
    rms = wav[: n * frame].view(n, frame).pow(2).mean(1).sqrt()  # [n] 5 ms frames at 16 kHz
    loud = torch.nonzero(rms > rms.max() * 10 ** (floor_db / 20)).flatten()
    if loud.numel() == 0:
        raise RuntimeError("silent rendering")
    start, end = max(int(loud[0]) - 1, 0) * frame, min(int(loud[-1]) + 3, n) * frame
    return wav[start:end]


def place(word: torch.Tensor, offset: int, length: int = CLIP, peak: float = PEAK) -> tuple[torch.Tensor, bool]:
    """[T] trimmed word -> ([length] clip with the word at `offset`, peak `peak`, silence after; truncated?)."""
    word = word * (peak / word.abs().max())
    clip = torch.zeros(length)
    n = min(word.shape[0], length - offset)
    clip[offset: offset + n] = word[:n]
    truncated = n < word.shape[0]
    if truncated:  # fade out instead of a click at the cut
        clip[length - FADE:] *= torch.linspace(1, 0, FADE)
    return clip, truncated


def clip_rng(seed: int, *keys) -> np.random.Generator:
    """A generator for one clip, independent of which other clips are rendered (keys hashed stably)."""
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in keys)])


def _render_voice(v: Voice, vid: int, seed: int, clip_dir: Path) -> list[dict]:
    """Render the ten words of one setting into clip_dir/<setting>/<word>.wav; manifest rows."""
    folder = clip_dir / v.name
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cm_digits_") as tmp:
        raw = ENGINES[v.engine](v, WORDS, Path(tmp))
        for label, (word, path) in enumerate(zip(WORDS, raw)):
            offset = int(clip_rng(seed, v.name, word).integers(0, MAX_OFFSET))
            clip, truncated = place(trim(read_mono(path)), offset)
            sf.write(str(folder / f"{word}.wav"), clip.numpy(), SAMPLE_RATE, subtype="PCM_16")
            rows.append({"file": f"clips/{v.name}/{word}.wav", "label": label, "voice": vid, "split": v.split,
                         "offset": offset, "truncated": truncated})
    return rows


def render_spoken_digits(cache_dir: str | Path | None = None, seed: int = 0,
                         limit_voices: int | Sequence[str] | None = None, small: bool = False,
                         workers: int = 2, force: bool = False) -> Path:
    """Render (or reuse) the spoken digits in `cache_dir`; returns the path of its manifest.json.

    `limit_voices`: an int (that many evenly spaced settings) or setting names; `small`: `SMALL_VOICES`.
    At most 2 engine processes run at once.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache("spoken_digits", small)
    voices = select_voices(limit_voices, small)
    ids = {v.name: i for i, v in enumerate(voice_settings())}
    request = {"dataset": "spoken_digits", "version": VERSION, "seed": seed, "sample_rate": SAMPLE_RATE,
               "voices": [v.name for v in voices]}
    if not force and (done := reuse_manifest(root, request)):
        return done
    check_requirements(voices)
    clip_dir = fresh_clip_dir(root)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 2))) as pool:
        parts = list(pool.map(lambda v: _render_voice(v, ids[v.name], seed, clip_dir), voices))
    seconds = time.perf_counter() - t0
    clips = [row for part in parts for row in part]
    log.info("rendered %d spoken digits from %d voice settings in %.1f s", len(clips), len(voices), seconds)
    extra = {"class_names": list(WORDS), "voice_names": list(ids), "settings": [asdict(v) for v in voice_settings()],
             "render_seconds": round(seconds, 2), "packages": package_versions(PACKAGES)}
    return write_manifest(root, request, clips, extra)


def default_spoken_digits_dir(small: bool = False) -> Path:
    return default_cache("spoken_digits", small)


class SpokenDigits:
    """The rendered spoken digits of one split: `get_waveforms(indices)` -> [B, 1, 16000], `labels` 0-9,
    `voices` (voice-setting ids into `voice_names`). Renders into `root` (default: the cache) when absent."""

    class_names: ClassVar[list[str]] = list(WORDS)

    def __init__(self, root: str | Path | None = None, split: str = "train", sample_rate: int = SAMPLE_RATE,
                 small: bool = False, seed: int = 0):
        if root is None:  # the default cache: rendered, or checked against the current request and reused
            manifest = render_spoken_digits(None, seed=seed, small=small)
        else:  # a folder rendered before (with any options) is used as it is
            manifest = Path(root) / "manifest.json"
            if not manifest.exists():
                render_spoken_digits(root, seed=seed, small=small)
        self.clips = RenderedClips(manifest, split, sample_rate)
        self.manifest = self.clips.manifest
        self.voice_names = self.manifest["voice_names"]
        self.labels = self.clips.column("label")  # [N]
        self.voices = self.clips.column("voice")  # [N]

    def __len__(self) -> int:
        return len(self.clips)

    def get_waveforms(self, indices) -> torch.Tensor:
        return self.clips.get_waveforms(indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.clips.get_waveforms([i])[0], int(self.labels[i])


# ---- cache, manifest and clip access shared with notes.py -----------------------------------------------------

def default_cache(name: str, small: bool = False) -> Path:
    """$CM_MEDIA_CACHE/<name> (else ~/.cache/cm-media/<name>), with a `small` subfolder for test renders."""
    base = Path(os.environ.get("CM_MEDIA_CACHE") or Path.home() / ".cache" / "cm-media")
    return base / name / ("small" if small else "full")


def reuse_manifest(root: Path, request: dict) -> Path | None:
    """The manifest in `root` when it was rendered for exactly `request` (and its files are there), else None."""
    path = root / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("request") != request or not all((root / c["file"]).exists() for c in manifest["clips"]):
        return None
    log.info("reusing %s (%d clips)", path, len(manifest["clips"]))
    return path


def fresh_clip_dir(root: Path) -> Path:
    """An empty root/clips (the manifest goes first, so an interrupted render is redone)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").unlink(missing_ok=True)
    shutil.rmtree(root / "clips", ignore_errors=True)
    (root / "clips").mkdir()
    return root / "clips"


def write_manifest(root: Path, request: dict, clips: list[dict], extra: dict) -> Path:
    """Write root/manifest.json atomically (request, per-split counts, clip rows, extra)."""
    counts = {s: sum(c["split"] == s for c in clips) for s in sorted({c["split"] for c in clips})}
    manifest = {"request": request, **extra, "counts": counts, "clips": clips}
    tmp = root / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, root / "manifest.json")
    return root / "manifest.json"


def package_versions(packages: Sequence[str]) -> dict:
    """Installed Debian versions of `packages` (recorded in manifests: other versions render other audio)."""
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n", *packages], capture_output=True,
                         text=True, check=False)
    return dict(line.split(" ", 1) for line in res.stdout.splitlines() if " " in line)


class RenderedClips:
    """The clips of one split of a manifest; reads wav files on access (soundfile), resampled if asked."""

    def __init__(self, manifest_path: str | Path, split: str = "train", sample_rate: int | None = None):
        self.root = Path(manifest_path).parent
        self.manifest = json.loads(Path(manifest_path).read_text())
        splits = {c["split"] for c in self.manifest["clips"]}
        if split != "all" and split not in splits:
            raise UserError(f"unknown split {split!r}: choose one of {sorted(splits)} or 'all'")
        self.rows = [c for c in self.manifest["clips"] if split in ("all", c["split"])]
        self.native_rate = self.manifest["request"]["sample_rate"]
        self.sample_rate = sample_rate or self.native_rate

    def __len__(self) -> int:
        return len(self.rows)

    def column(self, key: str) -> torch.Tensor:
        return torch.tensor([c[key] for c in self.rows], dtype=torch.long)

    def get_waveforms(self, indices) -> torch.Tensor:
        """indices [B] -> [B, 1, T] float32 in [-1, 1]."""
        idx = torch.as_tensor(indices).flatten().tolist()
        wav = torch.stack([torch.from_numpy(sf.read(str(self.root / self.rows[i]["file"]), dtype="float32")[0])
                           for i in idx])  # [B, T]
        if self.sample_rate != self.native_rate:
            wav = AF.resample(wav, self.native_rate, self.sample_rate)
        return wav[:, None]
