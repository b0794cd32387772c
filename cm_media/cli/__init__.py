"""`cm-media` command line: train, generate, edit, bench, export, demo, info, ui. User mistakes print one `error: ...` line and exit 2.

Importing this module applies the CPU thread policy (`cm_media.threads`) for the commands that run torch work,
before anything here imports torch: torch threads = the usable cores other processes leave idle, unless the
user chose (--threads, CM_MEDIA_THREADS, OMP_NUM_THREADS / MKL_NUM_THREADS / OMP_WAIT_POLICY)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

from cm_media import checks, files, threads
from cm_media.errors import UserError

threads.apply_cli_policy()  # first, before torch loads: its OpenMP runtime reads OMP_NUM_THREADS once


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit status 2, no usage dump
        raise UserError(f"{self.prog}: {message}")


def _modality_options(parser: argparse.ArgumentParser) -> list[str]:
    """Add every installed modality's generate options (e.g. --seconds, --frames); returns their dest names."""
    from cm_media.registry import available_modalities, get_modality

    dests, seen = [], set()
    for name in available_modalities():
        for flag, kwargs in get_modality(name).generate_options:
            if flag in seen:
                continue
            seen.add(flag)
            action = parser.add_argument(flag, default=None, **kwargs)
            dests.append(action.dest)
    return dests


def _condition_options(parser: argparse.ArgumentParser) -> None:
    """--cond / --class / --cfg-scale: what to generate, for a conditional model (see `cm-media info SOURCE`)."""
    parser.add_argument("--cond", action="append", default=[], metavar="NAME=VALUE",
                        help="ask for a condition by name, e.g. --cond class=7 (a class name or index; a comma list "
                             "like 7,3 cycles over the samples); repeatable")
    parser.add_argument("--class", dest="class_", default=None, metavar="VALUE",
                        help="shorthand for --cond NAME=VALUE on a model with one class condition")
    parser.add_argument("--cfg-scale", type=float, default=None, metavar="W",
                        help="classifier-free guidance scale of a conditional model: 1 unguided, 0 unconditional, "
                             ">1 sharper (two evaluations per step, one for a guided-distilled model)")
    parser.add_argument("--guide", default=None, metavar="NAME[,NAME]",
                        help="the conditions guidance pushes towards, the others given as asked in both evaluations "
                             "(default: the model's sample.guide, else all), e.g. --guide instrument")


def parse_guide(args, gen) -> list[str] | None:
    """--guide NAME[,NAME] as the condition names guidance pushes towards (checked against the model's conditions);
    None when not given (the model's `sample.guide`)."""
    if getattr(args, "guide", None) is None:
        return None
    from cm_media.conditions import guided_names

    names = [v.strip() for v in args.guide.split(",") if v.strip()]
    if not names:
        raise UserError("--guide expects condition names, e.g. --guide instrument")
    return guided_names(gen.conditions, names)


def parse_conditions(args, gen) -> dict[str, str]:
    """The --cond / --class requests as {name: value}; a one-line error for a malformed one."""
    request: dict[str, str] = {}
    for item in args.cond:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise UserError(f"--cond expects NAME=VALUE, got {item!r}")
        if name.strip() in request:
            raise UserError(f"--cond names condition {name.strip()!r} twice; give one value (or a comma list)")
        request[name.strip()] = value.strip()
    if args.class_ is not None:
        classes = [c for c in gen.conditions if c.kind == "class"]
        if len(classes) != 1:
            names = ", ".join(c.name for c in classes) or "none"
            raise UserError(f"--class needs a model with exactly one class condition (this one has: {names}); "
                            "use --cond NAME=VALUE")
        if classes[0].name in request:
            raise UserError(f"--class and --cond {classes[0].name}=... both ask for condition "
                            f"{classes[0].name!r}; give one of them")
        request[classes[0].name] = args.class_
    return request


def build_parser() -> tuple[argparse.ArgumentParser, list[str]]:
    p = _Parser(prog="cm-media", description="Consistency models for audio, video and images.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    t = sub.add_parser("train", help="train a model from a YAML run config")
    t.add_argument("config", help="YAML run config (see configs/)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.steps=500 (repeatable)")
    t.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's last checkpoint")
    t.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    g = sub.add_parser("generate", help="generate media with a trained or bundled model")
    g.add_argument("source", help="run directory, checkpoint file, or bundled model name (image, audio, video)")
    g.add_argument("-n", type=int, default=None, help="number of samples")
    g.add_argument("--steps", type=int, default=None, help="network evaluations (consistency) or EDM steps")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--out", default=None, help="output file or folder")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    g.add_argument("--interpolate", action="store_true",
                   help="the -n samples walk the slerp path from the noise of --seed to that of --seed + 1")
    _condition_options(g)
    dests = _modality_options(g)

    from cm_media.registry import modality_options, ordered_modalities

    b = sub.add_parser("bench", help="speed vs quality: latency, throughput, memory, FD/KID/precision/recall")
    b.add_argument("sources", nargs="+", metavar="SOURCE",
                   help="run directories or checkpoint files (with --train: training configs)")
    b.add_argument("--train", action="store_true",
                   help="training throughput of each config instead: samples/s, step FLOPs, share of the matmul "
                        "peak, time per part of the step (data, encode, target, teacher, forward, backward, ...)")
    b.add_argument("--train-steps", type=int, default=2, metavar="N", help="--train: timed steps per repeat")
    b.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="--train: a config override, as for train (repeatable)")
    b.add_argument("--steps", default="1,2,4", help="consistency step counts, comma-separated (default 1,2,4)")
    b.add_argument("--teacher-steps", type=int, default=18, help="EDM Heun steps N for diffusion models (NFE 2N-1)")
    b.add_argument("--batch", type=int, default=None, help="batch size for timing and sampling")
    b.add_argument("--num-samples", type=int, default=256, help="generated samples per configuration for metrics")
    b.add_argument("--repeats", type=int, default=5, help="timed repeats per configuration (median reported)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--device", default="auto", help="auto, cpu or cuda")
    b.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None, help="bf16 autocast")
    for flag, kwargs in modality_options("bench_options"):  # e.g. audio --seconds, video --frames
        b.add_argument(flag, default=None, **kwargs)
    b.add_argument("--no-baselines", action="store_true", help="skip the real-data and noise calibration rows")
    b.add_argument("--json", default=None, help="write one JSON record per configuration here")
    b.add_argument("--markdown", default=None, help="write the Markdown table here")
    b.add_argument("--plot", default=None, help="write the quality-vs-latency plot (PNG) here")
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    e = sub.add_parser("edit", help="zero-shot editing: regenerate a masked region of a file, keep the rest")
    e.add_argument("source", help="run directory, checkpoint file, or bundled model name")
    e.add_argument("--input", required=True, help="the media file to edit")
    e.add_argument("--mask", required=True,
                   help="region to regenerate: image box:x0,y0,x1,y1 or left/right/top/bottom/center; "
                        "audio a time range START:END in seconds; video frame indices like 3,4,5 or 3-5")
    e.add_argument("--steps", type=int, default=None, help="network evaluations (default: max(2, sample.steps))")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--from-guess", type=float, nargs="?", const=0.0, default=None, metavar="SIGMA",
                   help="start from the modality's first guess (video: a cross-fade of the kept frames) instead of "
                        "noise: noised to SIGMA (e.g. 2) and refined in one step, or along --sigmas when no SIGMA")
    e.add_argument("--sigmas", default=None, metavar="S1,S2,...",
                   help="noise level of each step, e.g. 3,3,2,2,1,1,0.5 (instead of --steps' default levels)")
    e.add_argument("--guidance", type=float, default=0.0, metavar="W",
                   help="reconstruction guidance weight (Ho et al. 2022): keeps the regenerated region consistent "
                        "with the kept one at the cost of a backward pass per step; video interpolation: 8")
    e.add_argument("--out", default=None, help="output file")
    e.add_argument("--device", default="auto", help="auto, cpu or cuda")
    _condition_options(e)

    x = sub.add_parser("export", help="write a run's EMA weights, config and training command to a small model folder")
    x.add_argument("source", help="run directory or checkpoint file")
    x.add_argument("--out", required=True, help="folder for model.safetensors, config.yaml and README.md")
    x.add_argument("--dtype", default="bf16", choices=["bf16", "float32"],
                   help="storage precision of the weights (bf16 halves the size; loading casts to float32)")
    x.add_argument("--command", dest="train_command", default=None,
                   help="the exact training command line to record (default: train on the exported config.yaml)")
    x.add_argument("--set", dest="overrides", action="append", default=[], metavar="sample.KEY=VALUE",
                   help="change a generation default in the exported config, e.g. --set sample.bf16=true")
    x.add_argument("--codec", default=None, metavar="CODEC",
                   help="replace a latent model's codec by a codec run or export with the same encoder (one trained "
                        "from it with method.train_part decoder or temporal), e.g. a decoder with temporal layers")

    from cm_media.cli.demo import bench_samples_help

    shown = ordered_modalities()
    d = sub.add_parser("demo", help="generate media with each modality's bundled model and write a report")
    d.add_argument("--out", default="demo", help="folder for the media and report.html / report.md (default: demo)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--steps", type=int, default=1, help="network evaluations per sample (default 1)")
    d.add_argument("--only", default=None, metavar="MODALITIES",
                   help=f"comma-separated subset of {','.join(shown)} (default: every bundled model)")
    d.add_argument("--model", action="append", default=[], metavar="MODALITY=SOURCE",
                   help="use this run or checkpoint instead of a bundled model, e.g. "
                        f"--model {shown[0] if shown else 'image'}=runs/NAME (repeatable)")
    d.add_argument("--bench-samples", type=int, default=None, metavar="N",
                   help=f"generated samples per configuration for the quality metrics (default: {bench_samples_help()})")
    d.add_argument("--no-bench", action="store_true", help="skip the speed-vs-quality table and plot")
    d.add_argument("--device", default="auto", help="auto, cpu or cuda")

    u = sub.add_parser("ui", help="a local web app (Gradio) to generate, edit and compare; pip install -e \".[ui]\"")
    u.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="run directories, checkpoints or exports to serve besides the bundled models")
    u.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    u.add_argument("--port", type=int, default=7860, help="port (default 7860; 0: any free port)")
    u.add_argument("--no-bundled", action="store_true", help="serve only the SOURCEs, not the bundled models")
    u.add_argument("--concurrency", type=int, default=None, metavar="N",
                   help="requests computed at once (default: the usable cores, one torch thread each)")
    u.add_argument("--preload", action="store_true", help="load every model before serving (default: on first use)")
    u.add_argument("--device", default="auto", help="auto, cpu or cuda")

    i = sub.add_parser("info", help="versions, devices, attention backend and modalities; or what a model can be asked for")
    i.add_argument("source", nargs="?", default=None,
                   help="a run, checkpoint, export or bundled model: list its conditions and generation defaults")
    i.add_argument("--json", action="store_true", help="with SOURCE: print {\"conditions\": {name: values}} as JSON")
    for cmd in (t, g, b, e, d, u):
        cmd.add_argument("--threads", type=int, default=None, metavar="N",
                         help="CPU threads for torch (default: the usable cores other processes leave idle, "
                              "measured at start; also CM_MEDIA_THREADS=auto|N; train: overrides train.threads)")
    return p, dests


def cmd_train(args) -> int:
    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    t0 = time.perf_counter()
    last = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun only rank 0 reports and writes samples
        return 0
    done = last is not None and int(last.stem.split("_")[-1]) >= cfg.train.steps
    if not done:
        print(f"stopped before step {cfg.train.steps}; last checkpoint: {last}. Continue with the same command and --resume")
        return 130
    print(f"trained {cfg.train.steps} steps in {time.perf_counter() - t0:.1f} s; checkpoint: {last}")
    if cfg.train.samples == 0:  # train.samples: 0 writes no sample files
        return 0
    gen = _load(out)
    for steps in (1, 2):
        paths = _write(gen, gen.generate_batches(cfg.train.samples, steps=steps, seed=cfg.train.seed),
                       out / "samples" / f"samples_{steps}step{gen.modality.default_suffix}", cfg.train.samples, {})
        print(f"{steps}-step samples: {paths[0]}" + (f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""))
    return 0


def _write(gen, batches, out: Path, n: int, options: dict) -> list[Path]:
    """Stream decoded batches into the modality's writer for `out` (opened, so checked, before the first batch)."""
    with gen.open_writer(out, n, **options) as writer:
        for media in batches:
            writer.add(media)
        return writer.close()


def _option_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_generate_args(args, dests) -> None:
    """The values of `generate`, checked before the model is loaded (ranges that need the model come later)."""
    if args.n is not None:
        checks.count(args.n)
    checks.seed(args.seed)
    if args.steps is not None:
        checks.steps(args.steps)
    if args.batch_size is not None:
        checks.batch_size(args.batch_size)
    if args.cfg_scale is not None:
        checks.number(args.cfg_scale, "--cfg-scale", 0)
    for dest in dests:  # the modalities' options (--seconds, --frames, --fps, --scale, --peak, ...)
        value = getattr(args, dest)
        if isinstance(value, float):
            checks.number(value, _option_name(dest), 0, lo_open=True)
        elif isinstance(value, int) and not isinstance(value, bool):
            checks.integer(value, _option_name(dest), 1)


def _load(source, device="auto"):
    from cm_media.runs.generator import load

    return load(source, device=device)


def cmd_generate(args, dests) -> int:
    """Samples are written batch by batch as they are made: memory does not grow with -n."""
    options = {d: getattr(args, d) for d in dests if getattr(args, d) is not None}
    n = 16 if args.n is None else args.n
    _check_generate_args(args, dests)
    gen = _load(args.source, args.device)
    out = Path(args.out) if args.out else Path("outputs") / f"{gen.cfg.modality}{gen.modality.default_suffix}"
    t0 = time.perf_counter()
    cond, guide = parse_conditions(args, gen), parse_guide(args, gen)
    for name in [d for d in options if d in gen.condition_spec()]:  # a modality option naming a condition
        if name in cond:  # (video --first-frame FILE: the first_frame condition)
            raise UserError(f"{_option_name(name)} and --cond {name}=... both ask for condition {name!r}; give one")
        cond[name] = options.pop(name)
    if args.interpolate:
        batches = gen.interpolate_batches(n, seed_a=args.seed, seed_b=args.seed + 1, steps=args.steps, bf16=args.bf16,
                                          cond=cond, cfg_scale=args.cfg_scale, batch_size=args.batch_size,
                                          guide=guide, **options)
    else:
        batches = gen.generate_batches(n, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                                       bf16=args.bf16, cond=cond, cfg_scale=args.cfg_scale, guide=guide, **options)
    paths = _write(gen, batches, out, n, options)  # the writer checks `out` before the first batch is made
    elapsed = time.perf_counter() - t0
    steps = gen.options(steps=args.steps).steps
    print(f"generated {n} sample(s) with {steps} step(s) in {elapsed:.2f} s -> {paths[0]}"
          + (f" (+{len(paths) - 1} more)" if len(paths) > 1 else ""))
    return 0


def _parse_sigmas(text: str | None) -> list[float] | None:
    """--sigmas '3,3,2,1' -> [3.0, 3.0, 2.0, 1.0]: finite positive noise levels, none rising."""
    if text is None:
        return None
    try:
        sigmas = [float(v) for v in text.split(",")]
    except ValueError:
        raise UserError(f"--sigmas takes comma-separated noise levels like 3,2,1,0.5; got {text!r}") from None
    if len(sigmas) > checks.MAX_STEPS:
        raise UserError(f"--sigmas lists {len(sigmas)} noise levels; at most {checks.MAX_STEPS}")
    if not sigmas or not all(math.isfinite(v) and v > 0 for v in sigmas) or any(b > a for a, b in zip(sigmas, sigmas[1:])):
        raise UserError(f"--sigmas must be finite positive noise levels that never rise, got {text!r}")
    return sigmas


def cmd_edit(args) -> int:
    path = Path(args.input)
    if not path.is_file():
        raise UserError(f"input file not found: {path}")
    checks.seed(args.seed)
    if args.steps is not None:
        checks.steps(args.steps)
    checks.number(args.guidance, "--guidance", 0, 1e6)
    if args.from_guess is not None:
        checks.number(args.from_guess, "--from-guess", 0)
    if args.cfg_scale is not None:
        checks.number(args.cfg_scale, "--cfg-scale", 0)
    gen = _load(args.source, args.device)
    out = Path(args.out) if args.out else path.with_name(f"{path.stem}_edited{gen.modality.default_suffix}")
    try:
        media = gen.modality.read(path, gen.cfg, gen.codec)  # [1, ...]
    except NotImplementedError as exc:
        raise UserError(str(exc)) from None
    shape = tuple(gen.codec.encode(media).shape)
    mask = gen.modality.edit_mask(args.mask, shape, gen.cfg)
    init, sigmas = None, _parse_sigmas(args.sigmas)
    if args.from_guess is not None and args.from_guess > gen.cfg.method.sigma_max:
        raise UserError(f"--from-guess {args.from_guess:g} is above the model's highest noise level "
                        f"{gen.cfg.method.sigma_max:g}")
    if args.from_guess is not None:
        if args.from_guess and sigmas:
            raise UserError("--from-guess SIGMA and --sigmas both set the noise levels: give one of them")
        if not (args.from_guess > 0 or sigmas):
            raise UserError("--from-guess needs a noise level > 0 (e.g. --from-guess 2) or --sigmas")
        try:
            init = gen.modality.edit_guess(media, mask, gen.cfg)
        except NotImplementedError as exc:
            raise UserError(str(exc)) from None
        sigmas = sigmas or [args.from_guess]
    t0 = time.perf_counter()
    with gen.open_writer(out, 1) as writer:  # checks `out` before the edit runs
        edited = gen.edit(media, mask, steps=args.steps, seed=args.seed, init=init, sigmas=sigmas,
                          guidance=args.guidance, cond=parse_conditions(args, gen), cfg_scale=args.cfg_scale,
                          guide=parse_guide(args, gen))
        writer.add(edited)
        paths = writer.close()
    elapsed = time.perf_counter() - t0
    share = mask.float().mean().item()
    print(f"regenerated {share:.0%} of {path.name} in {elapsed:.2f} s -> {paths[0]}")
    return 0


def cmd_bench(args) -> int:
    from cm_media.eval import bench

    checks.seed(args.seed)
    for option in ("json", "markdown", "plot"):  # checked before the (long) benchmark, not after it
        if getattr(args, option):
            files.output_file(getattr(args, option), f"--{option}")
    if args.train:
        return _bench_train(args)
    if args.overrides:
        raise UserError("--set is for bench --train (a training config's overrides)")
    return bench.main(args)


def _bench_train(args) -> int:
    """`cm-media bench --train CONFIG ...`: each recipe's training step as `train` runs it, timed."""
    from cm_media.eval import train_speed
    from cm_media.runs.config import load_config
    from cm_media.runs.model import resolve_device

    checks.integer(args.train_steps, "--train-steps", 1, 10_000)
    checks.integer(args.repeats, "--repeats", 1, 1000)
    if args.batch is not None:
        checks.integer(args.batch, "--batch", 1, 1_000_000)
    if args.plot:
        raise UserError("--plot is for the sampling bench; bench --train writes --json and --markdown")
    configs = [load_config(path, args.overrides) for path in args.sources]  # every config checked before timing
    device = str(resolve_device(args.device))
    records = []
    for path, cfg in zip(args.sources, configs):
        if args.bf16 is not None:
            cfg.train.bf16 = args.bf16
        records.append(train_speed.measure(cfg, Path(path).stem, args.batch, args.train_steps, args.repeats, device))
        print(json.dumps({k: v for k, v in records[-1].items() if k != "losses"}, default=str), flush=True)
    table = train_speed.markdown(records)
    print(table, end="")
    for path, text in ((args.json, json.dumps(records, indent=1) + "\n"), (args.markdown, table)):
        if path:
            with files.writing(path):
                Path(path).write_text(text)
            print(f"wrote {path}")
    return 0


def cmd_export(args) -> int:
    from cm_media.runs import export

    return export.main(args)


def cmd_demo(args) -> int:
    from cm_media.cli import demo

    checks.seed(args.seed)
    checks.steps(args.steps)
    if args.bench_samples is not None:
        checks.integer(args.bench_samples, "--bench-samples", 4, 100_000)
    files.output_folder(args.out)
    return demo.main(args)


def cmd_ui(args) -> int:
    """Serve the web app until Ctrl-C (cm_media/ui): bundled models and the SOURCEs, 127.0.0.1 unless --host."""
    port = checks.integer(args.port, "--port", 0, 65535)
    concurrency = None if args.concurrency is None else checks.integer(args.concurrency, "--concurrency", 1, 64)
    if args.no_bundled and not args.sources:
        raise UserError("--no-bundled needs at least one SOURCE to serve")
    if args.threads is None and threads.ENV not in os.environ and threads.user_setting(os.environ) is None:
        threads.apply_policy(1)  # before torch loads: one thread per request, requests run side by side
    import importlib.util

    if importlib.util.find_spec("gradio") is None:
        raise UserError('cm-media ui needs the ui extra (gradio is not installed): pip install -e ".[ui]"')
    from cm_media.ui import serve

    serve(args.sources, host=args.host, port=port, bundled=not args.no_bundled, concurrency=concurrency,
          device=args.device, preload=args.preload)
    return 0


def cmd_info_source(args) -> int:
    """What a model can be asked for: its conditions (and, without --json, its generation defaults)."""
    gen = _load(args.source, "cpu")
    spec = gen.condition_spec()
    if args.json:
        print(json.dumps({"conditions": spec, "guided_student": gen.guided_student}))
        return 0
    c = gen.cfg
    print(f"{args.source}: {c.modality} model, method {c.method.name}, data {c.data.dataset}, {gen.source}")
    if not spec:
        print("conditions: none (unconditional)")
    for name, values in spec.items():
        shown = ", ".join(values) if isinstance(values, list) else values
        print(f"condition {name}: {shown}  (--cond {name}=VALUE)")
    scale = "takes --cfg-scale as an input (one evaluation per step)" if gen.guided_student else \
        (f"default {c.sample.cfg_scale}" if c.sample.cfg_scale is not None else "default 1 (unguided)")
    if spec and c.sample.guide and not gen.guided_student:
        scale += f", towards {', '.join(c.sample.guide)} (--guide)"
    if spec or gen.guided_student:
        print(f"classifier-free guidance: {scale}")
    print(f"generation defaults: {c.sample.steps} step(s), bf16 {'on' if c.sample.bf16 else 'off'}, "
          f"batch {c.sample.batch_size}")
    return 0


def cmd_info() -> int:
    import platform

    import torch

    from cm_media import __version__
    from cm_media.nn.attention import resolve_backend
    from cm_media.registry import MODALITIES, get_modality, ordered_modalities

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"cm-media {__version__}  python {platform.python_version()}  torch {torch.__version__}")
    print(f"device: {device}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"))
    print(f"attention backend (auto): {resolve_backend('auto', device)}")
    installed = ordered_modalities()
    for name in installed + sorted(set(MODALITIES) - set(installed)):
        if name not in installed:
            print(f"modality {name}: not installed")
            continue
        m = get_modality(name)
        bundled = ", ".join(m.bundled_models()) or "none"
        print(f"modality {name}: presets {', '.join(sorted(m.backbone_presets))}; bundled models: {bundled}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    import logging

    logging.basicConfig(level=logging.INFO, format="%(message)s")  # one-line notices: backend choice, skipped files
    try:
        parser, dests = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "threads", None) is not None:
            threads.apply_policy(checks.integer(args.threads, "--threads", 1))  # also for main() with its own argv
            if args.command == "train":
                args.overrides = [*args.overrides, f"train.threads={args.threads}"]
        commands = {"train": cmd_train, "generate": lambda a: cmd_generate(a, dests), "bench": cmd_bench,
                    "edit": cmd_edit, "export": cmd_export, "demo": cmd_demo, "ui": cmd_ui,
                    "info": lambda a: cmd_info_source(a) if a.source else cmd_info()}
        if args.command not in commands:
            parser.print_help()
            return 2
        return commands[args.command](args)
    except UserError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, always
        return 2
    except OSError as exc:  # a file or disk problem nothing above named (full disk, permissions)
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; ask for less (-n, --batch-size, --seconds, --frames)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130

