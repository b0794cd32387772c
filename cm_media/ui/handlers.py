"""What the web app's buttons do, without Gradio: generate, edit and compare with a served model, writing the files
`cm-media generate` / `edit` would write into a temporary folder, timed, with the network evaluations counted.

Each function takes plain values (as the page or an API client sends them), checks them (`limits`), and returns
a `Result`; the layout (`app.py`) turns results into players and downloads.
"""

from __future__ import annotations

import itertools
import shlex
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cm_media.errors import UserError
from cm_media.modality import AUDIO_SUFFIXES, IMAGE_SUFFIXES, VIDEO_SUFFIXES
from cm_media.ui import limits
from cm_media.ui.models import ModelInfo, ModelStore


@dataclass
class Shown:
    """A file the page plays or shows, with its caption."""

    path: Path
    caption: str

    @property
    def kind(self) -> str:
        s = self.path.suffix.lower()
        return "audio" if s in AUDIO_SUFFIXES else "video" if s in VIDEO_SUFFIXES else \
            "image" if s in IMAGE_SUFFIXES else "file"


@dataclass
class Result:
    """One request's outcome: the media to show, the files to download, its cost and the equivalent command."""

    title: str
    shown: list[Shown] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    nfe: int = 0  # network evaluations per sample
    seconds: float = 0.0  # wall time of the request on the server (model call and file writing)
    model_seconds: float = 0.0
    command: str = ""

    def summary(self) -> str:
        return (f"{self.title}: {self.nfe} network evaluation(s) per sample, {self.seconds:.3f} s "
                f"(model {self.model_seconds:.3f} s, files {self.seconds - self.model_seconds:.3f} s)")


class Outputs:
    """The temporary folder of the results: a fresh subfolder per request; a request's files stay while it is
    among the last `keep` requests or younger than `max_age_s` (a page shows them), but never beyond `most`
    requests; the whole folder is removed by `cleanup` (the server calls it when it stops)."""

    def __init__(self, root: str | Path | None = None, keep: int = 64, max_age_s: float = 900.0, most: int = 512):
        self.root = Path(tempfile.mkdtemp(prefix="cm-media-ui-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.keep, self.max_age_s, self.most = keep, max_age_s, most
        self._count = itertools.count()
        self._made: dict[Path, float] = {}  # request folder -> when it was made (in order)
        self._lock = threading.Lock()

    def new(self, what: str) -> Path:
        with self._lock:
            folder = self.root / f"{next(self._count):06d}_{what}"
            folder.mkdir()
            self._made[folder] = time.monotonic()
            old = list(self._made)[: max(0, len(self._made) - self.keep)]
            now = time.monotonic()
            for i, path in enumerate(old):
                if now - self._made[path] > self.max_age_s or len(self._made) - i > self.most:
                    shutil.rmtree(path, ignore_errors=True)
                    del self._made[path]
        return folder

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


# ---------------------------------------------------------------- requests


def _slug(name: str) -> str:
    out = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(name).name or name)
    return out.strip("_") or "sample"


def condition_request(info: ModelInfo, values: list | tuple) -> dict[str, str]:
    """The condition menus' values (in the model's condition order) -> {name: value}; '(any)' or empty: none."""
    cond = {}
    for c, value in zip(info.conditions, list(values or [])):
        if value is None:
            continue
        text = str(value).strip()
        if text and text != limits.ANY:
            cond[c.name] = text
    return cond


def _labels(cond: dict[str, str], n: int, info: ModelInfo, first_frame: bool) -> list[str]:
    """What sample i was asked for ("pitch=60, instrument=flute"; comma lists cycle as generate cycles them)."""
    lists = {k: [v.strip() for v in str(v).split(",")] for k, v in cond.items()}
    out = []
    for i in range(n):
        parts = [f"{k}={vs[i % len(vs)]}" for k, vs in lists.items()]
        if first_frame:
            parts.append("first frame given")
        if not parts and info.conditional:
            parts.append("any")
        out.append(", ".join(parts) or f"sample {i}")
    return out


def _drawn(gen, n: int, seed: int, shape: tuple[int, ...]) -> list[str]:
    """For a request that names no condition: the classes `generate` drew for each sample ("any: class=7"), by
    the same batches and generators (Generator.batch_conditions); [] where it draws none."""
    classes = [c for c in gen.conditions if c.kind == "class"]
    if not classes:
        return []
    draw, per, out = gen.batch_conditions(None, n, seed), gen.batch_for(shape), []
    for start in range(0, n, per):
        b = min(per, n - start)
        picked = draw(start, b)
        if not picked:
            return []
        for j in range(b):
            out.append("any: " + ", ".join(f"{c.name}={c.classes[int(picked[c.name][j])]}" for c in classes
                                           if c.name in picked))
    return out


def nfe(gen, steps: int, cfg_scale: float | None, cond: dict) -> int:
    """Network evaluations per sample: steps (EDM: 2N - 1 Heun evaluations), doubled by classifier-free guidance
    (a conditional model that is not a guided student, at a scale other than 1)."""
    opt = gen.options(steps=steps, cfg_scale=cfg_scale)
    per = opt.steps
    if not gen.is_consistency:
        per = 2 * opt.steps - 1 if gen.cfg.sample.sampler == "heun" else opt.steps
    guided = (not gen.guided_student and opt.cfg_scale not in (None, 1)
              and bool(cond or [c for c in gen.conditions if c.kind == "class"]))
    return per * (2 if guided else 1)


def _command(info: ModelInfo, verb: str, args: list[str]) -> str:
    return " ".join(["cm-media", verb, shlex.quote(info.source), *(shlex.quote(a) for a in args)])


def _cond_args(cond: dict[str, str]) -> list[str]:
    return [a for k, v in cond.items() for a in ("--cond", f"{k}={v}")]


def _write(gen, info: ModelInfo, media: torch.Tensor, folder: Path, stem: str, options: dict,
           labels: list[str]) -> tuple[list[Shown], list[Path]]:
    """Write `media` as `cm-media generate --out folder/stem.ext` would (with --separate where the modality has
    it, so each sample is a file of its own; images also get the grid), and pick what the page shows."""
    save = {k: v for k, v in options.items() if k != "first_frame"}
    target = folder / f"{stem}{info.suffix}"
    if info.separate:
        paths = gen.save(media, target, separate=True, **save)
        files = list(paths)
        if info.kind == "image":
            files = gen.save(media, target, **save) + files  # the grid generate writes by default
        samples = [p for p in paths if p.suffix.lower() == info.suffix and p.parent != folder]
    else:
        files = list(gen.save(media, target, **save))
        samples = [p for p in files if p.suffix.lower() == info.suffix]
    shown = [Shown(p, label) for p, label in zip(samples, labels)]
    return shown, files


def generate(store: ModelStore, outputs: Outputs, model: str, conditions=(), first_frame=None, steps=None,
             cfg_scale=None, seed=0, n=1, length=None, tag: str = "generate") -> Result:
    """`cm-media generate` from the page: n samples of `model` with the given conditions and options."""
    info = store.info(model)
    n, seed = limits.samples(n), limits.seed(seed)
    steps = info.steps if steps in (None, "") else limits.steps(steps)
    scale = limits.cfg_scale(cfg_scale) if info.conditional or info.guided_student else None  # else: no effect
    options = limits.length(length, info.length_option)
    cond = condition_request(info, conditions)
    if first_frame not in (None, ""):
        if info.frames is None:
            raise UserError(f"model {model} takes no first frame (it is not trained to animate a picture)")
        cond[info.frames.name] = str(limits.upload(first_frame, "image" if _is_picture(first_frame) else "video"))
    gen = store.get(model)
    limits.request_size(n, gen.shape(**options))
    folder = outputs.new(tag)
    t0 = time.perf_counter()
    media = gen.generate(n, steps=steps, seed=seed, cond=cond, cfg_scale=scale, bf16=store.bf16, **options)
    t1 = time.perf_counter()
    labels = _labels({k: v for k, v in cond.items() if info.frames is None or k != info.frames.name}, n, info,
                     info.frames is not None and info.frames.name in cond)
    if not cond:
        labels = _drawn(gen, n, seed, gen.shape(**options)) or labels
    shown, files = _write(gen, info, media, folder, _slug(model), options, labels)
    elapsed = time.perf_counter() - t0
    args = [*_cond_args({k: v for k, v in cond.items() if info.frames is None or k != info.frames.name}),
            *(["--first-frame", "PICTURE"] if info.frames is not None and info.frames.name in cond else []),
            "-n", str(n), "--steps", str(steps), "--seed", str(seed),
            *([] if scale is None else ["--cfg-scale", f"{scale:g}"]),
            *[a for k, v in options.items() for a in (f"--{k}", f"{v:g}")],
            *(["--separate"] if info.separate else []), *_precision(gen, store),
            "--out", f"{_slug(model)}{info.suffix}"]
    return Result(f"{model}, {steps} step(s)", shown, files, nfe(gen, steps, scale, cond), elapsed, t1 - t0,
                  _command(info, "generate", args))


def _precision(gen, store: ModelStore) -> list[str]:
    """--no-bf16 where the server computes in float32 although the model's default is bf16."""
    return ["--no-bf16"] if store.bf16 is False and gen.cfg.sample.bf16 else []


def _is_picture(path) -> bool:
    return Path(str(path)).suffix.lower() in IMAGE_SUFFIXES | {".bmp", ".tif", ".tiff"}


def edit(store: ModelStore, outputs: Outputs, model: str, upload, region: str | None = None, conditions=(),
         steps=None, seed=0, guidance=0.0, cfg_scale=None) -> Result:
    """`cm-media edit` from the page: regenerate `region` of the uploaded file, keep the rest; the result is
    shown beside the input as the model reads it (resampled, resized, cut to the model's clip)."""
    info = store.info(model)
    seed, weight, scale = limits.seed(seed), limits.guidance(guidance), limits.cfg_scale(cfg_scale)
    steps = None if steps in (None, "") else limits.steps(steps)
    region = (region or "").strip() or info.edit_default
    path = limits.upload(upload, info.kind)
    cond = condition_request(info, conditions)
    gen = store.get(model)
    media = gen.modality.read(path, gen.cfg, gen.codec)  # [1, ...]
    shape = tuple(gen.codec.encode(media).shape)
    limits.request_size(1, shape[1:])
    mask = gen.modality.edit_mask(region, shape, gen.cfg)
    folder = outputs.new("edit")
    t0 = time.perf_counter()
    edited = gen.edit(media, mask, steps=steps, seed=seed, guidance=weight, cond=cond, cfg_scale=scale,
                      bf16=store.bf16)
    t1 = time.perf_counter()
    one = {"separate": True} if info.separate else {}  # a file of its own (an image grid has a border)
    result_files = gen.save(edited, folder / f"edited{info.suffix}", **one)
    elapsed = time.perf_counter() - t0
    input_files = gen.save(media, folder / f"input{info.suffix}", **one)
    share = mask.float().mean().item()
    main_in = [p for p in input_files if p.suffix.lower() == info.suffix][:1]
    main_out = [p for p in result_files if p.suffix.lower() == info.suffix][:1]
    shown = [Shown(p, f"input: {Path(str(upload)).name}, as the model reads it") for p in main_in]
    shown += [Shown(p, f"edited: {region} regenerated ({share:.0%} of the model values)") for p in main_out]
    used = gen.options(max(gen.cfg.sample.steps, 2) if steps is None else steps).steps
    args = ["--input", Path(str(upload)).name, "--mask", region, "--steps", str(used), "--seed", str(seed),
            *_cond_args(cond), *([] if not weight else ["--guidance", f"{weight:g}"]),
            *([] if scale is None else ["--cfg-scale", f"{scale:g}"]), "--out", f"edited{info.suffix}"]
    return Result(f"{model} edit of {region}, {used} step(s)", shown, list(result_files),
                  nfe(gen, used, scale, cond), elapsed, t1 - t0, _command(info, "edit", args))


def compare(store: ModelStore, outputs: Outputs, model: str, conditions=(), first_frame=None, cfg_scale=None,
            seed=0, n=1, step_counts=limits.COMPARE_STEPS) -> list[Result]:
    """The same request (conditions, seed, noise) at 1, 2 and 4 steps: speed against quality, side by side."""
    return [generate(store, outputs, model, conditions, first_frame, k, cfg_scale, seed, n, tag=f"compare{k}")
            for k in step_counts]


# ---------------------------------------------------------------- benchmark tables


def repo_results() -> Path:
    """benchmarks/results/bundled of a source checkout (absent in an installed wheel)."""
    return Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "bundled"


def bench_table(info: ModelInfo, results: Path | None = None) -> tuple[str, Path | None]:
    """The model's rows of the benchmark tables in benchmarks/results (`cm-media bench` Markdown) and its plot:
    ('', None) where none exists. Rows are found by the model's name in the table's first column."""
    results = repo_results() if results is None else results
    if not results.is_dir():
        return "", None
    key = info.name.replace("-", "_")
    tables = []
    for md in sorted(results.glob("bundled_*.md")):
        lines = [ln for ln in md.read_text().splitlines() if ln.startswith("|")]
        if len(lines) < 3:
            continue
        rows = [ln for ln in lines[2:] if ln.strip("|").split("|")[0].strip() == info.name]
        if rows:
            tables.append((md, "\n".join([lines[0], lines[1], *rows])))
    if not tables:
        return "", None
    exact = [t for t in tables if t[0].stem == f"bundled_{key}"]
    md, table = (exact or tables)[0]
    plot = md.with_suffix(".png")
    note = f"From `benchmarks/results/{md.parent.name}/{md.name}` (`cm-media bench`, measured when the model was bundled).\n\n"
    return note + table, plot if plot.is_file() else None
