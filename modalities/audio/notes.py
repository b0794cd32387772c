"""NSynth-like single instrument notes rendered offline with FluidSynth from a General MIDI SoundFont.

Each clip: one GM program playing one MIDI pitch (36-96) at one velocity, note held 0.75 s then released,
1.0 s at 16 kHz mono (FluidSynth at 44.1 kHz, reverb and chorus off, L/R averaged, torchaudio resampling,
20 ms fade-out at the end). Loudness follows the velocity (one fixed synth gain, no normalization).
Labels: pitch (MIDI number) and instrument family (two GM programs per family, like NSynth's families).

Rendered once into a cache folder (wav files + `manifest.json`) and reused while the request is unchanged.
Split: in every (family, pitch) group a seeded ~10% of the notes (at least one) is held out as "test".
Notes that make no sound (pitch outside the preset's key range, e.g. alto sax above 84) are dropped.
SoundFonts: fluid-soundfont-gm (FluidR3_GM.sf2) for the full set, timgm6mb-soundfont for `small` test renders.
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from cm_media.errors import UserError

from .spoken_digits import (
    RenderedClips,
    clip_rng,
    default_cache,
    fresh_clip_dir,
    reuse_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

VERSION = 2  # bump when the rendering changes: cached sets with another version are rendered again
SAMPLE_RATE = 16000
SYNTH_RATE = 44100
BLOCK = 64  # FluidSynth renders in blocks of 64 frames: note on/off land on block boundaries
HOLD = round(0.75 * SYNTH_RATE / BLOCK) * BLOCK  # note-off after ~0.75 s
LENGTH = SYNTH_RATE  # 1.0 s rendered, then resampled to 16000 samples
FADE = 320  # 20 ms fade-out at 16 kHz so a long release ends without a click
GAIN = 1.0  # synth.gain: loud notes peak near 0.6, nothing clips (peaks are limited to LIMIT anyway)
LIMIT = 0.99
SILENT = 1e-4  # a peak below this: the pitch is outside the preset's key range (no sample plays), note dropped

FAMILIES = {  # NSynth-style family -> two General MIDI programs (0-based)
    "keyboard": (0, 4),  # acoustic grand piano, electric piano 1
    "mallet": (11, 12),  # vibraphone, marimba
    "organ": (16, 19),  # drawbar organ, church organ
    "guitar": (24, 25),  # nylon, steel-string acoustic guitar
    "bass": (32, 33),  # acoustic bass, electric bass (finger)
    "string": (40, 48),  # violin, string ensemble 1
    "brass": (56, 61),  # trumpet, brass section
    "reed": (65, 71),  # alto sax, clarinet
    "flute": (73, 75),  # flute, pan flute
    "synth_lead": (80, 81),  # square lead, sawtooth lead
    "vocal": (52, 53),  # choir aahs, voice oohs
}
PITCHES = tuple(range(36, 97))
VELOCITIES = (32, 64, 96, 127)
SMALL = {"pitches": (48, 60, 72, 84), "velocities": (64, 127), "programs_per_family": 1}
SOUNDFONTS = {"full": ("fluid-soundfont-gm", "FluidR3_GM.sf2"), "small": ("timgm6mb-soundfont", "TimGM6mb.sf2")}
SF2_DIR = Path("/usr/share/sounds/sf2")
SAMPLE_CACHE = threading.Lock()  # libfluidsynth's sample cache is process-wide and not safe to change concurrently


@dataclass(frozen=True)
class Note:
    family: int  # index into FAMILIES
    program: int  # GM program, 0-based
    pitch: int  # MIDI number
    velocity: int

    @property
    def name(self) -> str:
        return f"{list(FAMILIES)[self.family]}_p{self.program:03d}_n{self.pitch:03d}_v{self.velocity:03d}"


def note_grid(pitches=PITCHES, velocities=VELOCITIES, programs_per_family: int = 2) -> list[Note]:
    """Every family x program x pitch x velocity, in a fixed order."""
    return [Note(f, prog, p, v) for f, progs in enumerate(FAMILIES.values()) for prog in progs[:programs_per_family]
            for p in pitches for v in velocities]


def assign_splits(notes: list[Note], seed: int, test_share: float = 0.1) -> list[str]:
    """Per (family, pitch) group, a seeded `test_share` of its notes (at least one, when it has two) -> test."""
    groups: dict[tuple, list[int]] = {}
    for i, n in enumerate(notes):
        groups.setdefault((n.family, n.pitch), []).append(i)
    split = ["train"] * len(notes)
    for (family, pitch), members in groups.items():
        k = max(1, round(test_share * len(members))) if len(members) > 1 else 0
        for j in clip_rng(seed, "notes-split", family, pitch).choice(len(members), size=k, replace=False):
            split[members[j]] = "test"
    return split


# ---- requirements -------------------------------------------------------------------------------------------

def _hint(package: str, name: str) -> str:
    return (f"notes needs {package} ({name}), libfluidsynth3 and the PyPI package pyfluidsynth: "
            f"apt-get install {package} libfluidsynth3 && pip install pyfluidsynth")


def find_soundfont(small: bool = False) -> Path:
    """The packaged SoundFont (found with `dpkg -L`, else in /usr/share/sounds/sf2); UserError when absent."""
    package, name = SOUNDFONTS["small" if small else "full"]
    try:
        listed = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False).stdout
    except OSError:
        listed = ""
    for candidate in [*(Path(line) for line in listed.splitlines() if line.endswith("/" + name)), SF2_DIR / name]:
        if candidate.is_file():
            return candidate
    raise UserError(_hint(package, name) + f" (missing: {name})")


def load_fluidsynth():
    """The pyfluidsynth module (it loads Debian's libfluidsynth3); UserError naming the packages when absent."""
    try:
        import fluidsynth
    except (ImportError, OSError) as e:
        raise UserError(_hint(*SOUNDFONTS["full"]) + f" ({e})") from None
    return fluidsynth


# ---- rendering ------------------------------------------------------------------------------------------------

def _write_float(fluidsynth):
    """libfluidsynth's float output (pyfluidsynth only wraps the dithered 16-bit one, which is not repeatable)."""
    fn = fluidsynth._fl.fluid_synth_write_float
    fn.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                   ctypes.c_int, ctypes.c_int]
    return fn


def synth_note(fluidsynth, soundfont: Path, note: Note) -> np.ndarray:
    """One note -> [LENGTH, 2] float32 at 44.1 kHz. A fresh synth per note: a reused one carries state from
    earlier notes (about 1% differences), and a fresh one makes each note independent of render order."""
    settings = {"synth.reverb.active": 0, "synth.chorus.active": 0, "synth.lock-memory": 0,
                "synth.dynamic-sample-loading": 1}  # load only this preset's samples: 10x faster
    write = _write_float(fluidsynth)
    out = np.zeros((-(-LENGTH // BLOCK) * BLOCK, 2), np.float32)  # [frames, L/R], whole blocks
    with SAMPLE_CACHE:
        synth = fluidsynth.Synth(gain=GAIN, samplerate=float(SYNTH_RATE), **settings)
    try:
        with SAMPLE_CACHE:
            sfid = synth.sfload(str(soundfont))
            if sfid < 0 or synth.program_select(0, sfid, 0, note.program) != 0:  # loads the preset's samples
                raise UserError(f"FluidSynth cannot play GM program {note.program} from {soundfont}")
        synth.noteon(0, note.pitch, note.velocity)
        for start, stop in ((0, HOLD), (HOLD, out.shape[0])):
            ptr = out[start:].ctypes.data
            write(synth.synth, stop - start, ptr, 0, 2, ptr + 4, 0, 2)  # interleaved L/R
            if start == 0:
                synth.noteoff(0, note.pitch)
    finally:
        with SAMPLE_CACHE:
            synth.delete()
    return out[:LENGTH]


def to_clip(stereo: np.ndarray) -> tuple[torch.Tensor, float]:
    """[LENGTH, 2] at 44.1 kHz -> ([16000] mono at 16 kHz with a 20 ms fade-out, peak before limiting)."""
    mono = torch.from_numpy(stereo).mean(1)
    clip = AF.resample(mono, SYNTH_RATE, SAMPLE_RATE)[:SAMPLE_RATE]  # [16000]
    clip[-FADE:] *= torch.linspace(1, 0, FADE)
    peak = float(clip.abs().max())
    return (clip * (LIMIT / peak) if peak > LIMIT else clip), peak


def _render_note(fluidsynth, soundfont: Path, note: Note, clip_dir: Path) -> dict:
    clip, peak = to_clip(synth_note(fluidsynth, soundfont, note))
    family = list(FAMILIES)[note.family]
    (clip_dir / family).mkdir(exist_ok=True)
    file = f"clips/{family}/{note.name}.wav"
    sf.write(str(clip_dir.parent / file), clip.numpy(), SAMPLE_RATE, subtype="PCM_16")
    return {"file": file, **asdict(note), "peak": round(peak, 4)}


def drop_silent(root: Path, clips: list[dict]) -> tuple[list[dict], list[str]]:
    """Remove notes that made no sound (pitch outside the preset's key range): (kept rows, dropped files)."""
    silent = [c for c in clips if c["peak"] < SILENT]
    for c in silent:
        (root / c["file"]).unlink()
    return [c for c in clips if c["peak"] >= SILENT], [c["file"] for c in silent]


def render_notes(cache_dir: str | Path | None = None, soundfont: str | Path | None = None, seed: int = 0,
                 small: bool = False, pitches=None, velocities=None, workers: int = 2, force: bool = False) -> Path:
    """Render (or reuse) the notes in `cache_dir`; returns the path of its manifest.json.

    `soundfont`: an .sf2 path (default: FluidR3_GM, or TimGM6mb when `small`); `small`: 11 families x 1 program
    x 4 pitches x 2 velocities for tests. `seed` only chooses the test split.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache("notes", small)
    if soundfont is None:
        soundfont = find_soundfont(small)
    soundfont = Path(soundfont)
    if not soundfont.is_file():
        raise UserError(_hint(*SOUNDFONTS["small" if small else "full"]) + f" (missing: {soundfont})")
    grid = dict(SMALL) if small else {"pitches": PITCHES, "velocities": VELOCITIES, "programs_per_family": 2}
    grid["pitches"], grid["velocities"] = tuple(pitches or grid["pitches"]), tuple(velocities or grid["velocities"])
    notes = note_grid(**grid)
    request = {"dataset": "notes", "version": VERSION, "seed": seed, "sample_rate": SAMPLE_RATE,
               "soundfont": [str(soundfont.resolve()), soundfont.stat().st_size], **{k: list(v) if
               isinstance(v, tuple) else v for k, v in grid.items()}}
    if not force and (done := reuse_manifest(root, request)):
        return done
    fluidsynth = load_fluidsynth()
    clip_dir = fresh_clip_dir(root)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(workers, 2))) as pool:  # ctypes calls release the GIL
        clips = list(pool.map(lambda n: _render_note(fluidsynth, soundfont, n, clip_dir), notes))
    seconds = time.perf_counter() - t0
    clips, silent = drop_silent(root, clips)
    splits = assign_splits([Note(c["family"], c["program"], c["pitch"], c["velocity"]) for c in clips], seed)
    clips = [{**c, "split": split} for c, split in zip(clips, splits)]
    log.info("rendered %d notes in %.1f s (%d silent ones dropped)", len(clips), seconds, len(silent))
    extra = {"instrument_names": list(FAMILIES), "programs": {k: list(v) for k, v in FAMILIES.items()},
             "pitch_names": [str(p) for p in PITCHES], "render_seconds": round(seconds, 2),
             "limited": sum(c["peak"] > LIMIT for c in clips), "silent": silent}
    return write_manifest(root, request, clips, extra)


class Notes:
    """The rendered notes of one split: `get_waveforms(indices)` -> [B, 1, 16000], `pitches` (MIDI numbers),
    `instruments` (family indices into `instrument_names`). Renders into `root` (default: the cache) when absent."""

    instrument_names: ClassVar[list[str]] = list(FAMILIES)
    pitch_names: ClassVar[list[str]] = [str(p) for p in PITCHES]  # "36".."96"

    def __init__(self, root: str | Path | None = None, split: str = "train", small: bool = False,
                 sample_rate: int = SAMPLE_RATE, soundfont: str | Path | None = None, seed: int = 0):
        if root is None:  # the default cache: rendered, or checked against the current request and reused
            manifest = render_notes(None, soundfont=soundfont, seed=seed, small=small)
        else:  # a folder rendered before (with any options) is used as it is
            manifest = Path(root) / "manifest.json"
            if not manifest.exists():
                render_notes(root, soundfont=soundfont, seed=seed, small=small)
        self.clips = RenderedClips(manifest, split, sample_rate)
        self.manifest = self.clips.manifest
        self.pitches = self.clips.column("pitch")  # [N] MIDI numbers
        self.instruments = self.clips.column("family")  # [N]
        self.programs = self.clips.column("program")  # [N] GM programs, 0-based
        self.velocities = self.clips.column("velocity")  # [N]

    @property
    def pitch_index(self) -> torch.Tensor:
        """[N] pitch classes for conditioning: index into `pitch_names` (MIDI number - 36)."""
        return self.pitches - PITCHES[0]

    def __len__(self) -> int:
        return len(self.clips)

    def get_waveforms(self, indices) -> torch.Tensor:
        return self.clips.get_waveforms(indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        return self.clips.get_waveforms([i])[0], int(self.pitches[i]), int(self.instruments[i])
