"""One-step audio generation as a user gets it: `Generator.generate` with guidance and the decode, x real time.

    python benchmarks/audio_speed.py spoken-digits notes --cfg-scales 1,2 --threads 2

Issue 33 keeps "one-step generation at least 200x real time on 2 cores including guidance and the decode". Each
SOURCE is timed in the same process, interleaved repeat by repeat (a load change hits every row alike): the
median wall time of `generate(batch, steps, cfg_scale)` (conditions, network, decode to float waveforms), and of
the decode alone (the STFT's inverse, or the mel codec's Griffin-Lim) on the same tensors. x real time = seconds
of audio made / seconds taken.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from _common import write_json

import cm_media


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+", help="bundled model names, runs, checkpoints or exports")
    p.add_argument("--cfg-scales", default="1,2")
    p.add_argument("--steps", type=int, default=1)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=False,
                   help="bf16 autocast (default off: float32, the fast choice on a CPU without native bf16)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    gens = {s: cm_media.load(s) for s in args.sources}
    scales = [float(v) for v in args.cfg_scales.split(",")]
    conds = {s: {k: [v[0]] for k, v in gen.condition_spec().items()} or None  # the first class of each condition
             for s, gen in gens.items()}
    # an unconditional model has no guidance: one row (scale 1) instead of a row per scale timing the same call
    times: dict = {(s, w): [] for s in gens for w in (scales if conds[s] else [1.0])}
    decode: dict = {s: [] for s in gens}
    for _ in range(args.repeats):  # interleaved: each repeat times every row once
        for s, gen in gens.items():
            for w in (scales if conds[s] else [1.0]):
                kw = {"cfg_scale": w} if conds[s] else {}
                run = lambda: gen.generate(args.batch, steps=args.steps, bf16=args.bf16, cond=conds[s], **kw)  # noqa: E731
                run()  # warm
                times[(s, w)].append(timed(run))
            x = torch.randn(args.batch, *gen.shape())
            decode[s].append(timed(lambda: gen.decode(x)))
    rows = []
    for (s, w), ts in times.items():
        gen = gens[s]
        seconds = args.batch * gen.cfg.data.seconds
        med, dec = statistics.median(ts), statistics.median(decode[s])
        rows.append({"source": s, "representation": gen.cfg.codec.representation, "steps": args.steps, "cfg_scale": w,
                     "batch": args.batch, "threads": args.threads, "generate_s": med, "decode_s": dec,
                     "x_real_time": seconds / med, "decode_share": dec / med, "load_avg_1min": os.getloadavg()[0]})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
