"""`cm-media demo`: media from each modality's bundled model (audio clips, short videos, an image grid), one
step each, and a report (report.md and report.html, which plays the media inline) with a small speed-vs-quality
table and plot per modality from the benchmark harness. Nothing is downloaded; a missing bundled model is skipped.

What differs per modality comes from its `Modality` hooks (demo_order, demo_models, demo_request, demo_files,
demo_describe, demo_bench_sizes, data_note, report_markdown, report_html), so this module names no modality. A
modality may show several bundled models (a section each); a request's labels are written beside its samples.
"""

from __future__ import annotations

import html
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cm_media.errors import UserError
from cm_media.eval import bench
from cm_media.eval.bench import to_markdown
from cm_media.registry import bundled_model_dir, get_modality, ordered_modalities
from cm_media.runs.checkpoint import atomic_write_bytes
from cm_media.runs.generator import load


@dataclass
class Section:
    """What the demo made for one modality."""

    modality: str
    source: str
    description: str
    name: str = ""  # the bundled model's name (default: the modality's)
    files: list[Path] = field(default_factory=list)  # the media shown in the report
    labels: list[str] = field(default_factory=list)  # what each file was asked for (the request), if anything
    extra: list[Path] = field(default_factory=list)  # e.g. the video frame grid
    load_s: float = 0.0
    generate_s: float = 0.0
    save_s: float = 0.0
    bench_s: float | None = None
    records: list[dict] = field(default_factory=list)
    plot: Path | None = None
    note: str = ""  # e.g. why the benchmark was skipped

    def __post_init__(self):
        self.name = self.name or self.modality

    @property
    def title(self) -> str:
        """"Audio" for a modality's default model, "Audio: notes" for another of its models."""
        head = self.modality.capitalize()
        return head if self.name == self.modality else f"{head}: {self.name}"


def _say(text: str) -> None:
    print(text, flush=True)


def parse_models(items: list[str]) -> dict[str, str]:
    """['audio=runs/x', ...] -> {'audio': 'runs/x'}: a run or checkpoint to use instead of a bundled model."""
    order = ordered_modalities()
    out = {}
    for item in items or []:
        name, sep, source = item.partition("=")
        if not sep or name not in order or not source:
            raise UserError(f"--model expects MODALITY=SOURCE with MODALITY one of {', '.join(order)}, got {item!r}")
        out[name] = source
    return out


def parse_only(text: str | None) -> list[str]:
    order = ordered_modalities()
    if not text:
        return order
    names = [t.strip() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in order]
    if bad or not names:
        raise UserError(f"--only takes a comma-separated subset of {','.join(order)}, got {text!r}")
    return [m for m in order if m in names]


def bundled_available(name: str) -> bool:
    """Whether the bundled model `name` (a modality's default model is named like the modality) is installed."""
    return bundled_model_dir(name) is not None


def _missing_note(modality: str, name: str) -> str:
    note = f"no bundled {name} model in this installation"
    folder = get_modality(modality).pretrained_dir() if name == modality else None
    if folder is None:
        return note
    where = Path(folder) / "model.safetensors"
    try:
        where = where.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        pass
    return f"{note} ({where.as_posix()})"


def _generate(section: Section, gen, out: Path, seed: int, steps: int) -> None:
    """Generate and save the modality's demo media into `out`, timing the model call and the file writing."""
    modality = get_modality(section.modality)
    request = modality.demo_request(gen.cfg)
    t0 = time.perf_counter()
    media = gen.generate(request.n, steps=steps, seed=seed, **request.generate)
    section.generate_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    paths = gen.save(media, out / request.target, **request.save)
    section.save_s = time.perf_counter() - t0
    section.files, section.extra = (list(p) for p in modality.demo_files(list(paths)))
    if len(request.labels) == len(section.files):
        section.labels = list(request.labels)
    section.description = modality.demo_describe(gen.cfg, media, request.n, steps)


def demo_bench_sizes(modality: str) -> dict:
    """The modality's default demo benchmark sizes (`Modality.demo_bench_sizes`)."""
    return dict(get_modality(modality).demo_bench_sizes)


def bench_samples_help() -> str:
    """'32 audio/video, 128 image': the default --bench-samples of each modality, for the help text."""
    groups: dict[int, list[str]] = {}
    for m in ordered_modalities():
        groups.setdefault(demo_bench_sizes(m)["num_samples"], []).append(m)
    return ", ".join(f"{n} {'/'.join(names)}" for n, names in groups.items()) or "per modality"


def bench_sizes(modality: str, samples: int | None = None) -> dict:
    """Timing batch, generated samples and reference size of the demo's benchmark (`samples` scales them)."""
    sizes = demo_bench_sizes(modality)
    if samples is not None:
        if samples < 4:
            raise UserError(f"--bench-samples must be >= 4, got {samples}")
        sizes = {"batch": min(sizes["batch"], samples), "num_samples": samples, "max_references": 2 * samples}
    return sizes


def _bench(section: Section, out: Path, seed: int, device: str, samples: int | None) -> None:
    opts = bench.BenchOptions(steps=[1, 2], repeats=2, warmup=0, seed=seed, device=device, progress=False,
                              **bench_sizes(section.modality, samples))
    t0 = time.perf_counter()
    records = bench.run_bench([section.source], opts)
    section.records = records
    section.plot = bench.write_plot(records, out / f"bench_{section.name}.png")
    section.bench_s = time.perf_counter() - t0


def run_demo(out: str | Path = "demo", seed: int = 0, steps: int = 1, only: list[str] | None = None,
             models: dict[str, str] | None = None, run_bench: bool = True, device: str = "auto",
             bench_samples: int | None = None) -> dict:
    """Make the demo media and report; returns {'sections', 'skipped', 'report_md', 'report_html', 'total_s'}."""
    t_start = time.perf_counter()
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    only = only or ordered_modalities()
    for m in only:
        bench_sizes(m, bench_samples)  # check the option before any work
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out must be a folder, but {out} is a file")
    models = models or {}
    sections, skipped = [], []
    for m in only:
        given = models.get(m)
        for name in [m] if given is not None else get_modality(m).demo_models():
            section = _demo_section(m, name, given, out, seed, steps, device)
            if isinstance(section, str):
                skipped.append((name, section))
            else:
                sections.append(section)
    if not sections:
        raise UserError("no model to run: no bundled model is installed and none was given with --model")
    if run_bench:
        for section in sections:
            if section.note:
                _say(f"{section.name}: benchmark skipped: {section.note}")
                continue
            _bench(section, out, seed, device, bench_samples)
            _say(f"{section.name}: speed-vs-quality table (1 and 2 steps, real-data and noise rows) in "
                 f"{section.bench_s:.1f} s -> {section.plot}")
    total = time.perf_counter() - t_start
    md, page = write_report(out, sections, skipped, total, steps)
    _say(f"report: {page} (open in a browser: plays the media inline) and {md}")
    _say(f"demo finished in {time.perf_counter() - t_start:.1f} s; files in {out}/")
    return {"sections": sections, "skipped": skipped, "report_md": md, "report_html": page, "total_s": total}


def _demo_section(m: str, name: str, given: str | None, out: Path, seed: int, steps: int, device: str):
    """Load and run one model of the demo: its Section, or the note why it was skipped (not installed)."""
    source = given
    if source is None:
        folder = bundled_model_dir(name)
        if folder is None:
            note = _missing_note(m, name)
            _say(f"note: skipping {name}: {note}")
            return note
        source = name if name == m else str(folder)  # a model named like its modality loads by name
    section = Section(m, source, "", name=name)
    t0 = time.perf_counter()
    gen = load(source, device=device)
    section.load_s = time.perf_counter() - t0
    if gen.cfg.modality != m:
        raise UserError(f"--model {m}={source} is a {gen.cfg.modality} model, not {m}")
    _generate(section, gen, out, seed, steps)
    section.note = get_modality(m).data_note(gen.cfg) or ""
    more = f" (+{len(section.files) - 1} more)" if len(section.files) > 1 else ""
    _say(f"{name}: {section.description} in {section.generate_s:.2f} s (load {section.load_s:.2f} s, "
         f"write {section.save_s:.2f} s) -> {section.files[0]}{more}")
    return section


# ---------------------------------------------------------------- report


def _rel(path: Path, out: Path) -> str:
    return Path(os.path.relpath(path, out)).as_posix()


def _machine() -> str:
    threads = torch.get_num_threads()
    cpu = platform.processor() or platform.machine()
    dev = f"CUDA {torch.cuda.get_device_name()}" if torch.cuda.is_available() else f"CPU {cpu}, {threads} threads"
    return f"{dev}; torch {torch.__version__}, python {platform.python_version()}"


def _timing_rows(sections: list[Section]) -> list[list[str]]:
    rows = []
    for s in sections:
        rows.append([s.name, s.description, f"{s.load_s:.2f}", f"{s.generate_s:.2f}", f"{s.save_s:.2f}",
                     "-" if s.bench_s is None else f"{s.bench_s:.1f}"])
    return rows


STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
    "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 6px;"
    "text-align:right}td:first-child,th:first-child,td:nth-child(2){text-align:left}"
    ".media{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}figcaption{font-size:12px;color:#555}"
    "img.pixel,video{image-rendering:pixelated}.note{color:#555;font-size:13px}"
)
TIMING_HEADER = ["model", "what", "load s", "generate s", "write s", "benchmark s"]
SPEED_QUALITY_NOTE = (
    "Latency is per batch, the median of 2 timed runs; FD and KID (lower is better) compare generated samples "
    "with held-out real data on hand-crafted features; `data (train split)` is the score of real data (the "
    "best reachable at this sample size) and `noise` that of decoded Gaussian noise. Small sample sizes keep "
    "the demo fast, so read the ranking, not the third digit; `cm-media bench` measures with more samples."
)


def _markdown(out: Path, sections: list[Section], skipped, total: float, steps: int) -> str:
    intro = (f"Generated with the bundled consistency models, {steps} network evaluation(s) per sample, "
             f"in {total:.1f} s on {_machine()}.")
    lines = ["# cm-media demo", "", intro, ""]
    lines += ["| " + " | ".join(TIMING_HEADER) + " |", "|" + "---|" * len(TIMING_HEADER)]
    lines += ["| " + " | ".join(r) + " |" for r in _timing_rows(sections)]
    lines.append("")
    for m, note in skipped:
        lines += [f"*{m}: skipped, {note}.*", ""]
    for s in sections:
        lines += [f"## {s.title}", "", f"{s.description}; model `{s.source}`.", ""]
        modality = get_modality(s.modality)
        if s.labels:  # a row per sample, the request beside it
            lines += ["| request | sample |", "|---|---|"]
            lines += [f"| `{label}` | {modality.report_markdown(_rel(p, out))} |" for label, p in zip(s.labels, s.files)]
            lines.append("")
        else:
            lines += [", ".join(modality.report_markdown(_rel(p, out)) for p in s.files), ""]
        lines += [modality.report_markdown(_rel(p, out), extra=True) for p in s.extra] + ([""] if s.extra else [])
        if s.note:
            lines += [f"*Benchmark skipped: {s.note}.*", ""]
        if s.records:
            lines += ["Speed vs quality:", "", to_markdown(s.records), f"![speed vs quality]({_rel(s.plot, out)})", ""]
    if any(s.records for s in sections):
        lines += [SPEED_QUALITY_NOTE, ""]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _markdown_table_html(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip().startswith("|")]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]
    return _html_table(cells[0], cells[2:])


def _html(out: Path, sections: list[Section], skipped, total: float, steps: int) -> str:
    intro = (f"Generated with the bundled consistency models, {steps} network evaluation(s) per sample, in "
             f"{total:.1f} s on {_machine()}.")
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>cm-media demo</title>',
        f"<style>{STYLE}</style></head><body>",
        "<h1>cm-media demo</h1>",
        f"<p>{html.escape(intro)}</p>",
        _html_table(TIMING_HEADER, _timing_rows(sections)),
    ]
    for m, note in skipped:
        parts.append(f'<p class="note">{html.escape(m)}: skipped, {html.escape(note)}.</p>')
    for s in sections:
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        parts.append(f"<p>{html.escape(s.description)}; model <code>{html.escape(s.source)}</code>.</p>")
        modality = get_modality(s.modality)
        if s.labels:  # a row per sample, the request beside it
            parts.append('<table class="requests"><thead><tr><th>request</th><th>sample</th></tr></thead><tbody>')
            parts += [f"<tr><td><code>{html.escape(label)}</code></td><td>{modality.report_html(_rel(p, out))}</td></tr>"
                      for label, p in zip(s.labels, s.files)]
            parts.append("</tbody></table>")
        else:
            parts.append('<div class="media">')
            parts += [modality.report_html(_rel(p, out)) for p in s.files]
            parts.append("</div>")
        if s.note:
            parts.append(f'<p class="note">Benchmark skipped: {html.escape(s.note)}.</p>')
        parts += [f"<p>{modality.report_html(_rel(p, out), extra=True)}</p>" for p in s.extra]
        if s.records:
            parts.append("<h3>Speed vs quality</h3>")
            parts.append(_markdown_table_html(to_markdown(s.records)))
            parts.append(f'<p><img src="{html.escape(_rel(s.plot, out), quote=True)}" alt="speed vs quality plot" '
                         'width="800"></p>')
    if any(s.records for s in sections):
        parts.append(f'<p class="note">{html.escape(SPEED_QUALITY_NOTE)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(out: Path, sections: list[Section], skipped, total: float, steps: int) -> tuple[Path, Path]:
    md, page = out / "report.md", out / "report.html"
    atomic_write_bytes(md, _markdown(out, sections, skipped, total, steps).encode())
    atomic_write_bytes(page, _html(out, sections, skipped, total, steps).encode())
    return md, page


def main(args) -> int:
    run_demo(args.out, seed=args.seed, steps=args.steps, only=parse_only(args.only), models=parse_models(args.model),
             run_bench=not args.no_bench, device=args.device, bench_samples=args.bench_samples)
    return 0
