"""What a representation leaves of the real words: held-out clips through decode(encode(x)), scored by both judges.

    python benchmarks/audio_codec_ceiling.py --n 200 --json benchmarks/results/audio_on_request/codec_ceiling.json

Before training a model in another representation (issue 33: a mel-domain model decoded by Griffin-Lim), its
codec's own round trip bounds what any model in it can reach. Each row: the held-out spoken digits (voices never
trained on) encoded and decoded by one codec config, scored by the project's classifier (word accuracy, net FD
against the untouched clips) and by PocketSphinx (modalities/audio/recognizer.py). `model tensor` is the shape a
model of that representation generates per clip: its size is what a training step pays for.
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch
from _common import write_json

import cm_media
from cm_media.eval import metrics
from modalities.audio.codec import build_codec
from modalities.audio.datasets import build_dataset
from modalities.audio.feature_net import classify
from modalities.audio.recognizer import WordRecognizer

# name -> codec overrides on the bundled words model's codec (the compressed complex STFT)
CODECS = {
    "stft": {},  # the bundled words model's: n_fft 512, hop 250, |X|^0.5 e^{i phase}
    "mel40": {"representation": "mel", "n_mels": 40},  # n_fft 512, Griffin-Lim 32 iterations
    "mel64": {"representation": "mel", "n_mels": 64},
    "mel64gl16": {"representation": "mel", "n_mels": 64, "griffin_lim_iters": 16},  # decode time ~ iterations
    "mel64gl8": {"representation": "mel", "n_mels": 64, "griffin_lim_iters": 8},
    "mel80": {"representation": "mel", "n_mels": 80, "n_fft": 1024},
    "mel80gl64": {"representation": "mel", "n_mels": 80, "n_fft": 1024, "griffin_lim_iters": 64},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200, help="held-out clips (a seeded subset)")
    p.add_argument("--codecs", default=",".join(CODECS), help="comma-separated names of CODECS")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    gen = cm_media.load("spoken-digits")
    rate = gen.cfg.codec.sample_rate
    ds = build_dataset(gen.cfg, gen.codec, "eval")
    media = ds.waveforms(torch.arange(len(ds)))  # [N, 1, T]
    sub = torch.randperm(len(media), generator=torch.Generator().manual_seed(args.seed))[: args.n]
    media, labels = media[sub], ds.source.labels[sub]
    ref = classify(media, rate)
    asr = WordRecognizer(ds.source.class_names)
    rows = []
    for name in args.codecs.split(","):
        codec = build_codec(dataclasses.replace(gen.cfg.codec, **CODECS[name]))
        with torch.no_grad():
            x = codec.encode(media)  # [N, C, F, T]
            coded = codec.decode(x)[..., : media.shape[-1]].float()
        probs = classify(coded, rate)
        rows.append({"codec": name, "model_tensor": list(x.shape[1:]), "n": len(media),
                     "accuracy": (probs["word"].argmax(-1) == labels).float().mean().item(),
                     "asr_accuracy": asr.accuracy(coded, rate, labels),
                     "fd": metrics.frechet_distance(ref["embed"], probs["embed"])})
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
