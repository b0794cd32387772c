"""Audio for `cm-media edit`: read a recording at the model's rate, and `--mask` time ranges in seconds.

Infilling regenerates START:END and keeps the rest; `continue:START` regenerates from START to the end.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from cm_media.errors import UserError

from .io import audio_info, fit_channels, normalize, read_window, resample

MAX_EDIT_SECONDS = 60.0  # longest recording `cm-media edit audio` takes (the whole clip is one model input)


def read_recording(path: Path, cfg, max_seconds: float = MAX_EDIT_SECONDS) -> torch.Tensor:
    """A whole file as a waveform [1, C, T] at the config's rate, channels and level; a recording longer than
    `max_seconds` or too short for the model's framing is refused with the limit in the message."""
    c = cfg.codec
    info = audio_info(Path(path))
    if info.frames == 0:
        raise UserError(f"audio file {path} is empty")
    if info.seconds > max_seconds:
        raise UserError(f"audio file {path} is {info.seconds:.1f} s long; edit takes recordings of at most "
                        f"{max_seconds:g} s: cut out the part to edit first")
    wav, rate = read_window(Path(path), 0, info.frames)
    if wav.shape[-1] == 0:
        raise UserError(f"audio file {path} is empty")
    if not torch.isfinite(wav).all():
        raise UserError(f"audio file {path} holds non-finite samples (NaN or infinity)")
    wav = fit_channels(resample(wav, rate, c.sample_rate), c.channels)
    shortest = min_samples(cfg)
    if wav.shape[-1] < shortest:
        raise UserError(f"audio file {path} is too short to edit: {info.frames} samples at {rate} Hz "
                        f"(this model needs at least {shortest} samples at {c.sample_rate} Hz, "
                        f"{shortest / c.sample_rate * 1000:.0f} ms)")
    return normalize(wav, c.normalize, c.peak, c.loudness_db)[None]


def min_samples(cfg) -> int:
    """The shortest waveform the model's framing takes: a full STFT window (the codec's, or the backbone's own)."""
    sizes = [1]
    if cfg.codec.representation != "waveform":
        sizes.append(cfg.codec.n_fft)
    n_fft = cfg.backbone.get("n_fft") if isinstance(cfg.backbone, dict) else None
    if isinstance(n_fft, int):
        sizes.append(n_fft)
    return max(sizes)


def _seconds(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"audio --mask is START:END or continue:START in seconds, got {spec!r}") from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"audio --mask times must be finite numbers of seconds >= 0, got {spec!r}")
    return value


def time_mask(spec: str, model_shape: tuple[int, ...], cfg, codec) -> torch.Tensor:
    """'START:END' or 'continue:START' (seconds) -> mask [1, 1, *axes], 1 on the model frames to regenerate.
    The range must lie inside the input and select at least one model frame."""
    rate = cfg.codec.sample_rate
    total = model_shape[-1]
    length = codec.samples(total) / rate
    spec = spec.strip()
    if spec.startswith("continue:"):
        start, end = _seconds(spec.split(":", 1)[1], spec), None
    else:
        parts = spec.split(":")
        if len(parts) != 2:
            raise UserError(f"audio --mask is START:END or continue:START in seconds, got {spec!r}")
        start, end = _seconds(parts[0], spec), _seconds(parts[1], spec)
    if start >= length or (end is not None and end > length + 1e-6):
        raise UserError(f"audio --mask {spec} is not inside the {length:.2f} s input")
    first = codec.frames(int(round(start * rate))) if start > 0 else 0
    last = total if end is None else min(total, codec.frames(int(round(end * rate))))
    if first >= last:
        raise UserError(f"audio --mask {spec} selects nothing inside the {length:.2f} s input")
    mask = torch.zeros(1, 1, *model_shape[2:])
    mask[..., first:last] = 1
    return mask
