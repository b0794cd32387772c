"""Does the notes network use its instrument label? A probe that needs no sample quality (issue 33).

    python benchmarks/instrument_probe.py notes --sigmas 1,2.5,5,10 --n 300

Held-out real notes are noised to sigma and denoised in one evaluation while asking for their own pitch and a
family other than theirs (a random wrong one). The project's audio classifier (modalities/audio/feature_net.py)
then names the family of the decoded note: `follows_label` is the share that became the requested family,
`follows_note` the share that kept its own. At the largest sigma (the model's sigma_max) the note is mostly noise,
so only the labels can decide; a network that ignores its instrument label scores about 1 in 10 there (chance
over the 10 wrong families). Beside it, `pitch_kept`: the share still within half a semitone of the pitch asked.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from _common import write_json

import cm_media
from modalities.audio.datasets import build_dataset
from modalities.audio.feature_net import classify
from modalities.audio.pitch import pitch_accuracy


@torch.no_grad()
def probe(gen, ds, idx: torch.Tensor, sigma: float, seed: int = 0, batch: int = 50) -> dict:
    """One sigma: the shares of denoised notes classified as the requested (wrong) family and as their own."""
    src = ds.source
    families = len(src.instrument_names)
    g = torch.Generator().manual_seed(seed)
    own, pitch = src.instruments[idx], src.pitches[idx]  # [N]
    wrong = (own + torch.randint(1, families, own.shape, generator=g)) % families  # never the note's own family
    media = ds.waveforms(idx)  # [N, 1, T]
    outs = []
    for i in range(0, len(idx), batch):
        x0 = gen.codec.encode(media[i:i + batch])  # [b, C, F, T] model space
        x = x0 + sigma * torch.randn(x0.shape, generator=g)
        cond = gen.cond_tensors({"pitch": [str(int(p)) for p in pitch[i:i + batch]],
                                   "instrument": [src.instrument_names[int(k)] for k in wrong[i:i + batch]]},
                                  len(x))
        outs.append(gen.decode(gen.model(x, torch.full((len(x),), sigma), cond)))
    wave = torch.cat(outs)  # [N, 1, T]
    rate = gen.cfg.codec.sample_rate
    pred = classify(wave, rate)["instrument"].argmax(1)
    kept, _ = pitch_accuracy(wave, rate, pitch)
    return {"sigma": sigma, "n": len(idx), "follows_label": round(float((pred == wrong).float().mean()), 4),
            "follows_note": round(float((pred == own).float().mean()), 4), "pitch_kept": round(float(kept), 4)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="notes runs, checkpoints, exports or the bundled name `notes`")
    ap.add_argument("--sigmas", default="1,2.5,5,10")
    ap.add_argument("--n", type=int, default=300, help="held-out notes (a seeded subset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for source in args.models:
        gen = cm_media.load(source)
        if gen.cfg.data.dataset != "notes":
            print(f"error: {source} is a {gen.cfg.data.dataset} model; the probe needs a notes model", file=sys.stderr)
            return 2
        ds = build_dataset(gen.cfg, gen.codec, "eval")
        idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))[: args.n]
        for sigma in [float(s) for s in args.sigmas.split(",")]:
            rows.append({"model": source, **probe(gen, ds, idx, sigma, args.seed)})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
