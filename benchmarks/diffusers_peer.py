"""One-step latency of cm-media vs Hugging Face diffusers' ConsistencyModelPipeline on the same image size and batch.

    pip install "cm-media[bench]"        # diffusers is an optional extra
    python benchmarks/diffusers_peer.py [SOURCE_OR_CONFIG] [--batch 64] [--repeats 20] [--json out.json]
    # 32x32 grey images in bf16 (issue 19's target), the fashion-mnist network at that size:
    python benchmarks/diffusers_peer.py configs/image/fashion_mnist_ict.yaml --set codec.size=32 --bf16

SOURCE_OR_CONFIG is a cm-media image run/checkpoint, or a YAML config (an untrained network of that shape:
latency does not depend on the weights; --set KEY=VALUE overrides it); default configs/image/digits_ict.yaml.
With --bf16, cm-media samples as its CLI does in bf16 (bf16 weights under autocast) and the peer runs the three ways
a diffusers user would (autocast over float32 weights, the UNet cast to bf16, and that in channels-last): the
fastest peer is compared. The peer is a UNet2DModel
with DownBlock2D/UpBlock2D levels and an attention mid block, its width chosen to match cm-media's parameter
count. The timings alternate in every round (so machine load hits all alike): each library's one-step sample
to [0, 1] pixels and its bare network forward. Medians and their ratios come from this one run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def cm_media_generator(source: str, device: str, overrides: list[str] | None = None):
    """A cm-media Generator from a run/checkpoint, or from a YAML config (with --set overrides) and fresh weights."""
    from cm_media.runs.config import load_config
    from cm_media.runs.generator import Generator, apply_speed_options, load
    from cm_media.runs.model import build_model, resolve_device

    if source.endswith((".yaml", ".yml")):
        cfg = load_config(source, overrides or [])
        modality, codec, model = build_model(cfg)
        dev = resolve_device(device)
        model = model.to(dev).eval()
        apply_speed_options(model, cfg.sample.channels_last, cfg.sample.compile)  # as load() does for a run
        return Generator(cfg, model, codec, modality, dev, Path(source))
    return load(source, device=device)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def peer_unet(size: int, channels: int, levels: int, target_params: int):
    """The diffusers UNet2DModel (plain conv levels, attention mid block) whose parameter count is closest."""
    from diffusers import UNet2DModel

    def make(width: int):
        return UNet2DModel(
            sample_size=size, in_channels=channels, out_channels=channels,
            block_out_channels=tuple(width * min(2, 1 + i) for i in range(levels)),
            down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
            layers_per_block=2, norm_num_groups=8, attention_head_dim=8,
        )

    best = min(range(8, 257, 8), key=lambda w: abs(math.log(count(make(w)) / target_params)))
    return make(best)


def median_times(fns, repeats: int, warmup: int, sync) -> list[float]:
    for _ in range(warmup):
        for fn in fns:
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", nargs="?", default=str(ROOT / "configs" / "image" / "digits_ict.yaml"))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", default=None)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (YAML source)")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 compute for both libraries")
    args = ap.parse_args()
    try:
        from diffusers import CMStochasticIterativeScheduler, ConsistencyModelPipeline
    except ImportError:
        print("error: diffusers is not installed; install the optional extra: pip install 'cm-media[bench]'",
              file=sys.stderr)
        return 2

    gen = cm_media_generator(args.source, args.device, args.set)
    if gen.cfg.modality != "image":
        print(f"error: the diffusers peer is an image pipeline; {args.source} is a {gen.cfg.modality} model",
              file=sys.stderr)
        return 2
    dev = gen.device
    c, size = gen.codec.channels, gen.cfg.codec.size
    levels = len(getattr(gen.model.backbone.cfg, "channel_mult", [1, 2]))
    ours = count(gen.model.backbone)
    unet = peer_unet(size, c, levels, ours).to(dev).eval()
    scheduler = CMStochasticIterativeScheduler(num_train_timesteps=40, sigma_min=gen.cfg.method.sigma_min,
                                               sigma_max=gen.cfg.method.sigma_max, sigma_data=gen.cfg.method.sigma_data)
    pipe = ConsistencyModelPipeline(unet=unet, scheduler=scheduler).to(dev)
    pipe.set_progress_bar_config(disable=True)

    b = args.batch
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((b, c, size, size), generator=g).to(dev)  # [B, C, H, W]
    c_noise = torch.full((b,), math.log(gen.cfg.method.sigma_max) / 4, device=dev)
    t_peer = torch.as_tensor(scheduler.sigma_to_t(torch.tensor([gen.cfg.method.sigma_max])), dtype=torch.float32)
    t_peer = t_peer.to(dev).reshape(-1)[:1].expand(b)
    peer_gen = torch.Generator(dev).manual_seed(0)
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def autocast():
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=args.bf16)

    cm_net = gen.net(args.bf16).backbone  # bf16: the twin with bf16 weights that generation uses

    @torch.no_grad()
    def cm_sample():  # one step to pixels in [0, 1]
        return gen.codec.decode(gen.sample(noise, 1, g, args.bf16))

    @torch.no_grad()
    def cm_forward():
        with autocast():
            return cm_net(noise, c_noise)

    def peer(net, pipeline):
        @torch.no_grad()
        def sample():
            # the pipeline draws its own noise (its latents check assumes 3 channels); randn is cheap
            with autocast():
                return pipeline(batch_size=b, num_inference_steps=1, generator=peer_gen, output_type="pt").images

        @torch.no_grad()
        def forward():
            with autocast():
                return net(noise, t_peer).sample

        return sample, forward

    fns, ways = [cm_sample, cm_forward, *peer(unet, pipe)], ["autocast" if args.bf16 else "float32"]
    if args.bf16:  # the other ways a diffusers user runs bf16: the whole UNet in bf16, and that in channels-last
        import copy

        for way, fmt in (("bf16 weights", torch.contiguous_format), ("bf16 weights, channels-last", torch.channels_last)):
            unet16 = copy.deepcopy(unet).to(torch.bfloat16).to(memory_format=fmt)
            pipe16 = ConsistencyModelPipeline(unet=unet16, scheduler=scheduler).to(dev)
            pipe16.set_progress_bar_config(disable=True)
            fns += peer(unet16, pipe16)
            ways.append(way)
    times = median_times(fns, args.repeats, args.warmup, sync)
    cm_s, cm_f = times[:2]
    peers = [(times[2 + 2 * i], times[3 + 2 * i], way) for i, way in enumerate(ways)]
    pe_s, pe_f, peer_way = min(peers)  # the fastest way the peer ran
    result = {
        "device": str(dev), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "diffusers": __import__("diffusers").__version__,
        "batch": b, "image": [c, size, size], "repeats": args.repeats, "bf16": args.bf16,
        "peer_way": peer_way, "peer_onestep_s_by_way": {w: t for t, _, w in peers}, "all_medians_s": times,
        "cm_media_channels_last": bool(gen.cfg.sample.channels_last),
        "cm_media_params": ours, "diffusers_params": count(unet),
        "cm_media_onestep_s": cm_s, "cm_media_forward_s": cm_f,
        "diffusers_onestep_s": pe_s, "diffusers_forward_s": pe_f,
        "cm_media_onestep_over_forward": cm_s / cm_f, "diffusers_onestep_over_forward": pe_s / pe_f,
        "diffusers_over_cm_media_onestep": pe_s / cm_s, "diffusers_over_cm_media_forward": pe_f / cm_f,
    }
    print(f"batch {b} of {c}x{size}x{size} on {dev} ({result['threads']} threads), median of {args.repeats}"
          + (", bf16" if args.bf16 else "") + f"; peer: {peer_way}, the fastest of " + ", ".join(ways))
    print("| library | params | one-step ms | forward ms | one-step / forward |\n|---|---|---|---|---|")
    print(f"| cm-media | {ours} | {cm_s * 1e3:.2f} | {cm_f * 1e3:.2f} | {cm_s / cm_f:.3f} |")
    print(f"| diffusers | {count(unet)} | {pe_s * 1e3:.2f} | {pe_f * 1e3:.2f} | {pe_s / pe_f:.3f} |")
    print(f"diffusers / cm-media: one-step x{pe_s / cm_s:.2f}, forward x{pe_f / cm_f:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
