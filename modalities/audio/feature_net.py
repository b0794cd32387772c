"""A small audio classifier trained on the rendered real clips; its penultimate layer serves as learned features.

One network, two heads: the spoken word of `spoken_digits` (10 classes) and the instrument family of `notes`
(11 families), on a shared log-mel CNN trunk. It is trained on the train splits of both rendered sets (the test
splits, which hold out whole voices for the words, stay out) and ships as `feature_net.safetensors` beside this
file (float16, the command that made it and its held-out accuracies in the file's metadata).

It is what scores generated words and notes the way the SC09 papers do: accuracy of conditioned samples, and FD,
Inception Score, modified IS and AM score on its features and class probabilities (cm_media/eval/metrics.py).
Retrain:  python -m modalities.audio.feature_net   (renders the sets first if they are not cached)
"""

from __future__ import annotations

import argparse
import time
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from cm_media.nn.shipped import load_shipped, save_shipped

WEIGHTS = Path(__file__).with_name("feature_net.safetensors")
COMMAND = "python -m modalities.audio.feature_net"
SAMPLE_RATE = 16000
CLIP = 16000  # the network sees 1.0 s: longer clips are cut, shorter ones padded with silence
N_FFT, HOP, N_MELS = 512, 256, 48
EMBED_DIM = 96
HEADS = {"word": 10, "instrument": 11}  # spoken_digits class, notes family (spoken_digits.WORDS, notes.FAMILIES)


class AudioNet(nn.Module):
    """Waveforms [B, 1 or C, T] at 16 kHz -> peak-normalized log-mel [B, 1, 48, 63] -> 4 conv blocks -> a 96-d
    embedding -> logits per head. Peak normalization makes it blind to loudness (generated clips are often
    quieter than the data)."""

    def __init__(self, embed_dim: int = EMBED_DIM):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=N_MELS,
                                                        f_min=30.0, f_max=8000.0, power=2.0)
        widths = [1, 16, 32, 48, 64]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(i, o, 3, padding=1, bias=False), nn.BatchNorm2d(o), nn.ReLU())
            for i, o in zip(widths, widths[1:]))
        self.fc = nn.Linear(2 * widths[-1], embed_dim)
        self.heads = nn.ModuleDict({name: nn.Linear(embed_dim, n) for name, n in HEADS.items()})

    @staticmethod
    def prepare(wave: torch.Tensor) -> torch.Tensor:
        """[B, C, T] or [B, T] -> mono [B, CLIP], peak 1 (silent clips stay silent)."""
        x = wave.float()
        x = x.mean(1) if x.ndim == 3 else x
        x = F.pad(x, (0, max(0, CLIP - x.shape[-1])))[:, :CLIP]
        return x / x.abs().amax(-1, keepdim=True).clamp_min(1e-4)

    def logmel(self, x: torch.Tensor) -> torch.Tensor:
        """Mono [B, CLIP] peak 1 -> [B, 1, N_MELS, frames], about zero mean, unit scale."""
        return ((self.mel(x) + 1e-6).log10()[:, None] + 4.0) / 3.0

    def embed_logmel(self, m: torch.Tensor) -> torch.Tensor:
        h = m
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i < len(self.blocks) - 1:
                h = F.max_pool2d(h, 2)
        h = torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)  # [B, 2 * 64]
        return F.relu(self.fc(h))

    def embed(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveforms -> features [B, EMBED_DIM]."""
        return self.embed_logmel(self.logmel(self.prepare(wave)))

    def forward(self, wave: torch.Tensor) -> dict[str, torch.Tensor]:
        e = self.embed(wave)
        return {name: head(e) for name, head in self.heads.items()}


@lru_cache(maxsize=1)
def load_feature_net() -> AudioNet | None:
    """The shipped network in eval mode (float32), or None when the weights file is missing."""
    return load_shipped(AudioNet, WEIGHTS, strict=False)  # the mel filterbank is rebuilt, not stored


def resample_to_net(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """[B, C, T] at `sample_rate` -> 16 kHz."""
    if int(sample_rate) == SAMPLE_RATE:
        return wave
    return torchaudio.functional.resample(wave.float(), int(sample_rate), SAMPLE_RATE)


@torch.no_grad()
def classify(wave: torch.Tensor, sample_rate: int = SAMPLE_RATE, batch: int = 256) -> dict[str, torch.Tensor]:
    """Waveforms [B, C, T] -> {"embed": [B, 96], "word": [B, 10] probabilities, "instrument": [B, 11]}."""
    net = load_feature_net()
    if net is None:
        raise FileNotFoundError(f"the audio classifier's weights are missing ({WEIGHTS}); run {COMMAND}")
    wave = resample_to_net(wave.cpu(), sample_rate)
    parts: dict[str, list] = {"embed": [], **{k: [] for k in HEADS}}
    for i in range(0, len(wave), batch):
        e = net.embed(wave[i: i + batch])
        parts["embed"].append(e)
        for name, head in net.heads.items():
            parts[name].append(head(e).softmax(-1))
    return {k: torch.cat(v) for k, v in parts.items()}


# ---------------------------------------------------------------- training


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mono clips [B, T] in a batch: speed perturbation (resampled by 0.85-1.18 in four groups: pitch, formants
    and tempo move together, like another speaker), random shift (+-120 ms, silence filled), a random gain, and
    noise at 15-60 dB below the clip's peak half the time (so generated clips with a noise floor are still heard)."""
    b, t = x.shape
    groups = []
    for part in x.split(max(1, -(-b // 4))):
        factor = float(0.85 + 0.33 * torch.rand((), generator=gen))
        y = F.interpolate(part[:, None], scale_factor=factor, mode="linear", align_corners=False)[:, 0]
        groups.append(F.pad(y, (0, max(0, t - y.shape[-1])))[:, :t])
    x = torch.cat(groups)
    shifts = torch.randint(-1920, 1921, (b,), generator=gen)
    idx = torch.arange(t)[None] - shifts[:, None]
    x = torch.where((idx >= 0) & (idx < t), x.gather(1, idx.clamp(0, t - 1)), torch.zeros(()))
    x = x * (0.3 + 0.7 * torch.rand(b, 1, generator=gen))
    level = 10 ** (-(15 + 45 * torch.rand(b, 1, generator=gen)) / 20) * x.abs().amax(1, keepdim=True)
    noisy = torch.rand(b, 1, generator=gen) < 0.5
    return x + noisy * level * torch.randn(b, t, generator=gen)


def load_sets(small: bool = False) -> dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """{"word": {"train": (waves [N, T], labels), "test": ...}, "instrument": {...}} from the rendered sets."""
    from .notes import Notes
    from .spoken_digits import SpokenDigits

    out: dict = {"word": {}, "instrument": {}}
    for split in ("train", "test"):
        d = SpokenDigits(split=split, small=small)
        out["word"][split] = (d.get_waveforms(torch.arange(len(d)))[:, 0], d.labels)
        n = Notes(split=split, small=small)
        out["instrument"][split] = (n.get_waveforms(torch.arange(len(n)))[:, 0], n.instruments)
    return out


@torch.no_grad()
def accuracies(net: AudioNet, sets: dict, split: str = "test") -> dict[str, float]:
    net.eval()
    out = {}
    for head, parts in sets.items():
        x, y = parts[split]
        pred = torch.cat([net(x[i: i + 256][:, None])[head].argmax(1) for i in range(0, len(x), 256)])
        out[head] = float((pred == y).float().mean())
    return out


def train_feature_net(epochs: int = 16, seed: int = 0, small: bool = False, log=print) -> tuple[AudioNet, dict]:
    """Train both heads on the train splits (a batch of each set per step); returns (net, test accuracies)."""
    torch.manual_seed(seed)
    torch.set_num_threads(1)  # small and deterministic; fast enough single-threaded
    gen = torch.Generator().manual_seed(seed)
    sets = load_sets(small)
    net = AudioNet()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-3)
    batch = 64
    per_epoch = max(len(p["train"][0]) for p in sets.values()) // batch + 1
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * per_epoch, pct_start=0.15)
    t0 = time.perf_counter()
    for epoch in range(epochs):
        net.train()
        orders = {h: torch.randperm(len(p["train"][0]), generator=gen) for h, p in sets.items()}
        for step in range(per_epoch):
            loss = 0.0
            for head, parts in sets.items():
                x, y = parts["train"]
                order = orders[head]
                idx = order[(step * batch) % len(order):][:batch]
                logits = net(_augment(x[idx], gen)[:, None])[head]
                loss = loss + F.cross_entropy(logits, y[idx], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        acc = accuracies(net, sets)
        log(f"epoch {epoch + 1}/{epochs}: loss {float(loss.detach()):.3f}, held-out accuracy "
            + ", ".join(f"{k} {v:.3f}" for k, v in acc.items()) + f" ({time.perf_counter() - t0:.0f} s)")
    return net.eval(), accuracies(net, sets)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--small", action="store_true", help="train on the small test renders (a smoke test)")
    p.add_argument("--out", default=str(WEIGHTS))
    args = p.parse_args(argv)
    net, acc = train_feature_net(args.epochs, args.seed, args.small)
    command = COMMAND + "".join(f" --{k} {v}" for k, v, d in (("epochs", args.epochs, 16), ("seed", args.seed, 0))
                                if v != d) + (" --small" if args.small else "")
    meta = {"command": command, "epochs": str(args.epochs), "seed": str(args.seed),
            **{f"test_accuracy_{k}": f"{v:.4f}" for k, v in acc.items()}}
    state = {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()
             if not k.startswith("mel.")}
    save_shipped(state, args.out, meta)
    print(f"held-out accuracy {acc}; wrote {args.out} ({Path(args.out).stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
