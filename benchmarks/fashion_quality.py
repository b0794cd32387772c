"""Class-conditional Fashion-MNIST: does a one- or two-step sample show the class asked for, and at what FD?

    python benchmarks/fashion_quality.py runs/fashion_mnist_ict [MORE ...] --steps 1,2 \
        --json benchmarks/results/fashion_quality/fashion_quality.json

For each model, step count and guidance scale w (classifier-free: 1 plain conditional, > 1 guided), `--per-class`
samples of each of the 10 classes are generated from the same seeds and scored with the shipped Fashion-MNIST
net (modalities/image/fashion_net.py, trained on the 60,000 train images only):
  - acc: the share its head classifies as the requested class; the real test images' own accuracy is the
    reference row (issue 16's target: one-step acc >= 90% of it), `acc_ratio` the share of it reached;
  - net_fd: Frechet distance on its 128-d embedding against the 10,000 test images (FD is biased at small N:
    the row of as many real train images is the floor to compare with).
NFE counts network evaluations per sample (guidance doubles them). `fashion-mnist` names the bundled model.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import cm_media
from cm_media.eval.metrics import frechet_distance
from modalities.image.fashion_mnist import CLASSES, fashion_pixels
from modalities.image.fashion_net import load_fashion_net


def scores(images: torch.Tensor, labels: torch.Tensor, ref_embed: torch.Tensor, batch: int = 1000) -> dict:
    """images [N, 1, 28, 28] in [0, 1] -> {acc, net_fd} by the shipped Fashion-MNIST net."""
    net = load_fashion_net()
    x = images.float().clamp(0, 1).cpu()
    with torch.no_grad():
        emb = torch.cat([net.embed(x[i:i + batch]) for i in range(0, len(x), batch)])
        pred = net.head(emb).argmax(1)
    return {"acc": round(float((pred == labels).float().mean()), 4),
            "net_fd": round(frechet_distance(emb, ref_embed), 3)}


def embed(images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    net = load_fashion_net()
    with torch.no_grad():
        return torch.cat([net.embed(images[i:i + batch]) for i in range(0, len(images), batch)])


def row(source, gen, ref_embed, real_acc, per_class, steps, w, seed, bf16=None) -> dict:
    labels = torch.arange(10).repeat_interleave(per_class)
    request = {"class": [CLASSES[i] for i in labels.tolist()]}
    t0 = time.perf_counter()
    images = gen.generate(len(labels), steps=steps, seed=seed, cond=request, cfg_scale=w, bf16=bf16)
    seconds = time.perf_counter() - t0
    guided = w is not None and w != 1 and not gen.guided_student
    nfe = steps if gen.is_consistency else 2 * steps - 1
    rec = {"model": source, "steps": steps, "cfg_scale": w, "nfe": nfe * (2 if guided else 1), "n": len(labels),
           "seconds": round(seconds, 2), **scores(images, labels, ref_embed)}
    rec["acc_ratio"] = round(rec["acc"] / real_acc, 4)
    print(json.dumps(rec), flush=True)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=["fashion-mnist"],
                    help="class-conditional fashion_mnist runs, checkpoints, exports or bundled names")
    ap.add_argument("--steps", default="1,2", help="consistency step counts (EDM models: Heun steps, see --teacher-steps)")
    ap.add_argument("--teacher-steps", type=int, default=18)
    ap.add_argument("--scales", default="1", help="classifier-free guidance scales, e.g. 1,2")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--fp32", dest="bf16", action="store_false", default=None,
                    help="sample in float32 (default: the model's sample.bf16; bf16 is slow on CPUs without AVX-512)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if load_fashion_net() is None:
        raise SystemExit("modalities/image/fashion_net.safetensors is missing: python -m modalities.image.fashion_net")
    steps = [int(v) for v in args.steps.split(",")]
    scales = [float(v) for v in args.scales.split(",")]
    test_x, test_y = fashion_pixels("eval")
    ref_embed = embed(test_x)
    real = {"model": "real test images (reference)", "n": len(test_x),
            "acc": round(float((load_fashion_net().head(ref_embed).argmax(1) == test_y).float().mean()), 4)}
    n = 10 * args.per_class
    train_x, train_y = fashion_pixels("train", n)
    floor = {"model": f"real train images (FD floor at n={n})", "n": n, **scores(train_x, train_y, ref_embed)}
    records = [real, floor]
    print(json.dumps(real), json.dumps(floor), flush=True)
    for source in args.models:
        gen = cm_media.load(source, device=args.device)
        if gen.cfg.data.dataset != "fashion_mnist":
            raise SystemExit(f"{source} was trained on {gen.cfg.data.dataset!r}, not fashion_mnist")
        for k in steps if gen.is_consistency else [args.teacher_steps]:
            for w in scales:
                records.append(row(source, gen, ref_embed, real["acc"], args.per_class, k, w, args.seed, args.bf16))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
