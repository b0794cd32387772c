"""Spoken words and instrument notes on request: does a one-step sample say the word / play the note asked for?

    python benchmarks/audio_on_request.py spoken-digits --per-class 50 --json benchmarks/results/audio_on_request/spoken_digits_on_request.json
    python benchmarks/audio_on_request.py notes --notes 300 --json benchmarks/results/audio_on_request/notes_on_request.json

Each SOURCE (a bundled model name, run, checkpoint or export; several may be compared, e.g. checkpoints of two runs)
is scored with the audio classifier the project trains on the real clips (modalities/audio/feature_net.py), the way
the SC09 papers score spoken digits:
  - accuracy: the share of conditioned samples the classifier assigns to the requested word (spoken_digits) or
    instrument family (notes);
  - pitch (notes): the share whose median pYIN f0 is within half a semitone of the requested MIDI pitch
    (modalities/audio/pitch.py);
  - FD on the classifier's 96-d embedding against the held-out real clips (biased at small N: compare rows);
  - IS exp(E KL(p(y|x) || p(y))), modified IS exp(E_{x,x'} KL(p(y|x) || p(y|x'))) and AM score
    KL(p*(y) || p(y)) + E H(p(y|x)) (p* the real train labels' distribution) on the classifier's word or
    instrument probabilities (cm_media/eval/metrics.py).
Words are also scored by a judge nobody here trained (modalities/audio/recognizer.py: PocketSphinx's shipped
US-English model with a grammar of the ten words; `asr`: the share recognized as the requested word), as TTS
papers report an ASR's word accuracy; `--no-recognizer` skips it.
The real clips are scored the same way: the held-out clips (never seen by the classifier or the models) and a
train-split sample of the same size (its FD is the floor a model can reach at this N); `--codec-row` adds the
held-out clips through the model's codec, decode(encode(x)) (the codec's ceiling). Requests: each word
`--per-class` times; notes: `--notes` (pitch, instrument) pairs drawn from the held-out notes. An EDM (diffusion)
source is sampled with Heun at `--teacher-steps` N (2N - 1 evaluations, twice that when guided).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from _common import write_json

import cm_media
from cm_media.eval import metrics
from modalities.audio.datasets import build_dataset
from modalities.audio.feature_net import classify
from modalities.audio.pitch import pitch_accuracy
from modalities.audio.recognizer import WordRecognizer

HEAD = {"spoken_digits": ("word", "class"), "notes": ("instrument", "instrument")}


def real_split(gen, part: str):
    """(dataset, media [N, C, T]) of a split of the model's data ('train' or 'eval')."""
    ds = build_dataset(gen.cfg, gen.codec, part)
    return ds, ds.waveforms(torch.arange(len(ds)))


def scores(probs: dict, media_rate: int, ref_embed: torch.Tensor, head: str, marginal: torch.Tensor,
           labels: torch.Tensor | None, media: torch.Tensor | None = None, midi: torch.Tensor | None = None,
           asr: WordRecognizer | None = None) -> dict:
    out = {"n": len(probs[head]), "fd": metrics.frechet_distance(ref_embed, probs["embed"])}
    out.update(metrics.classifier_scores(probs[head], marginal, labels))
    if asr is not None and labels is not None and media is not None:
        t0 = time.perf_counter()
        out["asr_accuracy"] = asr.accuracy(media, media_rate, labels)
        out["asr_s"] = round(time.perf_counter() - t0, 1)
    if midi is not None:
        t0 = time.perf_counter()
        out["pitch_accuracy"], errors = pitch_accuracy(media, media_rate, midi)
        out["octave_errors"] = sum(abs(abs(e) - 12) <= 0.5 for e in errors if e == e) / max(len(errors), 1)
        out["pitch_s"] = round(time.perf_counter() - t0, 1)
    return out


def requests(gen, ds_eval, args) -> tuple[dict, torch.Tensor, torch.Tensor | None]:
    """(cond request, labels [N] for the classifier head, requested MIDI pitches [N] or None)."""
    dataset = gen.cfg.data.dataset
    if dataset == "spoken_digits":
        names = ds_eval.source.class_names
        labels = torch.arange(len(names)).repeat_interleave(args.per_class)
        return {"class": [names[i] for i in labels]}, labels, None
    src = ds_eval.source
    g = torch.Generator().manual_seed(args.seed)
    idx = torch.randperm(len(src), generator=g)[: args.notes]
    pitch, inst = src.pitches[idx], src.instruments[idx]
    return ({"pitch": [str(int(p)) for p in pitch], "instrument": [src.instrument_names[int(i)] for i in inst]},
            inst, pitch)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sources", nargs="+")
    p.add_argument("--label", action="append", default=[], help="a row label per SOURCE (default: the source)")
    p.add_argument("--steps", default="1", help="consistency steps, e.g. 1,2")
    p.add_argument("--cfg-scales", default="1", help="classifier-free guidance scales, e.g. 1,2 (1: none)")
    p.add_argument("--guide", action="append", default=[], metavar="NAMES",
                   help="conditions guidance pushes towards, e.g. instrument (all: every condition); repeatable: "
                        "each is scored at every scale above 1 (default: the model's sample.guide)")
    p.add_argument("--per-class", type=int, default=50, help="spoken_digits: samples per word")
    p.add_argument("--notes", type=int, default=300, help="notes: (pitch, instrument) requests")
    p.add_argument("--unconditional", action="store_true", help="also score samples made with no condition")
    p.add_argument("--no-real", action="store_true", help="skip the real-data rows")
    p.add_argument("--real-n", type=int, default=None,
                   help="score this many real clips per real row (a seeded subset; default: all held-out clips)")
    p.add_argument("--teacher-steps", default="18", help="EDM sources: Heun steps N, e.g. 18,32 (NFE 2N - 1)")
    p.add_argument("--codec-row", action="store_true", help="also score the held-out clips through the codec")
    p.add_argument("--no-recognizer", action="store_true", help="words: skip the independent speech recognizer")
    p.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast while sampling (default: the model's; a CPU without AVX-512 BF16 runs it slower)")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    refs: dict = {}
    for k, source in enumerate(args.sources):
        label = args.label[k] if k < len(args.label) else source
        gen = cm_media.load(source)
        dataset, rate = gen.cfg.data.dataset, gen.cfg.codec.sample_rate
        head, cond_name = HEAD[dataset]
        if dataset not in refs:  # the real clips: the held-out reference and both real rows
            ds_train, train_media = real_split(gen, "train")
            ds_eval, eval_media = real_split(gen, "eval")
            labels_of = {"word": "labels", "instrument": "instruments"}[head]
            train_labels, eval_labels = getattr(ds_train.source, labels_of), getattr(ds_eval.source, labels_of)
            classes = len(ds_train.source.class_names if head == "word" else ds_train.source.instrument_names)
            marginal = torch.bincount(train_labels, minlength=classes).double()
            ref = classify(eval_media, rate)
            asr = None
            if dataset == "spoken_digits" and not args.no_recognizer:
                asr = WordRecognizer(ds_eval.source.class_names)
            refs[dataset] = (ds_eval, ref, marginal, asr)
            if not args.no_real:
                n = min(args.real_n or len(eval_media), len(eval_media))
                g = torch.Generator().manual_seed(args.seed)
                sub, pick = torch.randperm(len(eval_media), generator=g)[:n], torch.randperm(len(train_media), generator=g)[:n]
                midi_eval = ds_eval.source.pitches[sub] if dataset == "notes" else None
                held = {k: v[sub] for k, v in ref.items()}
                rows.append({"model": f"real {dataset} held-out", "steps": 0, "nfe": 0, **scores(
                    held, rate, ref["embed"], head, marginal, eval_labels[sub], eval_media[sub], midi_eval, asr)})
                print(json.dumps(rows[-1]), flush=True)
                if args.codec_row:  # the codec's ceiling: the same held-out clips, decode(encode(x))
                    with torch.no_grad():
                        coded = gen.codec.decode(gen.codec.encode(eval_media[sub])).float()
                    rows.append({"model": f"real {dataset} held-out through the codec", "steps": 0, "nfe": 0,
                                 **scores(classify(coded, rate), rate, ref["embed"], head, marginal, eval_labels[sub],
                                          coded, midi_eval, asr)})
                    print(json.dumps(rows[-1]), flush=True)
                tr = classify(train_media[pick], rate)
                midi_train = ds_train.source.pitches[pick] if dataset == "notes" else None
                rows.append({"model": f"real {dataset} train", "steps": 0, "nfe": 0, **scores(
                    tr, rate, ref["embed"], head, marginal, train_labels[pick], train_media[pick], midi_train, asr)})
                print(json.dumps(rows[-1]), flush=True)
        ds_eval, ref, marginal, asr = refs[dataset]
        cond, labels, midi = requests(gen, ds_eval, args)
        # a consistency model takes `--steps` evaluations; an EDM model Heun steps N, 2N - 1 evaluations
        step_list, nfe_of = ([int(s) for s in args.steps.split(",")], lambda n: n) if gen.is_consistency else \
            ([int(s) for s in args.teacher_steps.split(",")], lambda n: 2 * n - 1)
        for steps in step_list:
            for w, guide in [(float(s), g) for s in args.cfg_scales.split(",")
                             for g in ([None] if float(s) == 1 or not args.guide else args.guide)]:
                names = None if guide is None else ([] if guide == "all" else [g.strip() for g in guide.split(",")])
                t0 = time.perf_counter()
                media = gen.generate(len(labels), steps=steps, seed=args.seed, batch_size=args.batch, cond=cond,
                                     cfg_scale=w, bf16=args.bf16, guide=names)
                gen_s = time.perf_counter() - t0
                probs = classify(media, rate)
                used = gen.options(guide=names).guide  # the names this row was guided towards ([]: all)
                row = {"model": label, "steps": steps, "cfg_scale": w, "nfe": nfe_of(steps) * (1 if w == 1 else 2),
                       **({"guide": ",".join(used) or "all"} if w != 1 else {}),
                       "generate_s": round(gen_s, 1), **scores(probs, rate, ref["embed"], head, marginal, labels,
                                                                media, midi, asr)}
                rows.append(row)
                print(json.dumps(row), flush=True)
        if args.unconditional:
            media = gen.generate(len(labels), steps=1, seed=args.seed, batch_size=args.batch, bf16=args.bf16)
            rows.append({"model": f"{label} (no condition)", "steps": 1, "nfe": 1,
                         **scores(classify(media, rate), rate, ref["embed"], head, marginal, None)})
            print(json.dumps(rows[-1]), flush=True)
    print(to_markdown(rows))
    if args.json:
        write_json(args.json, rows)
        print(f"wrote {args.json}")
    return 0


def to_markdown(rows: list[dict]) -> str:
    pitch = any("pitch_accuracy" in r for r in rows)
    asr = any("asr_accuracy" in r for r in rows)
    cols = ["model", "steps", "guidance", "NFE", "accuracy"] + (["recognizer"] if asr else [])
    cols += ["pitch within 0.5 st", "octave off"] if pitch else []
    cols += ["FD (net)", "IS", "mIS", "AM", "N"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def f(v, d=3):
        return "-" if v is None else f"{v:.{d}g}" if isinstance(v, float) else str(v)

    for r in rows:
        scale = f(r.get("cfg_scale")) + (f" ({r['guide']})" if r.get("guide") not in (None, "all") else "")
        cells = [r["model"], f(r.get("steps")), scale, f(r.get("nfe")), f(r.get("accuracy"))]
        if asr:
            cells.append(f(r.get("asr_accuracy")))
        if pitch:
            cells += [f(r.get("pitch_accuracy")), f(r.get("octave_errors"))]
        cells += [f(r["fd"]), f(r["is"]), f(r["mis"]), f(r.get("am")), str(r["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
