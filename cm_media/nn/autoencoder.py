"""A dims-agnostic convolutional autoencoder for learned latent codecs (video frames in 2D, waveforms in 1D).

Encoder: conv_in, then per level `num_res_blocks` residual blocks (GroupNorm, SiLU, conv) and a strided conv
between levels (kernel 2f, stride f, for a factor f per level), a middle block, and a conv to `latent_channels`.
The decoder mirrors it with transposed convs. It is deterministic (no KL sampling): `encode` multiplies by a
fixed `latent_scale` buffer (set it after training with `fit_latent_scale` so latents have unit std) and
`decode` divides it out. A 2D model takes video [B, C, T, H, W] too, coding each frame on its own; with
`temporal_blocks` a clip's latents first pass 3D-conv blocks over time (temporal_refiner.py), so neighbouring
frames decode as one scene.

Registered as the backbone arch `autoencoder`: a codec run (`method.name: autoencoder`) trains it with the
ordinary training loop, and `cm_media.nn.latent.LatentCodec` serves the trained weights as a codec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .layers import GroupNorm, conv_nd, norm_groups
from .registry import register_arch
from .temporal_refiner import TemporalRefiner

_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


@dataclass
class AutoencoderConfig:
    dims: int = 2  # data axes: 1 waveform [B, C, L], 2 image / video frames [B, C, H, W], 3 volumes
    in_channels: int = 1  # channels of the data (1 gray / mono, 3 RGB)
    channels: int = 64  # width of the first level
    channel_mult: list = field(default_factory=lambda: [1, 2, 2])  # width multiplier per level
    down: list = field(default_factory=lambda: [2, 2])  # factor between level i and i + 1 (1 or even)
    num_res_blocks: int = 1  # residual blocks per level, in the encoder and the decoder
    latent_channels: int = 4
    kernel_size: int = 3  # of the convolutions in residual blocks (odd)
    dilations: list = field(default_factory=lambda: [1])  # cycled over a level's res blocks (1D: e.g. 1, 3, 9)
    mid_blocks: int = 1  # residual blocks at the lowest resolution, each side
    cond: list = field(default_factory=list)  # as a backbone: conditions are recorded here, and must stay empty
    temporal_blocks: int = 0  # 2D codec of video: residual 3D-conv blocks over a clip's latents before decoding
    temporal_width: int = 32  # their width (temporal_refiner.py)

    def __post_init__(self):
        if self.dims not in (1, 2, 3):
            raise ValueError(f"dims must be 1, 2 or 3, got {self.dims}")
        if len(self.down) != len(self.channel_mult) - 1:
            raise ValueError(f"down needs one factor per pair of levels: {len(self.channel_mult) - 1}, "
                             f"got {len(self.down)}")
        if any(f != 1 and (f < 2 or f % 2) for f in self.down):
            raise ValueError(f"downsampling factors must be 1 or even, got {list(self.down)}")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be at least 1 (they change the width), got {self.num_res_blocks}")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")
        if self.cond:
            raise ValueError("an autoencoder takes no conditions (data.cond must be empty for a codec run)")
        if self.temporal_blocks and self.dims != 2:
            raise ValueError(f"temporal_blocks refine the latents of a 2D (per-frame) video codec, got dims {self.dims}")
        if self.temporal_blocks and self.temporal_width < 1:
            raise ValueError(f"temporal_width must be >= 1, got {self.temporal_width}")

    @property
    def factor(self) -> int:
        """Total downsampling per data axis."""
        return math.prod(self.down)


class ResBlock(nn.Module):
    """x + conv(SiLU(norm(conv(SiLU(norm(x)))))), with a 1x1 conv on the skip when the width changes."""

    def __init__(self, dims: int, cin: int, cout: int, kernel: int = 3, dilation: int = 1):
        super().__init__()
        pad = dilation * (kernel // 2)
        self.norm1 = GroupNorm(norm_groups(cin), cin)
        self.conv1 = conv_nd(dims, cin, cout, kernel, padding=pad, dilation=dilation)
        self.norm2 = GroupNorm(norm_groups(cout), cout)
        self.conv2 = conv_nd(dims, cout, cout, kernel, padding=kernel // 2)
        self.skip = conv_nd(dims, cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.norm1.modulated(x, silu=True))
        h = self.conv2(self.norm2.modulated(h, silu=True))
        return self.skip(x) + h


def _blocks(cfg: AutoencoderConfig, cin: int, cout: int, n: int) -> list[nn.Module]:
    dil = list(cfg.dilations) or [1]
    return [ResBlock(cfg.dims, cin if i == 0 else cout, cout, cfg.kernel_size, dil[i % len(dil)]) for i in range(n)]


class Encoder(nn.Module):
    """[B, C, *axes] -> [B, latent_channels, *axes / factor]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [conv_nd(cfg.dims, cfg.in_channels, widths[0], 3, padding=1)]
        for i, w in enumerate(widths):
            layers += _blocks(cfg, widths[i - 1] if i else w, w, cfg.num_res_blocks)  # width changes here
            if i < len(cfg.down):
                f = cfg.down[i]
                layers.append(conv_nd(cfg.dims, w, w, 2 * f, stride=f, padding=f // 2) if f > 1 else nn.Identity())
        layers += _blocks(cfg, widths[-1], widths[-1], cfg.mid_blocks)
        layers += [GroupNorm(norm_groups(widths[-1]), widths[-1]), nn.SiLU(),
                   conv_nd(cfg.dims, widths[-1], cfg.latent_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """[B, latent_channels, *axes] -> [B, C, *axes * factor]."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        layers: list[nn.Module] = [conv_nd(cfg.dims, cfg.latent_channels, widths[-1], 3, padding=1)]
        layers += _blocks(cfg, widths[-1], widths[-1], cfg.mid_blocks)
        for i in reversed(range(len(widths))):
            w_in = widths[i + 1] if i + 1 < len(widths) else widths[-1]
            layers += _blocks(cfg, w_in, widths[i], cfg.num_res_blocks)
            if i > 0:
                f = cfg.down[i - 1]
                layers.append(_CONV_T[cfg.dims](widths[i], widths[i], 2 * f, stride=f, padding=f // 2)
                              if f > 1 else nn.Identity())
        layers += [GroupNorm(norm_groups(widths[0]), widths[0]), nn.SiLU(),
                   conv_nd(cfg.dims, widths[0], cfg.in_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Autoencoder(nn.Module):
    """encode(x) -> z (scaled latents), decode(z) -> x; a 2D model codes video [B, C, T, H, W] frame by frame."""

    def __init__(self, cfg: AutoencoderConfig | None = None, **kwargs):
        super().__init__()
        self.cfg = cfg if cfg is not None else AutoencoderConfig(**kwargs)
        self.encoder, self.decoder = Encoder(self.cfg), Decoder(self.cfg)
        c = self.cfg
        self.temporal = TemporalRefiner(c.latent_channels, c.temporal_width, c.temporal_blocks) if c.temporal_blocks else None
        self.register_buffer("latent_scale", torch.ones(()))

    @property
    def factor(self) -> int:
        return self.cfg.factor

    def _frames(self, x: torch.Tensor) -> tuple[torch.Tensor, int | None]:
        """Fold a time axis into the batch for a 2D model: [B, C, T, H, W] -> [B*T, C, H, W]. On the CPU frames are
        laid out channels-last: oneDNN's convolutions run about 2x faster on them (same values within 1e-5)."""
        t = None
        if self.cfg.dims == 2 and x.dim() == 5:
            b, c, t, h, w = x.shape
            x = x.transpose(1, 2).reshape(b * t, c, h, w)
        elif x.dim() != self.cfg.dims + 2:
            raise ValueError(f"a {self.cfg.dims}D autoencoder takes [B, C, {self.cfg.dims} axes], got {tuple(x.shape)}")
        if x.dim() == 4 and x.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, t

    @staticmethod
    def _unfold(y: torch.Tensor, t: int | None) -> torch.Tensor:
        if t is None:
            return y
        bt, c, h, w = y.shape
        return y.reshape(bt // t, t, c, h, w).transpose(1, 2)  # [B, C, T, H, W]

    def check_size(self, x: torch.Tensor) -> None:
        bad = [n for n in x.shape[-self.cfg.dims:] if n % self.factor]
        if bad:
            raise ValueError(f"data sizes {tuple(x.shape[-self.cfg.dims:])} must be multiples of the "
                             f"autoencoder's downsampling factor {self.factor}")

    def encode_raw(self, x: torch.Tensor) -> torch.Tensor:
        """Unscaled latents (for training losses and fitting the scale)."""
        x, t = self._frames(x)
        self.check_size(x)
        return self._unfold(self.encoder(x), t)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, C, *axes] (or [B, C, T, H, W] for 2D) -> z [B, latent_channels, *axes / factor], scaled."""
        return self.encode_raw(x) * self.latent_scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_channels, *axes] (or [B, latent_channels, T, h, w] for 2D) -> x [B, C, *axes * factor]."""
        return self.decode_raw(z / self.latent_scale)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Decode unscaled latents; a clip [B, C, T, h, w] passes the temporal blocks first, if the codec has them."""
        if self.temporal is not None and z.dim() == 5:
            z = self.temporal(z)
        z, t = self._frames(z)
        return self._unfold(self.decoder(z), t)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, unscaled latents): the training pass (independent of latent_scale)."""
        z = self.encode_raw(x)
        return self.decode_raw(z), z

    @torch.no_grad()
    def fit_latent_scale(self, x: torch.Tensor) -> float:
        """Set latent_scale to 1 / std of the unscaled latents of a data batch, so encode gives unit-std latents."""
        std = self.encode_raw(x).float().std().clamp_min(1e-8)
        self.latent_scale.fill_(1.0 / float(std))
        return float(self.latent_scale)


register_arch("autoencoder", AutoencoderConfig, Autoencoder)
