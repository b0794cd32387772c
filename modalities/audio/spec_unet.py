"""A spectrogram UNet that knows where frequencies are and where a requested pitch's harmonics belong.

The model tensor is the compressed complex STFT [B, 2C, F, frames] (representations.STFTCodec). A convolution
slides along frequency, so a plain UNet must learn from zero padding alone where 262 Hz is, and from a global
condition embedding where the harmonics of the requested note go: after 750 iCT steps on the notes set it still
played notes at the wrong pitch (3% within half a semitone). This backbone adds two input channels, broadcast
over the frames: the bin's frequency (-1 at 0 Hz, 1 at Nyquist), and for a class condition whose class names are
MIDI numbers (notes' `pitch`), a harmonic comb of the requested note (a bump at each harmonic, zero for "no
condition"). The network is F(x, c_noise, cond) like any backbone; the condition is also embedded as usual.

With `timbre_cond` (notes' `instrument`), a third channel shows what the requested (instrument, pitch) sounds like
on average: each harmonic's bump scaled by the training notes' mean magnitude at that harmonic, frame by frame (a
table [instruments + 1, pitches + 1, harmonics, frames] measured from the data once, `fit_to_data`, stored with the
weights). A label embedding is a weak signal the network learned to ignore at the CPU's budget (the instrument
probe, benchmarks/README.md); a picture of the expected spectrogram at the input is one it can copy.
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
    timbre_cond: str = ""  # a class condition (notes' instrument): the mean-timbre channel of (it, pitch); "" off
    timbre_frames: int = 65  # frames the timbre table covers (the training clips'); later frames get zeros


def harmonic_bumps(midi: torch.Tensor, bins: int, sample_rate: int, n_fft: int, harmonics: int,
                   width: float) -> torch.Tensor:
    """MIDI numbers [K] -> [K, H, bins]: exp(-(bin - h f0 / df)^2 / 2 width^2) for each harmonic h (zero above
    Nyquist), float64."""
    f0 = 440.0 * 2 ** ((midi.double() - 69) / 12)  # [K]
    df = sample_rate / n_fft  # Hz per bin
    h = torch.arange(1, harmonics + 1, dtype=torch.float64)
    centers = f0[:, None] * h[None] / df  # [K, H] in bins
    k = torch.arange(bins, dtype=torch.float64)
    bumps = torch.exp(-0.5 * ((k[None, None] - centers[..., None]) / width) ** 2)
    return bumps * (centers < bins)[..., None]  # [K, H, bins]


def harmonic_comb(midi: torch.Tensor, bins: int, sample_rate: int, n_fft: int, harmonics: int,
                  width: float) -> torch.Tensor:
    """MIDI numbers [K] -> [K, bins]: max over harmonics h of exp(-(bin - h f0 / df)^2 / 2 width^2) / sqrt(h)."""
    bumps = harmonic_bumps(midi, bins, sample_rate, n_fft, harmonics, width)
    h = torch.arange(1, harmonics + 1, dtype=torch.float64)
    return (bumps / h.sqrt()[None, :, None]).amax(1).float()  # [K, bins]


def harmonic_magnitudes(x: torch.Tensor, bumps: torch.Tensor) -> torch.Tensor:
    """Model tensors x [N, 2C, F, T] (compressed complex STFT) and each one's harmonic bumps [N, H, F] ->
    the bump-weighted mean magnitude at each harmonic [N, H, T] (channels averaged)."""
    mag = x.float().unflatten(1, (-1, 2)).pow(2).sum(2).sqrt().mean(1)  # [N, F, T]
    weights = bumps / bumps.sum(-1, keepdim=True).clamp_min(1e-12)  # [N, H, F]
    return torch.einsum("nhf,nft->nht", weights.float(), mag)


class SpecUNet(nn.Module):
    """F(x [B, 2C, F, frames], c_noise [B], cond) -> [B, 2C, F, frames]: a 2D UNet on x and the extra channels."""

    def __init__(self, cfg: SpecUNetConfig):
        super().__init__()
        if cfg.dims != 2:
            raise ValueError(f"arch spec_unet is for spectrograms (2 data axes), got {cfg.dims} axes")
        self.cfg = cfg
        # one complex STFT channel (real, imaginary) is one complex stream: method.magnitude_weight can weigh its
        # magnitudes (math/streams.py's layout: real parts, then imaginary)
        self.complex_streams = [True] if cfg.in_channels == 2 else None
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
        self.timbre = None
        if cfg.timbre_cond and cfg.cond:  # (built without conditions: counted as unconditional)
            found = [c for c in as_conditions(cfg.cond) if c.name == cfg.timbre_cond and c.kind == "class"]
            if not found or self.pitch is None:
                raise ValueError(f"spec_unet's timbre_cond {cfg.timbre_cond!r} needs a class condition of that name "
                                 f"and the pitch condition {cfg.pitch_cond!r}")
            self.timbre = cfg.timbre_cond  # index I / K = no condition; filled from data by fit_to_data
            self.register_buffer("timbre_table", torch.zeros(len(found[0].classes) + 1, len(self.midi) + 1,
                                                             cfg.harmonics, cfg.timbre_frames))
        extra = int(cfg.freq_channel) + int(self.pitch is not None) + int(self.timbre is not None)
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

    def _bumps(self, bins: int, device) -> torch.Tensor:
        """[K + 1, H, bins] harmonic bumps of every pitch class, the last row zeros; cached per size/device."""
        key = ("bumps", bins, str(device))
        if key not in self._combs:
            c = self.cfg
            bumps = harmonic_bumps(self.midi.cpu(), bins, c.sample_rate, c.n_fft, c.harmonics, c.comb_width).float()
            self._combs[key] = torch.cat([bumps, torch.zeros(1, *bumps.shape[1:])]).to(device)
        return self._combs[key]

    def _index(self, cond: dict | None, name: str, null: int, b: int, device) -> torch.Tensor:
        """The class indices [B] of condition `name`, or `null` ("no condition") for all when it is not given."""
        idx = (cond or {}).get(name)
        return torch.full((b,), null, device=device, dtype=torch.long) if idx is None else idx.to(device).long()

    def timbre_map(self, cond: dict | None, b: int, f: int, t: int, device) -> torch.Tensor:
        """[B, 1, F, T]: sum over harmonics h of bump_h(f) x table[instrument, pitch, h, t] (zeros past the table's
        frames and for "no pitch")."""
        table = self.timbre_table  # [I + 1, K + 1, H, Tt]
        inst = self._index(cond, self.timbre, table.shape[0] - 1, b, device)
        pitch = self._index(cond, self.pitch, table.shape[1] - 1, b, device)
        amps = table[inst, pitch]  # [B, H, Tt]
        amps = amps[..., :t] if amps.shape[-1] >= t else torch.nn.functional.pad(amps, (0, t - amps.shape[-1]))
        return torch.einsum("bhf,bht->bft", self._bumps(f, device)[pitch], amps)[:, None]

    @torch.no_grad()
    def fit_to_data(self, batches) -> None:
        """Fill the timbre table from training data: `batches` yields (x0 [N, 2C, F, T], cond) with both class
        conditions; each (instrument, pitch) cell is the mean of its notes' harmonic magnitudes, an instrument
        missing at a pitch falls back to its mean over pitches, "no instrument" is the mean over instruments."""
        if self.timbre is None:
            return
        table = self.timbre_table
        n_inst, n_pitch = table.shape[0] - 1, table.shape[1] - 1
        sums = torch.zeros(n_inst, n_pitch, *table.shape[2:], dtype=torch.float64)
        counts = torch.zeros(n_inst, n_pitch, dtype=torch.float64)
        for x0, cond in batches:
            inst, pitch = cond[self.timbre].long().cpu(), cond[self.pitch].long().cpu()
            keep = (inst < n_inst) & (pitch < n_pitch)
            x0, inst, pitch = x0[keep].cpu(), inst[keep], pitch[keep]
            frames = min(x0.shape[-1], table.shape[-1])
            amps = harmonic_magnitudes(x0[..., :frames], self._bumps(x0.shape[2], "cpu")[pitch]).double()  # [N, H, T]
            sums[..., :frames].index_put_((inst, pitch), amps, accumulate=True)
            counts.index_put_((inst, pitch), torch.ones(len(inst), dtype=torch.float64), accumulate=True)
        if not counts.any():
            raise ValueError("spec_unet.fit_to_data: no training item carries both conditions")
        cells = sums / counts.clamp_min(1)[..., None, None]
        per_inst = sums.sum(1) / counts.sum(1).clamp_min(1)[:, None, None]  # [I, H, T]
        cells = torch.where((counts > 0)[..., None, None], cells, per_inst[:, None])
        per_pitch = sums.sum(0) / counts.sum(0).clamp_min(1)[:, None, None]  # [K, H, T]: "no instrument"
        full = torch.zeros_like(table, dtype=torch.float64)
        full[:n_inst, :n_pitch], full[n_inst, :n_pitch] = cells, per_pitch
        table.copy_(full.to(table.dtype))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: dict | None = None) -> torch.Tensor:
        b, _, f, t = x.shape
        maps = []
        if self.cfg.freq_channel:
            freq = torch.linspace(-1, 1, f, device=x.device, dtype=x.dtype)
            maps.append(freq[None, None, :, None].expand(b, 1, f, t))
        if self.pitch is not None:
            table = self._comb_table(f, x.device)
            idx = self._index(cond, self.pitch, table.shape[0] - 1, b, x.device)
            maps.append(table[idx].to(x.dtype)[:, None, :, None].expand(b, 1, f, t))
        if self.timbre is not None:
            maps.append(self.timbre_map(cond, b, f, t, x.device).to(x.dtype))
        h = torch.cat([x, *maps], 1) if maps else x
        if x.is_contiguous(memory_format=torch.channels_last) and not h.is_contiguous(memory_format=torch.channels_last):
            h = h.contiguous(memory_format=torch.channels_last)
        return self.unet(h, c_noise, cond)


register_arch("spec_unet", SpecUNetConfig, SpecUNet)

__all__ = ["SpecUNet", "SpecUNetConfig", "harmonic_bumps", "harmonic_comb", "harmonic_magnitudes"]
