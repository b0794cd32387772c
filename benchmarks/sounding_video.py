"""Issue 18: sounding video at one step: synchronization, pitch-digit agreement, FD per stream and speed.

    # quality: real held-out clips, real clips with their soundtracks swapped (no sync), the model's one-step
    # clips, and the model's clips with soundtracks swapped between clips of the same digit (its no-sync baseline)
    python benchmarks/sounding_video.py quality sounding-digits --n 200 [--cfg-scale 1]
    # edit: sound made for real held-out clips (their true bounces), against the same sounds swapped; --motion
    # adds motion made for real soundtracks (edit --mask video)
    python benchmarks/sounding_video.py edit sounding-digits --n 200 [--motion] [--one-step]
    # teacher: a consistency run's deterministic K-step sampler (method kd's teacher: re-noise drawn from the
    # starting noise), sync only, for each K
    python benchmarks/sounding_video.py teacher runs/sounding_digits_rebalance_ict --steps 3 6 8 12 --n 200 \
        [--sigma-lists 20,4.862,2.825,1.568,0.825,0.406,0.185,0.076 ...]
    # alternate: joint one-step clips, then each stream regenerated from the other in turn (v1: motion for the
    # soundtrack in one step, a1: sound for the frames), sync after each edit
    python benchmarks/sounding_video.py alternate sounding-digits --edits v1 a1 v1 a1 --n 200
    # offsets: where the onsets fall, in frames from the nearest wall bounce, for real clips, the joint one step,
    # sound for real clips and sound for the joint step's own frames (--sound-from: another run makes the sound)
    python benchmarks/sounding_video.py offsets sounding-digits --n 200 [--sound-from runs/sounding_digits_rebalance_ict]
    # speed: one-step clips per second including both decodes (video pixels and the soundtrack's iSTFT), bf16
    python benchmarks/sounding_video.py speed sounding-digits --batch 32 --threads 2

Sync (modalities/av/sync.py): onsets detected in the soundtrack (librosa) against bounces detected from the
digit's tracked position in the frames; an onset counts when a bounce is within one frame (0.125 s).
Pitch: the share of clips whose soundtrack's pitch is within half a semitone of the requested digit's note.
FD per stream: the video and audio modalities' hand-crafted features, against real held-out clips, with the real
training clips' FD beside it as the floor. Prints JSON lines; --json writes them all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def fail(message: str) -> None:
    """A bad option: one `error:` line and exit status 2, as the CLI and argparse give."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def same_digit_swap(digits: torch.Tensor) -> torch.Tensor:
    """An order that gives every clip the soundtrack of another clip with the same digit (a cyclic shift within
    each digit's clips; a digit with one clip keeps its own)."""
    order = torch.arange(len(digits))
    for d in digits.unique():
        idx = torch.nonzero(digits == d).squeeze(1)
        order[idx] = idx.roll(1)
    return order


def row(name: str, video: torch.Tensor, audio: torch.Tensor, digits: torch.Tensor, cfg, ref=None,
        pitch: bool = True) -> dict:
    """Sync and pitch scores of clips (video [B, 1, T, H, W], audio [B, 1, N]) and, with `ref` = (video features,
    audio features) of real held-out clips, the FD of each stream against them. Pitch is scored for note clips
    unless `pitch` is False (pYIN is slow; a swapped soundtrack has its clip's pitch)."""
    from cm_media.eval.metrics import frechet_distance
    from modalities.audio.features import features as audio_features
    from modalities.av.sounding_digits import DIGIT_MIDI
    from modalities.av.sync import av_sync_report
    from modalities.video.features import features as video_features

    c = cfg.codec
    out = {"rows": name, "clips": len(digits),
           **av_sync_report(video, audio, digits, c.fps, c.sample_rate, DIGIT_MIDI,
                            pitch=pitch and cfg.data.sound == "note")}
    if ref is not None:
        out["fd_video"] = frechet_distance(video_features(video, cfg), ref[0])
        out["fd_audio"] = frechet_distance(audio_features(audio, cfg), ref[1])
    return out


def cmd_quality(args) -> list[dict]:
    import cm_media
    from modalities.audio.features import features as audio_features
    from modalities.av.sounding_digits import SoundingDigits
    from modalities.video.features import features as video_features

    torch.set_num_threads(args.threads)
    gen = cm_media.load(args.source)
    cfg = gen.cfg
    n = args.n
    sound = {"sound": cfg.data.sound, "small_words": cfg.data.small_words}
    test = SoundingDigits("test", n, seed=cfg.data.seed, **sound)
    real_v, real_a = test.get_clips(range(n))
    real_d = test.labels
    train = SoundingDigits("train", n, seed=cfg.data.seed, **sound)
    train_v, train_a = train.get_clips(range(n))
    ref = (video_features(real_v, cfg), audio_features(real_a, cfg))
    rows = [row("real held-out clips (FD: train clips vs held-out)", train_v, train_a, train.labels, cfg, ref)]
    rows[0].update({k: v for k, v in row("", real_v, real_a, real_d, cfg).items() if k not in ("rows", "clips")})
    swap = same_digit_swap(real_d)
    rows.append(row("real clips, soundtracks swapped within a digit (no sync)", real_v, real_a[swap], real_d, cfg))
    digits = [str(d) for d in real_d.tolist()]  # ask for the held-out clips' digits, in their proportions
    media = gen.generate(n, steps=args.steps, seed=args.seed, cond={"digit": digits}, cfg_scale=args.cfg_scale,
                         batch_size=32)
    from modalities.av.codec import layout_of, split_media

    video, audio = split_media(media, layout_of(cfg.codec))
    label = f"{args.source}, {args.steps} step(s)" + (f", cfg {args.cfg_scale:g}" if args.cfg_scale else "")
    rows.append(row(label, video, audio, real_d, cfg, ref))
    rows.append(row(f"{label}, soundtracks swapped within a digit (no sync)", video, audio[swap], real_d, cfg, ref))
    return rows


def held_out(args):
    """The model of `args.source` (torch at args.threads) and args.n held-out clips of its data: (gen, data)."""
    import cm_media
    from modalities.av.sounding_digits import SoundingDigits

    torch.set_num_threads(args.threads)
    gen = cm_media.load(args.source)
    d = gen.cfg.data
    return gen, SoundingDigits("test", args.n, seed=d.seed, sound=d.sound, small_words=d.small_words)


def edit_in_chunks(gen, media: torch.Tensor, mask: torch.Tensor, digits: torch.Tensor, steps: int, seed: int,
                   sigmas: list[float] | None = None) -> torch.Tensor:
    """gen.edit over media [B, 1, D] 50 clips at a time, each asking for its clip's digit."""
    return torch.cat([gen.edit(media[i:i + 50], mask, steps=steps, sigmas=sigmas, seed=seed,
                               cond={"digit": [str(d) for d in digits[i:i + 50].tolist()]})
                      for i in range(0, len(media), 50)])


def cmd_edit(args) -> list[dict]:
    """Sound for real held-out clips (`edit --mask audio` on their silenced mp4 content): onsets against the real
    bounces, which the frames show without a generated digit's wobble; the same soundtracks swapped between
    clips of a digit as the no-sync baseline. A model that ties sound to motion scores far above the baseline."""
    from modalities.av.codec import layout_of, pack_media, split_media

    gen, data = held_out(args)
    cfg, n = gen.cfg, args.n
    video, audio = data.get_clips(range(n))
    digits = data.labels
    media, mask = pack_media(video, audio * 0), gen.modality.edit_mask("audio", None, cfg)
    swap, rows = same_digit_swap(digits), []
    plans = {"1 step": (1, None), "2 steps": (2, None),
             "6 steps from sigma 20 to 0.5": (6, [20.0, 10.0, 5.0, 2.0, 1.0, 0.5])}
    for label, (steps, sigmas) in plans.items():
        if args.one_step and steps > 1:
            continue
        _, sound = split_media(edit_in_chunks(gen, media, mask, digits, steps, args.seed, sigmas), layout_of(cfg.codec))
        name = f"{args.source}: sound for real clips, {label}"
        rows.append(row(name, video, sound, digits, cfg))
        rows.append(row(f"{name}, soundtracks swapped (no sync)", video, sound[swap], digits, cfg, pitch=False))
    if args.motion:  # the other direction: motion for the real soundtracks (`edit --mask video`)
        still = pack_media(video * 0, audio)
        vmask = gen.modality.edit_mask("video", None, cfg)
        for label, steps in ({"1 step": 1} if args.one_step else {"1 step": 1, "2 steps": 2}).items():
            moved, _ = split_media(edit_in_chunks(gen, still, vmask, digits, steps, args.seed), layout_of(cfg.codec))
            name = f"{args.source}: motion for real soundtracks, {label}"
            rows.append(row(name, moved, audio, digits, cfg, pitch=False))
            rows.append(row(f"{name}, soundtracks swapped (no sync)", moved, audio[swap], digits, cfg, pitch=False))
    return rows


def cmd_teacher(args) -> list[dict]:
    """Sync of `multistep_fixed_noise` samples (what method kd regresses its one step onto) for each K of
    --steps (Karras levels, as kd's default) and each level list of --sigma-lists, in bf16 as training runs the
    teacher, the requested digits those of the held-out clips."""
    from cm_media.math.samplers import default_step_sigmas, multistep_fixed_noise
    from modalities.av.codec import layout_of, split_media

    custom = []
    for text in args.sigma_lists:  # checked before any work
        try:
            custom.append([float(v) for v in text.split(",")])
        except ValueError:
            fail(f"--sigma-lists: {text!r} is not a comma-separated list of numbers")
    gen, data = held_out(args)
    cfg, n, m = gen.cfg, args.n, gen.cfg.method
    digits = data.labels
    cond = gen.cond_tensors({"digit": [str(d) for d in digits.tolist()]}, n)
    noise = torch.randn((n, *gen.shape()), generator=torch.Generator().manual_seed(args.seed))  # [B, C, *axes]
    rows = []
    plans = [default_step_sigmas(k, m.sigma_min, m.sigma_max, m.rho) for k in args.steps] + custom
    for sigmas in plans:
        parts = []
        for i in range(0, n, 50):
            f = gen.conditioned(gen.net(True), {name: v[i:i + 50] for name, v in cond.items()}, None)
            with torch.no_grad(), torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                parts.append(multistep_fixed_noise(f, noise[i:i + 50], sigmas, m.sigma_min).float())
        video, audio = split_media(gen.decode(torch.cat(parts)), layout_of(cfg.codec))
        rows.append(row(f"{args.source}: deterministic {len(sigmas)}-step sample (kd teacher) at "
                        f"{', '.join(f'{v:g}' for v in sigmas)}", video, audio, digits, cfg, pitch=False))
    return rows


def cmd_alternate(args) -> list[dict]:
    """Joint clips in --joint-steps, then each edit of --edits in turn ("v<K>": motion regenerated for the current
    soundtrack in K steps, "a<K>": sound for the current frames), sync after each: a Gibbs-like sampler of the
    two streams. Wall turns per clip are in the rows (a wobbling digit turns near walls without a wall hit)."""
    from modalities.av.codec import layout_of, pack_media, split_media

    for op in args.edits:  # checked before any work
        if op[:1] not in ("v", "a") or not op[1:].isdigit() or int(op[1:]) < 1:
            fail(f"--edits: {op!r} is not v<steps> or a<steps>")
    gen, data = held_out(args)
    cfg, n = gen.cfg, args.n
    digits = data.labels
    layout = layout_of(cfg.codec)
    video, audio = split_media(gen.generate(n, steps=args.joint_steps, seed=args.seed,
                                            cond={"digit": [str(d) for d in digits.tolist()]}, batch_size=32), layout)
    rows = [row(f"{args.source}: joint, {args.joint_steps} step(s)", video, audio, digits, cfg, pitch=False)]
    done = []
    for i, op in enumerate(args.edits):
        which, steps = {"v": "video", "a": "audio"}[op[0]], int(op[1:])
        media = pack_media(video * 0, audio) if which == "video" else pack_media(video, audio * 0)
        mask = gen.modality.edit_mask(which, None, cfg)
        video, audio = split_media(edit_in_chunks(gen, media, mask, digits, steps, args.seed + 10 + i), layout)
        done.append(op)
        rows.append(row(f"{args.source}: joint, then {' '.join(done)}", video, audio, digits, cfg, pitch=False))
    return rows


def onset_offsets(name: str, video: torch.Tensor, audio: torch.Tensor, digits: torch.Tensor, cfg) -> dict:
    """The signed distance in frames of each onset in the detectable window to its nearest wall bounce: shares
    within one frame (the strict sync), within two, and with none within two, the median, and a histogram of
    half-frame bins over [-3, 3] (onsets farther off, or in clips with no wall bounce, are counted apart)."""
    import numpy as np

    from modalities.av.sounding_digits import DIGIT_MIDI
    from modalities.av.sync import av_sync_report

    c = cfg.codec
    r = av_sync_report(video, audio, digits, c.fps, c.sample_rate, DIGIT_MIDI, pitch=False, per_clip=True)
    lo, hi = r["window_s"]
    offsets = []
    for onsets, walls in zip(r["onset_times"], r["wall_bounce_times"]):
        walls = np.asarray(walls)
        for t in onsets:
            if lo <= t <= hi:
                offsets.append(float((t - walls[np.abs(walls - t).argmin()]) * c.fps) if len(walls) else np.inf)
    off = np.asarray(offsets)
    n = max(len(off), 1)
    near = off[np.abs(off) <= 3]
    edges = np.arange(-3.0, 3.01, 0.5)
    return {"rows": name, "clips": len(digits), "onsets": len(off), "within_1_frame": float((np.abs(off) <= 1).sum() / n),
            "within_2_frames": float((np.abs(off) <= 2).sum() / n), "none_within_2": float((np.abs(off) > 2).sum() / n),
            "median_offset_frames": float(np.median(near)) if len(near) else float("nan"),
            "histogram_edges": edges.tolist(), "histogram": np.histogram(near, edges)[0].tolist(),
            "beyond_3_or_no_wall_bounce": int((np.abs(off) > 3).sum())}


def cmd_offsets(args) -> list[dict]:
    """How far from a wall bounce the onsets fall: real clips, the joint one step, sound for real clips and sound
    for the joint step's frames (both one-step edits, by --sound-from or the model itself). Sound for real clips
    shows how well the audio tower times a note to given motion; sound for generated frames, how far the
    generated motion lets it."""
    import cm_media
    from modalities.av.codec import layout_of, pack_media, split_media

    gen, data = held_out(args)
    sound = cm_media.load(args.sound_from) if args.sound_from else gen
    cfg, n = gen.cfg, args.n
    digits = data.labels
    layout = layout_of(cfg.codec)
    video, audio = data.get_clips(range(n))
    joint_v, joint_a = split_media(gen.generate(n, steps=1, seed=args.seed, batch_size=32,
                                                cond={"digit": [str(d) for d in digits.tolist()]}), layout)
    mask = sound.modality.edit_mask("audio", None, sound.cfg)
    name = args.sound_from or args.source
    _, for_real = split_media(edit_in_chunks(sound, pack_media(video, audio * 0), mask, digits, 1, args.seed), layout)
    _, for_joint = split_media(edit_in_chunks(sound, pack_media(joint_v, joint_a * 0), mask, digits, 1, args.seed),
                               layout)
    return [onset_offsets("real clips", video, audio, digits, cfg),
            onset_offsets(f"{args.source}: joint, one step", joint_v, joint_a, digits, cfg),
            onset_offsets(f"{name}: sound for real clips, one step", video, for_real, digits, cfg),
            onset_offsets(f"{name}: sound for {args.source}'s joint frames, one step", joint_v, for_joint, digits, cfg)]


def cmd_speed(args) -> list[dict]:
    import cm_media

    torch.set_num_threads(args.threads)
    gen = cm_media.load(args.source)
    cond = {"digit": [str(d % 10) for d in range(args.batch)]}
    times = []
    for i in range(args.repeats + 1):
        t0 = time.perf_counter()
        gen.generate(args.batch, steps=1, seed=i, cond=cond, batch_size=args.batch, bf16=True)
        if i:  # the first call warms up
            times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    c = gen.cfg.codec
    return [{"source": args.source, "batch": args.batch, "threads": args.threads, "seconds_per_batch": s,
             "clips_per_s": args.batch / s, "frames_per_s": args.batch * c.frames / s,
             "audio_real_time_factor": args.batch * c.frames / c.fps / s, "load_avg_1min": os.getloadavg()[0]}]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def command(name: str, threads: int, clips: bool = True) -> argparse.ArgumentParser:
        """A subcommand with the options every one takes: the model, threads, --json, and for the quality
        measures the clip count and seed."""
        p = sub.add_parser(name)
        p.add_argument("source")
        p.add_argument("--threads", type=int, default=threads)
        p.add_argument("--json", help="write the rows to this file")
        if clips:
            p.add_argument("--n", type=int, default=200)
            p.add_argument("--seed", type=int, default=0)
        return p

    q = command("quality", 1)
    q.add_argument("--steps", type=int, default=1)
    q.add_argument("--cfg-scale", type=float, default=None)
    e = command("edit", 2)
    e.add_argument("--motion", action="store_true", help="also motion for the real soundtracks (edit --mask video)")
    e.add_argument("--one-step", action="store_true", help="only the one-step rows")
    t = command("teacher", 2)
    t.add_argument("--steps", type=int, nargs="*", default=[3, 6, 8, 12])
    t.add_argument("--sigma-lists", nargs="*", default=[], help="level lists, each comma-separated")
    a = command("alternate", 2)
    a.add_argument("--joint-steps", type=int, default=1)
    a.add_argument("--edits", nargs="+", default=["v1", "a1"])
    o = command("offsets", 2)
    o.add_argument("--sound-from", help="a run (or bundled model name) whose one-step edit makes the sound")
    s = command("speed", 2, clips=False)
    s.add_argument("--batch", type=int, default=32)
    s.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    rows = {"quality": cmd_quality, "edit": cmd_edit, "teacher": cmd_teacher, "alternate": cmd_alternate,
            "offsets": cmd_offsets, "speed": cmd_speed}[args.cmd](args)
    for r in rows:
        print(json.dumps(r))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
