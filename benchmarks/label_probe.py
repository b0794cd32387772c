"""Does a class-conditional Fashion-MNIST network use its label? A probe that needs no sample quality.

    python benchmarks/label_probe.py runs/fm_embed_200 runs/fm_block_200 --sigmas 1,2.5,5,10 --n 300

Test images are noised to sigma and denoised in one evaluation while asking for a class other than theirs (a
random wrong one). The shipped Fashion-MNIST net then says which class the denoised image is: `follows_label` is
the share that became the requested class, `follows_image` the share that kept the image's own. At large sigma
the image is mostly noise, so only the label can decide; a network that ignores its label scores ~0.1 there
(1 in 10 by chance). This isolates the conditioning path early in training, when one-step samples are still
too poor for their class accuracy to say anything (issue 34).
"""

from __future__ import annotations

import argparse
import json

import torch
from _common import write_json

import cm_media
from modalities.image.fashion_mnist import fashion_pixels
from modalities.image.fashion_net import load_fashion_net


@torch.no_grad()
def probe(gen, images: torch.Tensor, labels: torch.Tensor, sigma: float, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    wrong = (labels + torch.randint(1, 10, labels.shape, generator=g)) % 10  # never the image's own class
    x0 = gen.codec.encode(images)  # [N, 1, 28, 28] model space
    x = x0 + sigma * torch.randn(x0.shape, generator=g)
    out = torch.cat([gen.model(x[i:i + 100], torch.full((len(x[i:i + 100]),), sigma), {"class": wrong[i:i + 100]})
                     for i in range(0, len(x), 100)])
    pred = load_fashion_net().head(load_fashion_net().embed(gen.decode(out).clamp(0, 1))).argmax(1)
    return {"sigma": sigma, "follows_label": round(float((pred == wrong).float().mean()), 4),
            "follows_image": round(float((pred == labels).float().mean()), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--sigmas", default="1,2.5,5,10")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    images, labels = fashion_pixels("eval", args.n)
    rows = []
    for source in args.models:
        gen = cm_media.load(source, device="cpu")
        for s in (float(v) for v in args.sigmas.split(",")):
            rows.append({"model": source, "n": args.n, **probe(gen, images.float(), labels.long(), s)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
