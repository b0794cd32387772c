"""Issue 15 measurements: learned video codecs and pixel- vs latent-space consistency models at 64x64.

    # held-out reconstruction PSNR of a codec run or export (all frames of N test clips) and its speed per frame
    python benchmarks/latent_video.py codec runs/moving_mnist_codec --clips 64
    # the project's per-frame digit classifier (trained once, cached in benchmarks/results/)
    python benchmarks/latent_video.py classifier --steps 1500
    # models side by side: FD / KID against held-out clips, frame-to-frame change and acceleration against real
    # clips, identity consistency and label accuracy (Moving MNIST), one-step latency and frames/s incl. decode
    python benchmarks/latent_video.py models runs/moving_mnist_pixel_ict runs/moving_mnist_latent_ict --n 128
    # CPU seconds per training step of configs (what "equal training time" means on a machine shared with others)
    python benchmarks/latent_video.py steptime configs/experiments/video/moving_mnist_pixel_ict.yaml configs/video/moving_mnist_latent_ict.yaml

Every command prints JSON lines and, with --markdown, appends a table. Timings use `--threads` torch threads
(default 2, "2 cores") and print the machine's load average: this CPU is shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
CLASSIFIER = ROOT / "benchmarks" / "results" / "latent_video" / "moving_mnist_digit_classifier.safetensors"


# ---------------------------------------------------------------- codec


def held_out_clips(dataset: str, n: int, channels: int = 1, size: int = 64, frames: int = 16) -> torch.Tensor:
    """n clips [N, C, T, H, W] in [0, 1] of the test split (held-out digits / the last 20% of each footage file)."""
    if dataset == "moving_mnist":
        from modalities.video.moving_mnist import MovingMNIST
        return MovingMNIST("test", num_clips=n, frames=frames, size=size).get_clips(torch.arange(n))
    from modalities.video.footage import Footage
    return Footage("test", num_clips=n, frames=frames, size=size).get_clips(torch.arange(n))


def cmd_codec(args) -> list[dict]:
    from cm_media.nn import codec_losses
    from cm_media.nn.latent import LatentCodec
    from cm_media.runs.codec_runs import codec_file, latent_codec_arch, read_codec_config, read_weights

    torch.set_num_threads(args.threads)
    rows = []
    for source in args.sources:
        run = read_codec_config(source)
        arch = latent_codec_arch(run)
        codec = LatentCodec(arch, source, in_scale=2.0, in_shift=-1.0, clamp=(0.0, 1.0)).eval()
        codec.weights_reader = lambda source=source: read_weights(source)
        clips = held_out_clips(run["data"]["dataset"], args.clips, run["codec"]["channels"])
        with torch.no_grad():
            rec = torch.cat([codec.decode(codec.encode(clips[i:i + 4])) for i in range(0, len(clips), 4)])
            frames = rec.transpose(1, 2).flatten(0, 1), clips.transpose(1, 2).flatten(0, 1)  # [N*T, C, H, W]
            psnr = codec_losses.psnr(*frames)
            batch = clips[:4]  # 64 frames
            codec.decode(codec.encode(batch))
            t_enc, t_dec, c_enc, c_dec = [], [], [], []
            for _ in range(args.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                z = codec.encode(batch)
                t1, c1 = time.perf_counter(), time.process_time()
                codec.decode(z)
                t_enc.append(t1 - t0)
                t_dec.append(time.perf_counter() - t1)
                c_enc.append(c1 - c0)
                c_dec.append(time.process_time() - c1)
        nframes = batch.shape[0] * batch.shape[2]
        rows.append({
            "codec": str(source), "file": str(codec_file(source)), "dataset": run["data"]["dataset"],
            "params": sum(p.numel() for p in codec.parameters()), "factor": codec.factor,
            "latent_channels": codec.channels, "latent_scale": round(float(codec.ae.latent_scale), 4),
            "held_out_frames": int(psnr.numel()), "psnr_db": round(float(psnr.mean()), 2),
            "psnr_db_p10": round(float(psnr.quantile(0.1)), 2),
            "encode_ms_per_frame": round(1000 * statistics.median(t_enc) / nframes, 3),
            "decode_ms_per_frame": round(1000 * statistics.median(t_dec) / nframes, 3),
            # CPU time: what the work costs whatever else shares the machine (wall time above does not)
            "encode_cpu_ms_per_frame": round(1000 * statistics.median(c_enc) / nframes, 3),
            "decode_cpu_ms_per_frame": round(1000 * statistics.median(c_dec) / nframes, 3),
            "threads": torch.get_num_threads(), "loadavg_1m": round(os.getloadavg()[0], 2),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


# ---------------------------------------------------------------- digit classifier


class DigitNet(nn.Module):
    """Which digits a 64x64 Moving MNIST frame shows: 10 independent logits (multi-label: two digits per frame)."""

    def __init__(self, width: int = 16):
        super().__init__()
        def block(cin, cout, stride):
            return [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.SiLU()]

        w = width
        self.net = nn.Sequential(
            *block(1, w, 1), *block(w, w, 2), *block(w, 2 * w, 1), *block(2 * w, 2 * w, 2),
            *block(2 * w, 4 * w, 1), *block(4 * w, 4 * w, 2), *block(4 * w, 4 * w, 1),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:  # [N, 1, 64, 64] in [0, 1] -> [N, 10]
        return self.net(frames * 2 - 1)


def two_hot(labels: torch.Tensor) -> torch.Tensor:
    """[N, 2] digit labels -> [N, 10] targets (1 for each digit shown)."""
    return torch.zeros(len(labels), 10).scatter_(1, labels, 1.0)


def digit_sets(logits: torch.Tensor) -> torch.Tensor:
    """[N, 10] logits -> [N, 10] bool: the two most likely digits, or one when it alone is likely (a pair)."""
    top = logits.topk(2, dim=1)
    out = torch.zeros_like(logits, dtype=torch.bool)
    out.scatter_(1, top.indices[:, :1], True)
    second = top.values[:, 1] > 0  # sigmoid > 0.5
    out[torch.arange(len(logits)), top.indices[:, 1]] |= second
    return out


def load_classifier() -> DigitNet:
    from safetensors.torch import load_file

    if not CLASSIFIER.is_file():
        raise SystemExit(f"error: no digit classifier at {CLASSIFIER}; train it: python {__file__} classifier")
    net = DigitNet()
    net.load_state_dict(load_file(str(CLASSIFIER)))
    return net.eval()


@torch.no_grad()
def classify_frames(net: DigitNet, clips: torch.Tensor) -> torch.Tensor:
    """Clips [B, 1, T, H, W] -> digit sets per frame [B, T, 10] (bool)."""
    b, _, t = clips.shape[:3]
    frames = clips.transpose(1, 2).flatten(0, 1).float()
    logits = torch.cat([net(frames[i:i + 256]) for i in range(0, len(frames), 256)])
    return digit_sets(logits).view(b, t, 10)


def identity_consistency(sets: torch.Tensor) -> float:
    """Share of frames whose digit set equals their clip's most common one, averaged over clips."""
    scores = []
    for clip in sets:
        keys = [tuple(row.nonzero().flatten().tolist()) for row in clip]
        mode = max(set(keys), key=keys.count)
        scores.append(keys.count(mode) / len(keys))
    return sum(scores) / len(scores)


def label_accuracy(sets: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of frames whose digit set is exactly the requested pair [B, 2]."""
    want = two_hot(labels).bool()[:, None]  # [B, 1, 10]
    return float((sets == want).all(-1).float().mean())


def cmd_classifier(args) -> list[dict]:
    from safetensors.torch import save_file

    from modalities.video.moving_mnist import MovingMNIST

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train, test = MovingMNIST("train", num_clips=100000), MovingMNIST("test", num_clips=256)
    net = DigitNet()
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    t0, cpu0 = time.perf_counter(), time.process_time()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = 2e-3 * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        idx = torch.randint(0, len(train), (32,), generator=gen)
        clips = train.get_clips(idx)  # [32, 1, T, H, W]: 2 random frames of each
        t = torch.randint(0, clips.shape[2], (32, 2), generator=gen)
        frames = clips.transpose(1, 2)[torch.arange(32)[:, None], t].flatten(0, 1)
        target = two_hot(train.clip_labels(idx)).repeat_interleave(2, 0)
        loss = F.binary_cross_entropy_with_logits(net(frames), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 250 == 0:
            print(f"# step {step + 1}: loss {loss.item():.4f}", flush=True)
    net.eval()
    clips, labels = test.get_clips(torch.arange(256)), test.labels
    sets = classify_frames(net, clips)
    CLASSIFIER.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(CLASSIFIER))
    row = {"classifier": str(CLASSIFIER.relative_to(ROOT)), "steps": args.steps,
           "params": sum(p.numel() for p in net.parameters()),
           "held_out_frame_accuracy": round(label_accuracy(sets, labels), 4),
           "held_out_identity_consistency": round(identity_consistency(sets), 4),
           "train_s": round(time.perf_counter() - t0), "cpu_s": round(time.process_time() - cpu0),
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(row), flush=True)
    return [row]


# ---------------------------------------------------------------- models


def frame_change(clips: torch.Tensor) -> tuple[float, float]:
    """(mean |x_{t+1} - x_t|, mean |x_{t+1} - 2 x_t + x_{t-1}|) over pixels, frames and clips [B, C, T, H, W]."""
    d1 = clips[:, :, 1:] - clips[:, :, :-1]
    d2 = d1[:, :, 1:] - d1[:, :, :-1]
    return float(d1.abs().mean()), float(d2.abs().mean())


def time_one_step(gen, batch: int, repeats: int, cond: dict | None) -> tuple[float, float, float]:
    """Median (wall seconds, CPU seconds of all threads, decode CPU seconds) of one-step generation of `batch`
    clips including the decode, after a warm-up."""
    gen.generate(batch, steps=1, seed=0, cond=cond)
    times, cpu, dec = [], [], []
    shape = gen.shape()
    for r in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        gen.generate(batch, steps=1, seed=r + 1, cond=cond)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        z = torch.randn(batch, *shape)
        c1 = time.process_time()
        gen.decode(z, gen.options().bf16)  # as generate decodes (bf16 only where the CPU computes it fast)
        dec.append(time.process_time() - c1)
    return statistics.median(times), statistics.median(cpu), statistics.median(dec)


def cmd_models(args) -> list[dict]:
    from cm_media.eval import bench
    from cm_media.runs.generator import load

    torch.set_num_threads(args.threads)
    rows = []
    classifier = None
    for source in args.sources:
        gen = load(source, device="cpu")
        cfg = gen.cfg
        dataset = cfg.data.dataset
        opts = bench.BenchOptions(max_references=args.n, seed=0)
        ref = None if args.timing_only else bench.reference_for(gen, opts, 16)
        real = held_out_clips(dataset, args.n, cfg.codec.channels, cfg.codec.size, cfg.codec.frames)
        names = {c.name for c in gen.conditions}
        cond, labels = None, None
        if {"digit1", "digit2"} <= names:  # ask for the held-out clips' digits
            from modalities.video.moving_mnist import MovingMNIST
            labels = MovingMNIST("test", num_clips=args.n).labels
            cond = {"digit1": labels[:, 0].tolist(), "digit2": labels[:, 1].tolist()}
        first = None
        if "first_frame" in names and args.first_frame:  # animate the held-out clips' first frames
            with torch.no_grad():
                z = torch.cat([gen.codec.encode(real[i:i + 16, :, :1]) for i in range(0, args.n, 16)])
            first = torch.cat([z, torch.ones_like(z[:, :1])], 1)
            cond = {**(cond or {}), "first_frame": first}
        for scale in (args.cfg_scales if cond else [None]) if not args.timing_only else []:
            t0 = time.perf_counter()
            media = gen.generate(args.n, steps=1, seed=0, cond=cond, cfg_scale=scale).float()
            gen_s = time.perf_counter() - t0
            quality = bench.media_quality(gen, ref, media)
            change, accel = frame_change(media.detach())
            real_change, real_accel = frame_change(real)
            row = {"model": str(source), "dataset": dataset, "codec": cfg.codec.kind, "cfg_scale": scale,
                   "first_frame": first is not None, "n": args.n, "fd": round(quality["fd"], 4),
                   "kid_x1e3": round(1000 * quality["kid"], 3),
                   "change": round(change, 5), "real_change": round(real_change, 5),
                   "change_ratio": round(change / real_change, 3), "accel_ratio": round(accel / real_accel, 3),
                   "generate_s": round(gen_s, 2)}
            if first is not None:  # how closely frame 0 follows the given picture
                row["first_frame_psnr_db"] = round(float(-10 * torch.log10(
                    (media[:, :, 0] - real[:, :, 0]).square().mean((1, 2, 3)).clamp_min(1e-10)).mean()), 2)
            if dataset == "moving_mnist":
                classifier = classifier or load_classifier()
                sets = classify_frames(classifier, media)
                row["identity_consistency"] = round(identity_consistency(sets), 4)
                if labels is not None:
                    row["label_accuracy"] = round(label_accuracy(sets, labels), 4)
                real_sets = classify_frames(classifier, real)
                row["real_identity_consistency"] = round(identity_consistency(real_sets), 4)
            rows.append(row)
            print(json.dumps(row), flush=True)
        latency, cpu, decode_cpu = time_one_step(gen, args.batch, args.repeats, None)
        frames = args.batch * cfg.codec.frames
        timing = {"model": str(source), "timing_batch": args.batch, "one_step_latency_s": round(latency, 3),
                  "frames_per_s": round(frames / latency, 1), "cpu_s": round(cpu, 3),
                  # frames per second if the measured CPU time were spread over the threads without waiting
                  "frames_per_cpu_s_x_threads": round(frames * torch.get_num_threads() / cpu, 1),
                  "decode_cpu_share": round(decode_cpu / cpu, 3), "threads": torch.get_num_threads(),
                  "bf16": cfg.sample.bf16, "loadavg_1m": round(os.getloadavg()[0], 2)}
        rows.append(timing)
        print(json.dumps(timing), flush=True)
    return rows


def cmd_steptime(args) -> list[dict]:
    """CPU seconds per training step (data, encoding, forward, backward, optimizer) on one thread: the difference
    between two short runs, so start-up does not count."""
    import resource
    import tempfile

    from cm_media.runs.config import load_config
    from cm_media.runs.training import train

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    rows = []
    for config in args.sources:
        spent = []
        for steps in (args.short, args.long):
            cfg = load_config(config, [f"train.steps={steps}", "train.threads=1", "train.checkpoint_every=100000",
                                       "train.samples=0"])
            with tempfile.TemporaryDirectory() as tmp:
                c0, t0 = cpu(), time.perf_counter()
                train(cfg, Path(tmp) / "run", progress=False)
                spent.append((cpu() - c0, time.perf_counter() - t0))
        per_step = (spent[1][0] - spent[0][0]) / (args.long - args.short)
        rows.append({"config": config, "cpu_s_per_step": round(per_step, 3),
                     "wall_s_per_step": round((spent[1][1] - spent[0][1]) / (args.long - args.short), 3),
                     "loadavg_1m": round(os.getloadavg()[0], 2)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def to_markdown(rows: list[dict]) -> str:
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join("" if r.get(k) is None else str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("codec")
    c.add_argument("sources", nargs="+")
    c.add_argument("--clips", type=int, default=64)
    c.add_argument("--repeats", type=int, default=5)
    k = sub.add_parser("classifier")
    k.add_argument("--steps", type=int, default=1500)
    m = sub.add_parser("models")
    m.add_argument("sources", nargs="+")
    m.add_argument("--n", type=int, default=128)
    m.add_argument("--batch", type=int, default=16)
    m.add_argument("--repeats", type=int, default=3)
    m.add_argument("--cfg-scales", type=float, nargs="+", default=[1.0])
    m.add_argument("--timing-only", action="store_true", help="skip the quality measurements")
    m.add_argument("--first-frame", action="store_true", help="models with a first_frame condition: animate the "
                                                              "held-out clips' first frames")
    st = sub.add_parser("steptime")
    st.add_argument("sources", nargs="+")
    st.add_argument("--short", type=int, default=5)
    st.add_argument("--long", type=int, default=25)
    for s in (c, k, m, st):
        s.add_argument("--threads", type=int, default=2)
        s.add_argument("--json", default=None, help="also write the rows to this JSON file")
        s.add_argument("--markdown", default=None, help="also write a Markdown table to this file")
    args = p.parse_args()
    rows = {"codec": cmd_codec, "classifier": cmd_classifier, "models": cmd_models,
            "steptime": cmd_steptime}[args.command](args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(to_markdown(rows) + "\n")


if __name__ == "__main__":
    main()
