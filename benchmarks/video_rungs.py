"""Issue 34: where the video models lose quality, rung by rung (design notes, section 9), with one judge.

    # Moving MNIST: real clips, real clips through the codec (decode(encode(x))), the model at 1 and more steps
    python benchmarks/video_rungs.py moving-mnist --n 64 --steps 1 8 --json benchmarks/results/rungs/rungs_moving_mnist.json
    # footage: frame-to-frame change of codec reconstructions vs real held-out footage, first-frame PSNR on still
    # pictures outside the training footage (opencv-doc's sample photos) through the codec and through the model
    python benchmarks/video_rungs.py footage --n 32 --json benchmarks/results/rungs/rungs_footage.json

Moving MNIST rows: identity (share of frames whose digit set equals the clip's most common one), pair (share of
frames showing exactly the requested pair; for real and codec rows the clip's own digits), change (mean absolute
frame-to-frame difference) and its ratio to the real clips'. The judge is the project's per-frame classifier
(benchmarks/results/latent_video/moving_mnist_digit_classifier.safetensors, `latent_video.py classifier`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _common import write_json

sys.path.insert(0, str(Path(__file__).resolve().parent))
from latent_video import (
    classify_frames,
    frame_change,
    held_out_clips,
    identity_consistency,
    label_accuracy,
    load_classifier,
)

from modalities.video.pictures import HELD_OUT as STILL_NAMES
from modalities.video.pictures import ROOTS

STILLS = Path(ROOTS[0])


def stills(size: int = 64) -> tuple[torch.Tensor, list[str]]:
    """The still photos [N, 3, size, size] in [0, 1]: short side scaled to `size` (antialiased), centre crop."""
    from PIL import Image

    out, names = [], []
    for name in STILL_NAMES:
        path = STILLS / name
        if not path.is_file():
            continue
        img = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        img = img.float()[None] / 255  # [1, 3, H, W]
        h, w = img.shape[2:]
        s = size / min(h, w)
        img = F.interpolate(img, size=(max(size, round(h * s)), max(size, round(w * s))), mode="bilinear",
                            antialias=True, align_corners=False)
        top, left = (img.shape[2] - size) // 2, (img.shape[3] - size) // 2
        out.append(img[:, :, top:top + size, left:left + size].clamp(0, 1))
        names.append(name)
    if not out:
        raise SystemExit(f"error: no still pictures under {STILLS} (Debian package opencv-doc)")
    return torch.cat(out), names


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over samples of the PSNR (dB, peak 1) of a [N, ...] against b."""
    mse = (a.float() - b.float()).square().flatten(1).mean(1).clamp_min(1e-10)
    return float((-10 * torch.log10(mse)).mean())


@torch.no_grad()
def codec_roundtrip(gen, clips: torch.Tensor, batch: int = 8) -> torch.Tensor:
    return torch.cat([gen.codec.decode(gen.codec.encode(clips[i:i + batch])).float().clamp(0, 1)
                      for i in range(0, len(clips), batch)])


def mnist_row(name: str, clips: torch.Tensor, labels: torch.Tensor, net, real_change: float, **extra) -> dict:
    sets = classify_frames(net, clips)
    row = {"rung": name, **extra, "n": len(clips), "frames": clips.shape[2],
           "identity": round(identity_consistency(sets), 4), "pair": round(label_accuracy(sets, labels), 4)}
    if clips.shape[2] > 1:  # single frames (--frames 1) have no motion
        change = frame_change(clips.float())[0]
        row.update(change=round(change, 5), change_ratio=round(change / real_change, 3))
    print(json.dumps(row), flush=True)
    return row


def cmd_moving_mnist(args) -> list[dict]:
    import cm_media
    from modalities.video.moving_mnist import MovingMNIST

    net = load_classifier()
    real = held_out_clips("moving_mnist", args.n)
    labels = MovingMNIST("test", num_clips=args.n).labels  # [N, 2]
    real_change = frame_change(real)[0]
    rows = [mnist_row("real clips", real, labels, net, real_change)]
    for source in args.models:
        gen = cm_media.load(source, device="cpu")
        if source == args.models[0]:
            rows.append(mnist_row("codec decode(encode(real))", codec_roundtrip(gen, real), labels, net, real_change,
                                  codec=str(gen.cfg.codec.path)))
        cond = {"digit1": labels[:, 0].tolist(), "digit2": labels[:, 1].tolist()}
        for steps in args.steps:
            for w in args.cfg_scales:
                t0 = time.process_time()
                media = gen.generate(args.n, steps=steps, seed=args.seed, cond=cond, cfg_scale=w, bf16=args.bf16,
                                     frames=args.frames).float()
                rows.append(mnist_row(f"model, {steps} step(s)", media, labels, net, real_change, model=source,
                                      steps=steps, cfg_scale=w, cpu_s=round(time.process_time() - t0, 1)))
    return rows


def cmd_footage(args) -> list[dict]:
    import cm_media

    real = held_out_clips("footage", args.n, 3)
    real_change = frame_change(real)[0]
    pics, names = stills()
    rows = [{"rung": "real held-out footage", "n": len(real), "change": round(real_change, 5), "change_ratio": 1.0}]
    print(json.dumps(rows[-1]), flush=True)
    for source in args.models:
        gen = cm_media.load(source, device="cpu")
        if source == args.models[0] or args.every_codec:
            rec = codec_roundtrip(gen, real)
            change = frame_change(rec)[0]
            rec_pics = codec_roundtrip(gen, pics[:, :, None])[:, :, 0]
            rows.append({"rung": "codec decode(encode(real))", "codec": str(gen.cfg.codec.path), "model": source,
                         "n": len(real),
                         "psnr_db": round(psnr(rec, real), 2), "change": round(change, 5),
                         "change_ratio": round(change / real_change, 3),
                         "stills": len(pics), "stills_psnr_db": round(psnr(rec_pics, pics), 2)})
            print(json.dumps(rows[-1]), flush=True)
        for label, firsts in (("held-out footage first frames", real[:, :, 0]), ("still photos", pics)):
            with torch.no_grad():
                z = gen.codec.encode(firsts[:, :, None])  # [N, C, 1, h, w]
            cond = {"first_frame": torch.cat([z, torch.ones_like(z[:, :1])], 1)}
            for steps in args.steps:
                for w in args.cfg_scales:
                    t0 = time.process_time()
                    media = gen.generate(len(firsts), steps=steps, seed=args.seed, cond=cond, cfg_scale=w, bf16=args.bf16).float()
                    change = frame_change(media)[0]
                    rows.append({"rung": f"model, {steps} step(s)", "model": source, "first_frames": label,
                                 "steps": steps, "cfg_scale": w, "n": len(firsts),
                                 "first_frame_psnr_db": round(psnr(media[:, :, 0], firsts), 2),
                                 "change": round(change, 5), "change_ratio": round(change / real_change, 3),
                                 "cpu_s": round(time.process_time() - t0, 1)})
                    print(json.dumps(rows[-1]), flush=True)
    if args.save_stills:
        from PIL import Image
        Path(args.save_stills).mkdir(parents=True, exist_ok=True)
        for pic, name in zip(pics, names):
            arr = (pic.permute(1, 2, 0) * 255).round().byte().numpy()
            Image.fromarray(arr).save(Path(args.save_stills) / (Path(name).stem + ".png"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", choices=["moving-mnist", "footage"])
    p.add_argument("models", nargs="*", help="runs, exports or bundled names (default: the bundled model)")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--steps", type=int, nargs="+", default=[1])
    p.add_argument("--cfg-scales", type=float, nargs="+", default=[None])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="the generation seed (noise of every sample)")
    p.add_argument("--fp32", dest="bf16", action="store_false", default=None,
                   help="sample in float32 (default: the model's sample.bf16; bf16 is slow on CPUs without AVX-512)")
    p.add_argument("--frames", type=int, default=None,
                   help="moving-mnist: generate clips of this many frames (1: single frames, what a model trained "
                        "with train.clip_frames 1 has learned); default the model's clip length")
    p.add_argument("--every-codec", action="store_true", help="footage: the codec rows for every model, not the first")
    p.add_argument("--save-stills", default=None, help="footage: also write the 64x64 stills to this folder")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.models = args.models or [args.dataset]
    rows = (cmd_moving_mnist if args.dataset == "moving-mnist" else cmd_footage)(args)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
