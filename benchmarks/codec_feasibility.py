"""Feasibility of learned latent codecs for video: train the 2D autoencoder per frame for a few minutes on one
thread and report held-out PSNR and encode+decode time per 64x64 frame.

    OMP_NUM_THREADS=1 python benchmarks/codec_feasibility.py --data moving-mnist --channels 16 --minutes 5
    OMP_NUM_THREADS=1 python benchmarks/codec_feasibility.py --data footage --channels 32 --minutes 5

Held-out frames: the test split (unseen digit images / the last 20% of each footage file). Prints one JSON line.

Measured (2 shared CPU cores, load average 5-8 from other jobs, so times are pessimistic; 6 min each, 4x
downsampling, 4 latent channels, channel_mult 1,2,2, one res block per level, batch 16, Adam 2e-3 cosine):
    data          width  params  steps  frames/s  held-out PSNR  encode+decode ms/frame
    moving-mnist      8     45k   3007     134        34.1 dB          3.1
    moving-mnist     16    176k   1508      67        32.3 dB          7.3
    moving-mnist     32    696k    543      24        27.1 dB         19.6
    footage           8     45k   2088      93        21.1 dB          8.9 (load average 10)
    footage          16    177k   1867      83        22.9 dB          8.3
    footage          32    697k    468      21        20.2 dB         23.4
Still rising at the end of each run. On digits the narrowest model wins a CPU time budget by taking more
steps; footage needs width 16 or more and far more training than minutes on a CPU to reach 27 dB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import torch

from cm_media.nn import codec_losses as cl
from cm_media.nn.autoencoder import Autoencoder, AutoencoderConfig


def dataset(name: str, split: str, num_clips: int):
    if name == "moving-mnist":
        from modalities.video.moving_mnist import MovingMNIST
        return MovingMNIST(split, num_clips=num_clips)
    from modalities.video.footage import Footage
    return Footage(split, num_clips=num_clips)


def frames_of(ds, indices: torch.Tensor, per_clip: int, gen: torch.Generator) -> torch.Tensor:
    """`per_clip` random frames of each clip as [B * per_clip, C, H, W]."""
    clips = ds.get_clips(indices)  # [B, C, T, H, W]
    t = torch.randint(0, clips.shape[2], (len(indices), per_clip), generator=gen)
    picked = clips.permute(0, 2, 1, 3, 4)[torch.arange(len(indices))[:, None], t]  # [B, per_clip, C, H, W]
    return picked.flatten(0, 1)


@torch.no_grad()
def held_out_psnr(ae: Autoencoder, frames: torch.Tensor) -> float:
    ae.eval()
    rec = torch.cat([ae(frames[i:i + 64])[0] for i in range(0, len(frames), 64)]).clamp(0, 1)
    ae.train()
    return float(cl.psnr(rec, frames).mean())


@torch.no_grad()
def codec_time(ae: Autoencoder, frames: torch.Tensor, repeats: int = 3) -> float:
    """Seconds per frame for encode + decode of a batch of 64 frames (best of `repeats`)."""
    ae.eval()
    x = frames[:64]
    ae.decode(ae.encode(x))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        ae.decode(ae.encode(x))
        best = min(best, time.perf_counter() - t0)
    ae.train()
    return best / len(x)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", default="moving-mnist", choices=["moving-mnist", "footage"])
    p.add_argument("--channels", type=int, default=16)
    p.add_argument("--mult", default="1,2,2")
    p.add_argument("--latent", type=int, default=4)
    p.add_argument("--res-blocks", type=int, default=1)
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-every", type=float, default=60.0, help="seconds between held-out evaluations")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)

    train, test = dataset(args.data, "train", 100000), dataset(args.data, "test", 64)
    held = frames_of(test, torch.arange(64), 4, gen)  # [256, C, 64, 64]
    mult = [int(m) for m in args.mult.split(",")]
    cfg = AutoencoderConfig(dims=2, in_channels=held.shape[1], channels=args.channels, channel_mult=mult,
                            down=[2] * (len(mult) - 1), latent_channels=args.latent,
                            num_res_blocks=args.res_blocks)
    ae = Autoencoder(cfg)
    opt = torch.optim.Adam(ae.parameters(), lr=args.lr)
    budget = args.minutes * 60
    start = time.perf_counter()
    step, frames_seen, next_eval, curve = 0, 0, args.eval_every, []
    while (elapsed := time.perf_counter() - start) < budget:
        for g in opt.param_groups:  # cosine decay over the time budget
            g["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / budget, 1.0)))
        x = frames_of(train, torch.randint(0, len(train), (args.batch // 4,), generator=gen), 4, gen)
        rec, z = ae(x)
        loss = (cl.l2(rec, x) + 0.1 * cl.l1(rec, x)).mean() + 1e-4 * z.square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step, frames_seen = step + 1, frames_seen + len(x)
        if elapsed >= next_eval:
            curve.append((round(elapsed), step, round(held_out_psnr(ae, held), 2)))
            print(f"# {curve[-1][0]} s, step {step}: held-out PSNR {curve[-1][2]} dB", flush=True)
            next_eval += args.eval_every
    train_s = time.perf_counter() - start
    ae.fit_latent_scale(held[:64])
    result = {
        "data": args.data, "channels": args.channels, "channel_mult": mult, "factor": cfg.factor,
        "latent_channels": args.latent, "res_blocks": args.res_blocks,
        "params": sum(p.numel() for p in ae.parameters()), "batch": args.batch, "lr": args.lr,
        "train_s": round(train_s), "steps": step, "frames_per_s": round(frames_seen / train_s, 1),
        "held_out_psnr": round(held_out_psnr(ae, held), 2), "curve": curve,
        "codec_ms_per_frame": round(1000 * codec_time(ae, held), 3),
        "latent_scale": round(float(ae.latent_scale), 4),
        "threads": torch.get_num_threads(), "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
