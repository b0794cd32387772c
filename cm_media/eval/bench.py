"""Speed-versus-quality harness shared by `cm-media bench` and the scripts in benchmarks/.

For each model and step count (and EDM Heun for diffusion models) it measures NFE, latency per batch (median
of repeats after warm-up), throughput, the bare backbone forward at the same batch (the floor for one step),
real-time factor (audio) or frames per second (video), peak memory, and FD / KID +- se / precision / recall
against the run's held-out data. Each row also counts the FLOPs of that forward (`cm_media.eval.flops`, once per
model and batch, outside the timed loop) and reports the achieved GFLOP/s and its share of this machine's large
matmul peak in the same dtype (measured once per run, on first need, and printed above the table). Results are plain dict records; JSON, Markdown and a plot are views of them.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from cm_media.errors import UserError
from cm_media.eval import metrics
from cm_media.eval.flops import Peaks, forward_flops
from cm_media.registry import get_modality, modality_options, option_dest, ordered_modalities
from cm_media.runs.generator import load

QUALITY_KEYS = ("fd", "kid", "kid_se", "precision", "recall")


@dataclass
class BenchOptions:
    steps: list[int] = field(default_factory=lambda: [1, 2, 4])  # consistency step counts
    teacher_steps: int = 18  # EDM Heun steps N for diffusion models (NFE = 2N - 1)
    batch: int | None = None  # timing batch; default: the run's sample.batch_size
    num_samples: int = 256  # generated samples per configuration for the quality metrics
    max_references: int = 2000  # cap on held-out reference items
    repeats: int = 5  # timed repeats; the median is reported
    warmup: int = 1  # untimed rounds after the first (memory-measuring) call
    seed: int = 0
    device: str = "auto"
    bf16: bool | None = None  # None: the run's sample.bf16
    baselines: bool = True  # add rows for real train-split data and for decoded Gaussian noise
    shape_options: dict = field(default_factory=dict)  # e.g. {"seconds": 60}: the timed/memory shape
    peak_size: int | None = None  # side of the matmul whose GFLOP/s is the peak; None: 2048 on CPU, 8192 on GPU
    progress: bool = True


# ---------------------------------------------------------------- timing and memory


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_times(fns: list[Callable[[], object]], device: torch.device, repeats: int, warmup: int) -> list[float]:
    """Median wall-clock seconds of each fn over `repeats` rounds after `warmup` untimed rounds.

    The functions alternate within each round, so load from other processes hits them alike and their
    ratio stays meaningful on a shared machine.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(max(repeats, 1)):
        for fn, ts in zip(fns, times):
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def _proc_status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
    return int(m.group(1)) if m else None


@functools.lru_cache(maxsize=1)
def _glibc():
    """glibc as a ctypes library with mallopt and malloc_trim, or None (not Linux, or another C library)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _fix_malloc_threshold(nbytes: int = 128 * 1024) -> None:
    """Fix glibc's mmap threshold (M_MMAP_THRESHOLD) at `nbytes` and its trim threshold (M_TRIM_THRESHOLD) at twice
    that, the pair glibc's own dynamic rule keeps (setting either stops it adjusting them).

    128 KiB while memory is measured: large freed blocks go back to the OS at once, so RSS tracks live tensor
    memory. Timing runs with 32 MiB (glibc's dynamic upper limit) and a 64 MiB trim threshold, which times like
    plain library use; a fixed mmap threshold alone left the trim threshold at 128 KiB, so every free trimmed
    the heap and the next call faulted its pages back in: the bundled video and audio models timed 1.4-1.5x
    slower in the bench than in a plain process (benchmarks/README.md, "Bench timings vs plain use")."""
    libc = _glibc()
    if libc is not None:
        libc.mallopt(-3, nbytes)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 2 * nbytes)  # M_TRIM_THRESHOLD


def _release_free_heap() -> None:
    """Give the heap's free pages back to the OS (glibc malloc_trim(0): also the free chunks below live ones).

    Free memory left resident in the heap (up to the trim threshold at its top, and any free chunk pinned below a
    live one) serves the next allocations without raising RSS, so a 64 MiB tensor measured 3 MiB of peak."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)


def peak_memory(fn: Callable[[], object], device: torch.device) -> tuple[float | None, str, object]:
    """(peak extra memory in MiB while fn() runs, how it was measured, fn's result)."""
    if device.type == "cuda":
        _sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        _sync(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, "cuda max_memory_allocated", out
    _fix_malloc_threshold()
    gc.collect()  # garbage of earlier work freed while fn runs would pull RSS below the baseline and hide fn's peak
    _release_free_heap()  # and free heap memory left resident would serve fn's allocations without raising RSS
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the kernel's peak-RSS counter, to RSS now
        base = _proc_status_kib("VmHWM")
    except OSError:
        base = None
    try:
        out = fn()
    finally:
        _fix_malloc_threshold(32 * 2**20)
    if base is None:
        return None, "unavailable", out
    return max(_proc_status_kib("VmHWM") - base, 0) / 1024, "rss peak (VmHWM)", out


# ---------------------------------------------------------------- what to measure


@dataclass
class Entry:
    """One model under test."""

    label: str
    source: str
    gen: object  # cm_media.generator.Generator
    flops: dict = field(default_factory=dict)  # (batch, shape, bf16) -> FLOPs of one backbone forward


@dataclass
class Reference:
    """Held-out real data as features, shared by every model trained on the same data."""

    size: int
    hand: torch.Tensor  # [N, D]
    net: torch.Tensor | None  # [N, D'] learned features, where a shipped network applies


def _label(source: str, taken: set[str]) -> str:
    """A short unique name: the run folder, `run@step_N` for a run's checkpoint file, else the file stem."""
    p = Path(source)
    name = p.name if p.is_dir() or not p.suffix else (
        f"{p.parent.parent.name}@{p.stem}" if p.parent.name == "checkpoints" else p.stem)
    label, i = name or str(source), 2
    while label in taken:
        label, i = f"{name}-{i}", i + 1
    taken.add(label)
    return label


def load_entries(sources: list[str], device: str) -> list[Entry]:
    """Load each SOURCE, plus the EDM teacher a distilled/tuned run names (when its file exists)."""
    entries, taken, seen = [], set(), set()
    for source in sources:
        gen = load(source, device=device)
        if gen.source.resolve() in seen:
            continue
        seen.add(gen.source.resolve())
        label = _label(str(source), taken)
        entries.append(Entry(label, str(source), gen))
        teacher = getattr(gen.cfg.method, "teacher", None)
        if gen.is_consistency and teacher:
            try:
                tgen = load(teacher, device=device)
            except UserError:
                print(f"note: teacher {teacher} of {source} not found; skipping it", file=sys.stderr)
                continue
            if tgen.source.resolve() not in seen and not tgen.is_consistency:
                seen.add(tgen.source.resolve())
                entries.append(Entry(f"{label} teacher", str(teacher), tgen))
    return entries


def _dataset_batch(ds, indices: torch.Tensor) -> torch.Tensor:
    if hasattr(ds, "get_batch"):
        return ds.get_batch(indices)
    return torch.stack([ds[int(i)] for i in indices])


def _decode(gen, x: torch.Tensor, batch: int) -> torch.Tensor:
    return torch.cat([gen.codec.decode(x[i:i + batch].to(gen.device).float()).cpu() for i in range(0, len(x), batch)])


def _features(gen, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(hand-crafted [N, D], learned [N, D'] or None) features of decoded media."""
    m, cfg = gen.modality, gen.cfg
    try:
        hand = m.features(media, cfg)
    except NotImplementedError:
        raise UserError(f"modality {m.name!r} has no metric features (modalities/{m.name}/features.py)") from None
    net = m.learned_features(media, cfg)
    return hand.float().cpu(), None if net is None else net.float().cpu()


def _split_items(gen, split: str, limit: int, seed: int) -> tuple[torch.Tensor, bool]:
    """(up to `limit` items of the run's dataset split (a seeded random subset), whether they are model tensors:
    a dataset for a learned codec serves media, `encoded = False`)."""
    ds = gen.modality.build_dataset(gen.cfg, gen.codec, split)
    n = len(ds)
    if n == 0:
        raise UserError(f"the {split} split of {gen.cfg.modality} data {gen.cfg.data.dataset!r} is empty")
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:limit] if n > limit else torch.arange(n)
    return _dataset_batch(ds, idx), getattr(ds, "encoded", True) is not False


def data_items(gen, split: str, limit: int, seed: int, batch: int = 64) -> torch.Tensor:
    """Up to `limit` model tensors [N, C, *axes] from the run's dataset split (a seeded random subset)."""
    items, encoded = _split_items(gen, split, limit, seed)
    if encoded:
        return items
    with torch.no_grad():
        return torch.cat([gen.codec.encode(items[i:i + batch].to(gen.device)).float().cpu()
                          for i in range(0, len(items), batch)])


def data_media(gen, split: str, limit: int, seed: int, batch: int) -> torch.Tensor:
    """Up to `limit` real media [N, ...] of a dataset split: decoded model tensors, or a learned codec's dataset's
    media as they are (so a latent model is measured against real data, not its codec's reconstructions)."""
    items, encoded = _split_items(gen, split, limit, seed)
    return _decode(gen, items, batch) if encoded else items


def reference_for(gen, opts: BenchOptions, batch: int) -> Reference:
    media = data_media(gen, "eval", opts.max_references, opts.seed, batch)
    if len(media) < 4:
        raise UserError(f"held-out split has only {len(media)} items; metrics need at least 4")
    hand, net = _features(gen, media)
    return Reference(len(media), hand, net)


def _reference_key(gen) -> str:
    c = gen.cfg
    return json.dumps([c.modality, repr(c.data), repr(c.codec)])


def quality(ref: Reference, hand: torch.Tensor, net: torch.Tensor | None) -> dict:
    """Metrics of generated features against the reference; `net_*` keys from the learned features."""
    out = {k: v for k, v in metrics.quality_metrics(ref.hand, hand).items() if k in QUALITY_KEYS}
    if ref.net is not None and net is not None:
        out.update({f"net_{k}": v for k, v in metrics.quality_metrics(ref.net, net).items() if k in QUALITY_KEYS})
    return out


def media_quality(gen, ref: Reference, media: torch.Tensor) -> dict:
    """Quality metrics of decoded media [N, ...] from `gen` against the held-out reference (see `quality`)."""
    return quality(ref, *_features(gen, media))


# ---------------------------------------------------------------- one configuration


def _media_rates(gen, media: torch.Tensor, seconds_per_batch: float) -> dict:
    """The modality's rate columns (`Modality.media_rates`: real-time factor for audio, frames per second for video)."""
    return get_modality(gen.cfg.modality).media_rates(gen.cfg, media, seconds_per_batch)


def forward_efficiency(entry: Entry, backbone, noise, c_noise, bf16: bool, forward_s: float,
                       peaks: Peaks) -> dict:
    """FLOPs of one backbone forward (counted once per model, batch and shape), the GFLOP/s it reached in
    `forward_s` seconds and that rate's share of the matmul peak in the same dtype."""
    key = (noise.shape[0], tuple(noise.shape[1:]), bool(bf16))
    if key not in entry.flops:
        entry.flops[key] = forward_flops(backbone, noise, c_noise, bf16=bf16)  # one untimed forward
    gflop = entry.flops[key] / 1e9
    if gflop <= 0 or forward_s <= 0:
        return {"forward_gflop": gflop, "forward_gflops_per_s": None, "peak_share": None, "matmul_peak_gflops": None}
    rate = gflop / forward_s
    peak = peaks.get(noise.device, bf16)
    return {"forward_gflop": gflop, "forward_gflops_per_s": rate, "peak_share": rate / peak,
            "matmul_peak_gflops": peak}


def measure(entry: Entry, sampler: str, steps: int, opts: BenchOptions, ref: Reference,
            peaks: Peaks | None = None) -> dict:
    """Speed and quality of one (model, sampler, steps) configuration as a flat record."""
    gen = entry.gen
    dev = gen.device
    resolved = gen.options(bf16=opts.bf16, batch_size=opts.batch)  # the run's sample defaults where opts say None
    batch, bf16 = resolved.batch_size, resolved.bf16
    shape = gen.modality.sample_shape(gen.cfg, gen.codec, **opts.shape_options)  # timed shape; quality: default
    g = torch.Generator().manual_seed(opts.seed)
    noise = torch.randn((batch, *shape), generator=g).to(dev)  # [B, C, *axes]
    nfe = gen.kind.nfe(steps)  # EDM: Heun's 2N - 1

    backbone = gen.net(bf16).backbone
    c_noise = torch.full((batch,), math.log(gen.cfg.method.sigma_max) / 4, device=dev)  # [B]

    def sample():
        return gen.sample(noise, steps, g, bf16)

    @torch.no_grad()
    def forward():  # the bare network: what one step cannot go below
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=bf16):
            return backbone(noise, c_noise)

    memory_mib, memory_method, x = peak_memory(sample, dev)  # the first call, which also warms up
    latency, backbone_s = median_times([sample, forward], dev, opts.repeats, opts.warmup)
    efficiency = forward_efficiency(entry, backbone, noise, c_noise, bf16, backbone_s,
                                    peaks if peaks is not None else Peaks(opts.peak_size))
    media = gen.decode(x, bf16)  # as generate decodes (a learned codec in bf16 when sampling is)
    (decode_s,) = median_times([lambda: gen.decode(x, bf16)], dev, opts.repeats, 0)
    per_batch = latency + decode_s

    t0 = time.perf_counter()
    gen_media = gen.generate(opts.num_samples, steps=steps, seed=opts.seed + 1, batch_size=batch, bf16=bf16)
    quality_gen_s = time.perf_counter() - t0
    hand, net = _features(gen, gen_media)
    record = {
        "model": entry.label, "source": entry.source, "modality": gen.cfg.modality,
        "dataset": gen.cfg.data.dataset, "method": gen.cfg.method.name, "sampler": sampler,
        "steps": steps, "nfe": nfe, "batch": batch, "sample_shape": list(shape),
        "params": sum(p.numel() for p in backbone.parameters()), "device": str(dev), "bf16": bool(bf16),
        "latency_s": latency, "decode_s": decode_s, "samples_per_s": batch / per_batch,
        "backbone_forward_s": backbone_s,
        "latency_per_forward": latency / (nfe * backbone_s),  # 1.0 = no sampler overhead
        **efficiency,
        **_media_rates(gen, media, per_batch),
        "peak_memory_mib": memory_mib, "memory_method": memory_method,
        "num_samples": len(gen_media), "reference_size": ref.size, "quality_generation_s": quality_gen_s,
    }
    record.update(quality(ref, hand, net))
    return record


def baseline_records(entry: Entry, opts: BenchOptions, ref: Reference, batch: int) -> list[dict]:
    """Calibration rows: real train-split data (the best a model can score at this N) and decoded noise."""
    gen = entry.gen
    n = opts.num_samples
    rows = []
    train = data_media(gen, "train", n, opts.seed + 2, batch)
    shape = gen.modality.sample_shape(gen.cfg, gen.codec)
    noise = gen.cfg.method.sigma_data * torch.randn((n, *shape), generator=torch.Generator().manual_seed(opts.seed + 3))
    for name, media in (("data (train split)", train), ("noise", _decode(gen, noise, batch))):
        hand, net = _features(gen, media)
        rows.append({"model": name, "reference_of": entry.label, "source": entry.source, "modality": gen.cfg.modality,
                     "dataset": gen.cfg.data.dataset, "sampler": "baseline", "steps": 0, "nfe": 0,
                     "num_samples": len(media), "reference_size": ref.size, **quality(ref, hand, net)})
    return rows


def run_bench(sources: list[str], opts: BenchOptions | None = None) -> list[dict]:
    """Benchmark every source; returns one record per configuration (baselines last per dataset)."""
    opts = opts or BenchOptions()
    if not sources:
        raise UserError("bench needs at least one SOURCE (a run directory or checkpoint)")
    if any(s < 1 for s in opts.steps) or opts.teacher_steps < 2:
        raise UserError("--steps must be >= 1 and --teacher-steps >= 2")
    if opts.num_samples < 4 or (opts.batch is not None and opts.batch < 1) or opts.repeats < 1:
        raise UserError("--num-samples must be >= 4, --batch and --repeats >= 1")
    entries = load_entries(sources, opts.device)
    plan = [(e, "consistency", s) for e in entries if e.gen.is_consistency for s in opts.steps]
    plan += [(e, "edm-heun", opts.teacher_steps) for e in entries if not e.gen.is_consistency]
    refs: dict[str, Reference] = {}
    peaks = Peaks(opts.peak_size)  # measured on first need, once per run
    records, baselines = [], []
    bar = tqdm(plan, desc="bench", unit="config", disable=not opts.progress)
    for entry, sampler, steps in bar:
        bar.set_postfix_str(f"{entry.label} {sampler} {steps} step(s)")
        key = _reference_key(entry.gen)
        batch = opts.batch or entry.gen.cfg.sample.batch_size
        if key not in refs:
            refs[key] = reference_for(entry.gen, opts, batch)
            if opts.baselines:
                baselines += baseline_records(entry, opts, refs[key], batch)
        records.append(measure(entry, sampler, steps, opts, refs[key], peaks))
    if len(refs) > 1:  # several references (datasets or codecs): say which model's reference each row is
        for row in baselines:
            row["model"] = f"{row['model']} [{row['reference_of']}]"
    return records + baselines


# ---------------------------------------------------------------- views: JSON, Markdown, plot


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def _rate_columns() -> dict[str, str]:
    """Record key -> table header of every modality's rate columns (`Modality.rate_columns`), e.g. RTF."""
    out: dict[str, str] = {}
    for name in ordered_modalities():
        for key, header in get_modality(name).rate_columns.items():
            out.setdefault(key, header)
    return out


def _efficiency_cell(r: dict) -> str:
    """'412 (21%)': achieved forward GFLOP/s and its share of the matmul peak."""
    rate, share = r.get("forward_gflops_per_s"), r.get("peak_share")
    if rate is None:
        return "-"
    return f"{rate:.3g}" + (f" ({share * 100:.0f}%)" if share is not None else "")


def peak_header(records: list[dict]) -> str:
    """The matmul peaks the rows' shares refer to, one line ('' when no row has one)."""
    peaks = {(r["device"], "bf16" if r.get("bf16") else "fp32"): r["matmul_peak_gflops"]
             for r in records if r.get("matmul_peak_gflops")}
    if not peaks:
        return ""
    return ("matmul peak (large square matmul, same threads): "
            + ", ".join(f"{dev} {dt} {v:.4g} GFLOP/s" for (dev, dt), v in peaks.items())
            + "; fwd GFLOP/s (% peak) = counted forward FLOPs / backbone ms")


def to_markdown(records: list[dict], header: bool = False) -> str:
    """One table row per record; speed columns are empty for baseline rows. `header`: the matmul-peak line
    (`peak_header`) and a blank line above the table."""
    has_net = any("net_fd" in r for r in records)
    rates = {k: h for k, h in _rate_columns().items() if any(k in r for r in records)}  # key -> header
    cols = ["model", "sampler", "NFE", "latency ms", "samples/s", "backbone ms", "latency/(NFE x fwd)"]
    cols += list(rates.values())
    cols += ["peak MiB", "FD", "KID x1e3 (+-se)", "precision", "recall"] + (["net FD"] if has_net else [])
    cols += ["fwd GFLOP", "fwd GFLOP/s (% peak)", "N gen / ref"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    top = peak_header(records) if header else ""
    if top:
        lines = [top, "", *lines]
    def ms(r: dict, key: str) -> str:
        return _fmt(r[key] * 1e3) if r.get(key) is not None else "-"

    for r in records:
        row = [r["model"], r["sampler"], str(r["nfe"]), ms(r, "latency_s"), _fmt(r.get("samples_per_s")),
               ms(r, "backbone_forward_s"), _fmt(r.get("latency_per_forward"))]
        row += [_fmt(r.get(k)) for k in rates]
        se = r.get("kid_se")
        kid = f"{r['kid'] * 1e3:.3g}" + (f" +- {se * 1e3:.2g}" if se is not None and math.isfinite(se) else "")
        row += [_fmt(r.get("peak_memory_mib")), _fmt(r["fd"]), kid, _fmt(r["precision"], 2), _fmt(r["recall"], 2)]
        row += [_fmt(r.get("net_fd"))] if has_net else []
        row += [_fmt(r.get("forward_gflop")), _efficiency_cell(r)]
        row.append(f"{r['num_samples']} / {r['reference_size']}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def write_plot(records: list[dict], path: str | Path) -> Path:
    """Quality (FD, KID, learned-feature FD where present) against latency per batch on a log axis,
    one curve per model labelled with NFE; baseline rows (real data, noise) as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("fd", "FD, hand-crafted features"), ("kid", "KID, hand-crafted features")]
    if any(r.get("net_fd") is not None for r in records):
        panels.append(("net_fd", "FD, learned features"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
    models = [r for r in records if r["sampler"] != "baseline"]
    for ax, (key, name) in zip(axes[0], panels):
        values = [r[key] for r in records if r.get(key) is not None]
        for label in dict.fromkeys(r["model"] for r in models):
            rs = sorted((r for r in models if r["model"] == label and r.get(key) is not None),
                        key=lambda r: r["latency_s"])
            xs, ys = [r["latency_s"] * 1e3 for r in rs], [r[key] for r in rs]
            err = None
            if key == "kid":
                err = [r["kid_se"] if r.get("kid_se") is not None and math.isfinite(r["kid_se"]) else 0 for r in rs]
            line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=label)
            for x, y, r in zip(xs, ys, rs):
                ax.annotate(str(r["nfe"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8,
                            color=line[0].get_color())
        for i, r in enumerate(r for r in records if r["sampler"] == "baseline" and r.get(key) is not None):
            ax.axhline(r[key], ls="--", lw=1, color=f"C{7 + i % 3}", label=r["model"])
        ax.set_xscale("log")
        if values and min(values) > 0:
            ax.set_yscale("log")
        elif values:
            ax.set_yscale("symlog", linthresh=max(min(abs(v) for v in values if v != 0) if any(values) else 1, 1e-12))
        ax.set_xlabel("latency per batch, ms (log); point labels: NFE")
        ax.set_ylabel(name + " (lower is better)")
    axes[0][0].legend(fontsize=8)
    if models:
        fig.suptitle(f"cm-media bench: quality vs latency ({models[0]['modality']}, batch {models[0]['batch']}, "
                     f"{models[0]['device']})")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_outputs(records: list[dict], json_path=None, markdown_path=None, plot_path=None) -> list[Path]:
    """Write the requested views of the same records; returns the written paths."""
    written = []
    if json_path:
        p = Path(json_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        clean = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in r.items()} for r in records]
        p.write_text(json.dumps(clean, indent=2, default=str) + "\n")
        written.append(p)
    if markdown_path:
        p = Path(markdown_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(to_markdown(records))
        written.append(p)
    if plot_path:
        written.append(write_plot(records, plot_path))
    return written


def parse_steps(text: str) -> list[int]:
    """'1,2,4' -> [1, 2, 4]; a UserError naming --steps otherwise."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--steps must be comma-separated integers, got {text!r}") from None
    if not steps or any(s < 1 for s in steps):
        raise UserError(f"--steps must list integers >= 1, got {text!r}")
    return steps


def shape_options(args) -> dict:
    """The parsed values of the modalities' bench options (`Modality.bench_options`, e.g. --seconds) that were given."""
    dests = [option_dest(flag, kwargs) for flag, kwargs in modality_options("bench_options")]
    return {d: getattr(args, d) for d in dests if getattr(args, d, None) is not None}


def main(args) -> int:
    """`cm-media bench` after argument parsing: run, print the table, write the requested files."""
    opts = BenchOptions(
        steps=parse_steps(args.steps), teacher_steps=args.teacher_steps, batch=args.batch,
        num_samples=args.num_samples, repeats=args.repeats, seed=args.seed, device=args.device, bf16=args.bf16,
        baselines=not args.no_baselines, progress=not args.no_progress,
        shape_options=shape_options(args),
    )
    records = run_bench(args.sources, opts)
    print(to_markdown(records, header=True), end="")
    for p in write_outputs(records, args.json, args.markdown, args.plot):
        print(f"wrote {p}")
    return 0
