"""How digit-like are a run's samples? A scikit-learn SVM trained on the real digits classifies them.

    python benchmarks/digits_quality.py RUN [RUN ...] [--n 512] [--steps 1,2] [--device cpu]

Reports, per run and step count: `realistic`, the share of samples whose nearest training digit is no
farther than 95% of held-out real digits' nearest training digit (a precision-style check that noise
fails), the classifier's mean top-class probability, and how many of the ten classes appear among the
realistic samples; held-out real digits and uniform noise are the reference points.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.calibration import CalibratedClassifierCV
from sklearn.datasets import load_digits
from sklearn.svm import SVC

import cm_media


def classifier() -> CalibratedClassifierCV:
    d = load_digits()
    n = len(d.images) - 180  # the image modality's holdout (last 10%) stays unseen
    clf = CalibratedClassifierCV(SVC(gamma=0.02, random_state=0), ensemble=False)
    return clf.fit(d.data[:n] / 16.0, d.target[:n])


class Reference:
    """Train-split digits for nearest-neighbour distances, and the radius that covers 95% of real held-out ones."""

    def __init__(self):
        d = load_digits()
        self.train = torch.tensor(d.data[:-180] / 16.0, dtype=torch.float32)
        self.radius = float(np.quantile(self.nn_dist(d.data[-180:] / 16.0), 0.95))

    def nn_dist(self, pixels: np.ndarray) -> np.ndarray:
        return torch.cdist(torch.tensor(pixels, dtype=torch.float32), self.train).min(1).values.numpy()


def score(clf, ref: Reference, pixels: np.ndarray) -> dict:
    """pixels [N, 64] in [0, 1] -> recognisability summary."""
    p = clf.predict_proba(pixels)
    real = ref.nn_dist(pixels) <= ref.radius
    counts = np.bincount(p.argmax(1)[real], minlength=10)
    return {
        "realistic": round(float(real.mean()), 4),
        "mean_top_prob": round(float(p.max(1).mean()), 4),
        "classes_present": int((counts >= max(1, len(pixels) // 100)).sum()),
        "class_counts": counts.tolist(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--steps", default="1,2")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tau", default="", help="also try 2-step samples with these middle sigmas, e.g. 0.5,1,2.5")
    args = ap.parse_args()
    clf, ref = classifier(), Reference()
    d = load_digits()
    rng = np.random.default_rng(0)
    rows = {"real (held out)": score(clf, ref, d.data[-180:] / 16.0),
            "noise": score(clf, ref, rng.uniform(0, 1, (args.n, 64)))}
    for run in args.runs:
        gen = cm_media.load(run, device=args.device)
        for k in [int(s) for s in args.steps.split(",")]:
            imgs = gen.generate(args.n, steps=k, seed=0)  # [N, 1, 8, 8] in [0, 1]
            if imgs.shape[-1] != 8:
                imgs = torch.nn.functional.interpolate(imgs, size=(8, 8), mode="area")
            rows[f"{run} {k}-step"] = score(clf, ref, imgs.reshape(len(imgs), -1).numpy())
        for tau in [float(t) for t in args.tau.split(",") if t]:
            gen.cfg.sample.sigmas[2] = [gen.cfg.method.sigma_max, tau]
            imgs = gen.generate(args.n, steps=2, seed=0)
            rows[f"{run} 2-step tau={tau}"] = score(clf, ref, imgs.reshape(len(imgs), -1).numpy())
    for name, r in rows.items():
        print(f"{name:50s} realistic={r['realistic']:.3f} top_prob={r['mean_top_prob']:.3f} "
              f"classes={r['classes_present']} counts={r['class_counts']}")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
