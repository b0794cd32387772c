"""A spectrogram UNet that knows where frequencies are and where a requested pitch's harmonics belong.

The model tensor is the compressed complex STFT [B, 2C, F, frames] (representations.STFTCodec). A convolution
slides along frequency, so a plain UNet must learn from zero padding alone where 262 Hz is, and from a global
condition embedding where the harmonics of the requested note go: after 750 iCT steps on the notes set it still
played notes at the wrong pitch (3% within half a semitone). This backbone adds two input channels, broadcast
over the frames: the bin's frequency (-1 at 0 Hz, 1 at Nyquist), and for a class condition whose class names are
MIDI numbers (notes' `pitch`), a harmonic comb of the requested note (a bump at each harmonic, zero for "no
condition"). The network is F(x, c_noise, cond) like any backbone; the condition is also embedded as usual.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from cm_media.conditions import as_conditions
from cm_media.nn.registry import register_arch
from cm_media.nn.unet import UNet, UNetConfig


@dataclass
class SpecUNetConfig(UNetConfig):
    """UNet arguments plus the STFT the model tensor comes from (to place frequencies on its bins)."""

    sample_rate: int = 16000
    n_fft: int = 512
    freq_channel: bool = True  # a channel with each bin's frequency
    pitch_cond: str = "pitch"  # a class condition named so, with MIDI numbers as class names: a harmonic comb
    harmonics: int = 24  # comb bumps at 1..harmonics x f0 (below Nyquist)
    comb_width: float = 0.6  # bump width (standard deviation) in bins


def harmonic_comb(midi: torch.Tensor, bins: int, sample_rate: int, n_fft: int, harmonics: int,
                  width: float) -> torch.Tensor:
    """MIDI numbers [K] -> [K, bins]: max over harmonics h of exp(-(bin - h f0 / df)^2 / 2 width^2) / sqrt(h)."""
    f0 = 440.0 * 2 ** ((midi.double() - 69) / 12)  # [K]
    df = sample_rate / n_fft  # Hz per bin
    h = torch.arange(1, harmonics + 1, dtype=torch.float64)
    centers = f0[:, None] * h[None] / df  # [K, H] in bins
    k = torch.arange(bins, dtype=torch.float64)
    bumps = torch.exp(-0.5 * ((k[None, None] - centers[..., None]) / width) ** 2) / h.sqrt()[None, :, None]
    bumps = bumps * (centers < bins)[..., None]  # nothing above Nyquist
    return bumps.amax(1).float()  # [K, bins]


class SpecUNet(nn.Module):
    """F(x [B, 2C, F, frames], c_noise [B], cond) -> [B, 2C, F, frames]: a 2D UNet on x and the extra channels."""

    def __init__(self, cfg: SpecUNetConfig):
        super().__init__()
        if cfg.dims != 2:
            raise ValueError(f"arch spec_unet is for spectrograms (2 data axes), got {cfg.dims} axes")
        self.cfg = cfg
        self.pitch = None
        for c in as_conditions(cfg.cond):
            if c.name == cfg.pitch_cond and c.kind == "class":
                try:
                    midi = torch.tensor([float(v) for v in c.classes])
                except ValueError:
                    raise ValueError(f"condition {c.name!r}: spec_unet's harmonic comb needs MIDI numbers as class "
                                     f"names, got {c.classes[:3]}...") from None
                self.pitch = c.name
                self.register_buffer("midi", midi, persistent=False)  # [K]; index K = no condition
        extra = int(cfg.freq_channel) + int(self.pitch is not None)
        out = cfg.out_channels or cfg.in_channels
        self.unet = UNet(replace(cfg, in_channels=cfg.in_channels + extra, out_channels=out))
        self._combs: dict = {}

    def _comb_table(self, bins: int, device) -> torch.Tensor:
        """[K + 1, bins] combs of every pitch class, the last row zeros (no condition); cached per size/device."""
        key = (bins, str(device))
        if key not in self._combs:
            c = self.cfg
            comb = harmonic_comb(self.midi.cpu(), bins, c.sample_rate, c.n_fft, c.harmonics, c.comb_width)
            self._combs[key] = torch.cat([comb, torch.zeros(1, bins)]).to(device)
        return self._combs[key]

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        b, _, f, t = x.shape
        maps = []
        if self.cfg.freq_channel:
            freq = torch.linspace(-1, 1, f, device=x.device, dtype=x.dtype)
            maps.append(freq[None, None, :, None].expand(b, 1, f, t))
        if self.pitch is not None:
            table = self._comb_table(f, x.device)
            idx = (cond or {}).get(self.pitch)
            idx = torch.full((b,), table.shape[0] - 1, device=x.device) if idx is None else idx.to(x.device)
            maps.append(table[idx.long()].to(x.dtype)[:, None, :, None].expand(b, 1, f, t))
        h = torch.cat([x, *maps], 1) if maps else x
        if x.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        return self.unet(h, c_noise, cond)


register_arch("spec_unet", SpecUNetConfig, SpecUNet)

__all__ = ["SpecUNet", "SpecUNetConfig", "harmonic_comb"]
