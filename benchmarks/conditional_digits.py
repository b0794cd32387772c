"""Class-conditional digits: does a one-step sample show the digit that was asked for, and at what FD?

    python benchmarks/conditional_digits.py --uncond image --cond runs/digits_class_ict \
        --teacher runs/digits_class_edm --student runs/digits_class_cd --json benchmarks/results/conditional_digits/conditional_digits.json

For each model and guidance scale w (classifier-free, Ho & Salimans 2022: w = 0 unconditional, 1 plain
conditional, > 1 guided), `--per-class` samples of each digit 0-9 are generated from the same seeds and scored:
  - accuracy: the share classified as the requested digit by two classifiers trained on the real train-split
    digits, an RBF SVM (as benchmarks/digits_quality.py) and the shipped feature net's head (modalities/image); the
    stricter of the two is `acc_strict`; the real held-out digits' accuracy is the reference row;
  - FD / KID on the bench's hand-crafted features and FD on the feature net's embedding (`net_fd`), against the
    180 held-out real digits (FD is biased at this N: compare rows, and the real train split's own row).
NFE counts network evaluations per sample (guidance doubles them, except for the guided-distilled student).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits
from sklearn.svm import SVC

import cm_media
from cm_media.eval import bench
from modalities.image.feature_net import load_feature_net

HOLDOUT = 180  # the image modality's eval split: the last 10% of scikit-learn's digits


def svm() -> CalibratedClassifierCV:
    d = load_digits()
    n = len(d.images) - HOLDOUT
    return CalibratedClassifierCV(SVC(gamma=0.02, random_state=0), ensemble=False).fit(d.data[:n] / 16.0, d.target[:n])


def accuracies(clf, images: torch.Tensor, labels: np.ndarray) -> dict:
    """images [N, 1, 8, 8] in [0, 1] -> accuracy of both classifiers against the requested labels."""
    pix = images.reshape(len(images), -1).clamp(0, 1).numpy()
    acc_svm = float((clf.predict(pix) == labels).mean())
    with torch.no_grad():
        acc_net = float((load_feature_net()(images.clamp(0, 1)).argmax(1).numpy() == labels).mean())
    return {"acc_svm": round(acc_svm, 4), "acc_net": round(acc_net, 4), "acc_strict": round(min(acc_svm, acc_net), 4)}


def row(name, gen, ref, clf, per_class, steps, w, seed, cond=True):
    labels = np.repeat(np.arange(10), per_class)
    t0 = time.perf_counter()
    request = {"class": [str(v) for v in labels]} if cond else None
    images = gen.generate(len(labels), steps=steps, seed=seed, cond=request, cfg_scale=w if cond else None)
    seconds = time.perf_counter() - t0
    guided = cond and w is not None and w != 1 and not gen.guided_student
    rec = {"model": name, "steps": steps, "cfg_scale": w, "nfe": steps * (2 if guided else 1) if gen.is_consistency
           else (2 * steps - 1) * (2 if guided else 1), "n": len(labels), "seconds": round(seconds, 2)}
    if cond:
        rec.update(accuracies(clf, images, labels))
    q = bench.media_quality(gen, ref, images)
    rec.update({k: round(float(v), 4) for k, v in q.items() if k in ("fd", "kid", "net_fd")})
    print(json.dumps(rec), flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uncond", default="image", help="the unconditional model to compare FD with")
    ap.add_argument("--cond", nargs="*", default=[], help="class-conditional consistency runs (iCT)")
    ap.add_argument("--teacher", default=None, help="class-conditional EDM run")
    ap.add_argument("--student", default=None, help="guided-distilled CD run")
    ap.add_argument("--scales", default="0,1,2,4")
    ap.add_argument("--steps", default="1,2")
    ap.add_argument("--teacher-steps", type=int, default=18)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    scales = [float(v) for v in args.scales.split(",")]
    steps = [int(v) for v in args.steps.split(",")]
    clf = svm()
    base = cm_media.load(args.uncond, device="cpu")
    ref = bench.reference_for(base, bench.BenchOptions(max_references=HOLDOUT), 256)
    d = load_digits()
    real = torch.tensor(d.images[-HOLDOUT:] / 16.0, dtype=torch.float32)[:, None]
    records = [{"model": "real held-out digits", "n": HOLDOUT, **accuracies(clf, real, d.target[-HOLDOUT:])}]
    train_real = torch.tensor(d.images[: len(d.images) - HOLDOUT] / 16.0, dtype=torch.float32)[:, None]
    records.append({"model": "real train split (FD floor)", "n": len(train_real),
                    **{k: round(float(v), 4) for k, v in bench.media_quality(base, ref, train_real).items()
                       if k in ("fd", "kid", "net_fd")}})
    print(json.dumps(records[0]), json.dumps(records[1]), flush=True)
    for k in steps:
        records.append(row(f"unconditional ({args.uncond})", base, ref, clf, args.per_class, k, None, args.seed, cond=False))
    for source in args.cond:
        gen = cm_media.load(source, device="cpu")
        for k in steps:
            for w in scales:
                records.append(row(source, gen, ref, clf, args.per_class, k, w, args.seed))
    if args.teacher:
        gen = cm_media.load(args.teacher, device="cpu")
        for w in scales:
            records.append(row(args.teacher, gen, ref, clf, args.per_class, args.teacher_steps, w, args.seed))
    if args.student:
        gen = cm_media.load(args.student, device="cpu")
        for k in steps:
            for w in scales:
                records.append(row(args.student, gen, ref, clf, args.per_class, k, w, args.seed))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(records, indent=1))


if __name__ == "__main__":
    main()
