"""Audio for `cm-media edit`: read a recording at the model's rate, and `--mask` time ranges in seconds.

Infilling regenerates START:END and keeps the rest; `continue:START` regenerates from START to the end.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cm_media.errors import UserError

from .codec import audio_info, fit_channels, normalize, read_window, resample


def read_recording(path: Path, cfg, max_seconds: float = 60.0) -> torch.Tensor:
    """The first `max_seconds` of a file as a waveform [1, C, T] at the config's rate, channels and level."""
    c = cfg.codec
    info = audio_info(Path(path))
    wav, rate = read_window(Path(path), 0, min(info.frames, int(max_seconds * info.sample_rate)))
    if wav.shape[-1] == 0:
        raise UserError(f"audio file {path} is empty")
    wav = fit_channels(resample(wav, rate, c.sample_rate), c.channels)
    return normalize(wav, c.normalize, c.peak, c.loudness_db)[None]


def time_mask(spec: str, model_shape: tuple[int, ...], cfg, codec) -> torch.Tensor:
    """'START:END' or 'continue:START' (seconds) -> mask [1, 1, *axes], 1 on the model frames to regenerate."""
    rate = cfg.codec.sample_rate
    total = model_shape[-1]
    spec = spec.strip()
    try:
        if spec.startswith("continue:"):
            start, end = float(spec.split(":", 1)[1]), None
        else:
            a, b = spec.split(":")
            start, end = float(a), float(b)
    except ValueError:
        raise UserError(f"audio --mask is START:END or continue:START in seconds, got {spec!r}") from None
    first = codec.frames(int(round(start * rate))) if start > 0 else 0
    last = total if end is None else min(total, codec.frames(int(round(end * rate))))
    if start < 0 or first >= last:
        raise UserError(f"audio --mask {spec} selects nothing inside the {codec.samples(total) / rate:.2f} s input")
    mask = torch.zeros(1, 1, *model_shape[2:])
    mask[..., first:last] = 1
    return mask
