"""A tiny digits classifier whose penultimate layer serves as learned features for image quality metrics.

It is trained on the train split of the built-in digits data (the eval split stays held out) and ships as
`feature_net.safetensors` beside this file, with the command that made it in the file's metadata.
Retrain:  python -m modalities.image.feature_net   (about 10 s on one CPU core)
"""

from __future__ import annotations

import argparse
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cm_media.nn.shipped import load_shipped, save_shipped

from .datasets import digits_pixels, split

WEIGHTS = Path(__file__).with_name("feature_net.safetensors")
COMMAND = "python -m modalities.image.feature_net"
EMBED_DIM = 64


class DigitsNet(nn.Module):
    """8x8 grey digits -> 64-d embedding -> 10 logits."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)  # [B, 16, 8, 8]
        self.conv2 = nn.Conv2d(16, 32, 3, stride=2, padding=1)  # [B, 32, 4, 4]
        self.fc = nn.Linear(32 * 4 * 4, embed_dim)
        self.head = nn.Linear(embed_dim, 10)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels [B, 1, 8, 8] in [0, 1] -> features [B, embed_dim]."""
        h = F.relu(self.conv1(x * 2 - 1))
        h = F.relu(self.conv2(h))
        return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


@lru_cache(maxsize=1)
def load_feature_net() -> DigitsNet | None:
    """The shipped network in eval mode, or None when the weights file is missing."""
    return load_shipped(DigitsNet, WEIGHTS)


def train_feature_net(epochs: int = 40, seed: int = 0, holdout: float = 0.1) -> tuple[DigitsNet, float]:
    """Train on the digits train split with light shift augmentation; returns (net, eval-split accuracy)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # a net this small trains fastest single-threaded, and it stays deterministic
    pixels, labels = digits_pixels()  # [N, 1, 8, 8]
    tr, ev = split(len(pixels), holdout, "train"), split(len(pixels), holdout, "eval")
    x, y = pixels[tr], labels[tr]
    net = DigitsNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        for idx in torch.randperm(len(x)).split(64):
            xb = x[idx]
            shift = torch.randint(-1, 2, (2,)).tolist()  # +-1 px shifts: features robust to small offsets
            xb = torch.roll(xb, shifts=shift, dims=(2, 3))
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = float((net(pixels[ev]).argmax(1) == labels[ev]).float().mean())
    return net, acc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(WEIGHTS))
    args = p.parse_args(argv)
    net, acc = train_feature_net(args.epochs, args.seed)
    meta = {"command": COMMAND + (f" --epochs {args.epochs}" if args.epochs != 40 else "")
            + (f" --seed {args.seed}" if args.seed else ""),
            "eval_accuracy": f"{acc:.4f}", "epochs": str(args.epochs), "seed": str(args.seed)}
    save_shipped(net.state_dict(), args.out, meta)
    print(f"eval-split accuracy {acc:.3f}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
