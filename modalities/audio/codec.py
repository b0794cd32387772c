"""Model-space representations of waveforms [B, C, T]: the waveform itself, a compressed complex STFT, log-mel.

Each is a codec: `encode(media) -> model tensor`, `decode(model) -> media`, with `channels` and `dims`
describing the model tensor. `frames(samples)` and `samples(frames)` convert between the time axes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torchaudio.functional as AF
import torchaudio.transforms as AT

from cm_media.errors import UserError

REPRESENTATIONS = ("waveform", "stft", "mel")


@dataclass
class AudioCodecConfig:
    sample_rate: int = 16000  # Hz of the model; files are resampled to it
    channels: int = 1  # 1 mono, 2 stereo
    representation: str = "waveform"  # waveform | stft | mel
    normalize: str = "peak"  # peak | loudness | none (applied to each clip read from files)
    peak: float = 0.9  # peak after normalization
    loudness_db: float = -20.0  # RMS level in dBFS for normalize: loudness
    wave_scale: float = 1.0  # waveform: model tensor = scale * waveform
    n_fft: int = 256  # stft / mel window
    hop: int = 128  # stft / mel hop in samples
    compress: float = 0.5  # stft: the exponent a in |X|^a e^{i phase}
    spec_scale: float = 0.3  # stft: model tensor = scale * |X|^a e^{i phase}
    drop_nyquist: bool = True  # stft: drop the Nyquist bin so F = n_fft/2 divides the UNet strides
    n_mels: int = 40  # mel bands (more than ~n_fft/6 leaves the lowest filters empty)
    mel_floor: float = 1e-5  # mel: log(max(mel, floor))
    griffin_lim_iters: int = 32  # mel decoding


class WaveformCodec:
    """Identity up to a gain: [B, C, T] waveform <-> [B, C, T] model tensor."""

    dims = 1

    def __init__(self, cfg: AudioCodecConfig):
        self.cfg = cfg
        self.channels = cfg.channels

    def frames(self, samples: int) -> int:
        return samples

    def samples(self, frames: int) -> int:
        return frames

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        return media * self.cfg.wave_scale if self.cfg.wave_scale != 1 else media

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.cfg.wave_scale if self.cfg.wave_scale != 1 else x


class _FramedCodec:
    """Shared STFT framing: centred Hann windows, `frames = 1 + ceil(samples / hop)`."""

    def __init__(self, cfg: AudioCodecConfig):
        if cfg.n_fft < 4 or cfg.n_fft % 2:
            raise UserError(f"codec.n_fft must be an even number >= 4, got {cfg.n_fft}")
        if not 0 < cfg.hop <= cfg.n_fft // 2:
            raise UserError(f"codec.hop must be between 1 and n_fft/2 = {cfg.n_fft // 2}, got {cfg.hop}")
        self.cfg = cfg
        self.window = torch.hann_window(cfg.n_fft)

    def frames(self, samples: int) -> int:
        return 1 + math.ceil(samples / self.cfg.hop)

    def samples(self, frames: int) -> int:
        return (frames - 1) * self.cfg.hop

    def _pad_to_hop(self, wav: torch.Tensor) -> torch.Tensor:
        extra = (-wav.shape[-1]) % self.cfg.hop
        return torch.nn.functional.pad(wav, (0, extra)) if extra else wav

    def stft(self, wav: torch.Tensor) -> torch.Tensor:
        """[B, C, T] -> complex [B, C, n_fft/2 + 1, frames]."""
        b, c, _ = wav.shape
        wav = self._pad_to_hop(wav.float())
        spec = torch.stft(wav.reshape(b * c, -1), self.cfg.n_fft, self.cfg.hop, window=self.window.to(wav.device),
                          center=True, return_complex=True)
        return spec.reshape(b, c, *spec.shape[-2:])

    def istft(self, spec: torch.Tensor) -> torch.Tensor:
        """complex [B, C, n_fft/2 + 1, frames] -> [B, C, (frames - 1) * hop]."""
        b, c, f, t = spec.shape
        wav = torch.istft(spec.reshape(b * c, f, t), self.cfg.n_fft, self.cfg.hop,
                          window=self.window.to(spec.device), center=True, length=self.samples(t))
        return wav.reshape(b, c, -1)


class STFTCodec(_FramedCodec):
    """Compressed complex STFT (|X|^a e^{i phase}, real and imaginary parts as channels), inverted exactly by iSTFT.

    Model tensor [B, 2C, F, frames] with channels ordered (re_0, im_0, re_1, im_1, ...).
    """

    dims = 2

    def __init__(self, cfg: AudioCodecConfig):
        super().__init__(cfg)
        if not 0 < cfg.compress <= 1:
            raise UserError(f"codec.compress must be in (0, 1], got {cfg.compress}")
        self.channels = 2 * cfg.channels
        self.bins = cfg.n_fft // 2 + (0 if cfg.drop_nyquist else 1)

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        spec = self.stft(media)[:, :, : self.bins]  # [B, C, F, T] complex
        mag = spec.abs()
        spec = spec * (mag.clamp_min(1e-12).pow(self.cfg.compress - 1) * self.cfg.spec_scale)
        x = torch.view_as_real(spec)  # [B, C, F, T, 2]
        return x.permute(0, 1, 4, 2, 3).flatten(1, 2).contiguous()  # [B, 2C, F, T]

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        b, c2, f, t = x.shape
        x = x.float().reshape(b, c2 // 2, 2, f, t).permute(0, 1, 3, 4, 2).contiguous()  # [B, C, F, T, 2]
        spec = torch.view_as_complex(x) / self.cfg.spec_scale
        mag = spec.abs()
        spec = spec * mag.clamp_min(1e-12).pow(1 / self.cfg.compress - 1)
        if self.cfg.drop_nyquist:
            spec = torch.nn.functional.pad(spec, (0, 0, 0, 1))  # zero Nyquist bin
        return self.istft(spec)


class MelCodec(_FramedCodec):
    """Log-mel magnitude [B, C, n_mels, frames] scaled to about [-1, 1]; decoded by Griffin-Lim (lossy)."""

    dims = 2

    def __init__(self, cfg: AudioCodecConfig):
        super().__init__(cfg)
        self.channels = cfg.channels
        self.mel = AT.MelSpectrogram(cfg.sample_rate, n_fft=cfg.n_fft, hop_length=cfg.hop, n_mels=cfg.n_mels,
                                     power=1.0, center=True)
        # least-squares inverse of the filterbank (mel = fb^T @ |X|), computed once; robust to empty filters
        self.inverse_fb = torch.linalg.pinv(self.mel.mel_scale.fb.T)  # [F, n_mels]
        # magnitudes are divided by gain = n_fft/4 (a unit sine's Hann-window peak), so a full-scale tone sits
        # near 1 for any n_fft; log(floor) -> -1 and log(4) -> +1
        self.gain = cfg.n_fft / 4
        self.lo, self.hi = math.log(cfg.mel_floor), math.log(4.0)

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        mel = self.mel.to(media.device)(self._pad_to_hop(media.float())) / self.gain  # [B, C, n_mels, T]
        logmel = mel.clamp_min(self.cfg.mel_floor).log()
        return (logmel - self.lo) / (self.hi - self.lo) * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        b, c, m, t = x.shape
        # x = 1 is a magnitude of 4 (a full-scale sine sits near 0.8): larger model outputs are clipped there
        mel = ((x.float().clamp(-1, 1) + 1) / 2 * (self.hi - self.lo) + self.lo).exp() * self.gain
        mag = (self.inverse_fb.to(x.device) @ mel.reshape(b * c, m, t)).clamp_min(0)  # [B*C, F, T]
        k = self.cfg
        wav = AF.griffinlim(mag, self.window.to(x.device), k.n_fft, k.hop, k.n_fft, 1.0, k.griffin_lim_iters,
                            0.99, self.samples(t), True)  # [B*C, samples]
        return wav.reshape(b, c, -1)


def build_codec(cfg: AudioCodecConfig):
    if cfg.representation not in REPRESENTATIONS:
        raise UserError(f"unknown codec.representation {cfg.representation!r} ({', '.join(REPRESENTATIONS)})")
    if cfg.channels < 1:
        raise UserError(f"codec.channels must be >= 1, got {cfg.channels}")
    if cfg.sample_rate < 1000:
        raise UserError(f"codec.sample_rate must be at least 1000 Hz, got {cfg.sample_rate}")
    return {"waveform": WaveformCodec, "stft": STFTCodec, "mel": MelCodec}[cfg.representation](cfg)
