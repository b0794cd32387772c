"""A trained autoencoder as a codec (`codec.kind: latent`): media <-> scaled latents.

The autoencoder comes from a codec run (`method.name: autoencoder`, see cm_media/methods/autoencoder.py) named
by `codec.path`. Its files are read by cm_media/runs/codec_runs.py: the config when the run config is loaded,
the weights through `weights_reader` on the first encode/decode, unless they were restored before
(`load_state_dict`: a latent model's checkpoints and exports carry its codec's weights as `codec.*` tensors),
so generation never needs the codec run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cm_media.errors import UserError

from .autoencoder import Autoencoder, AutoencoderConfig


class LatentCodec(nn.Module):
    """media -> autoencoder input (media * in_scale + in_shift) -> scaled latents [B, latent_channels, ...], and
    back (decoded output mapped to media, clamped to `clamp` if given).

    `latent_scale` (a number) replaces the scale fitted by the codec run."""

    def __init__(self, arch: dict, path: str | None, latent_scale: float | None = None, in_scale: float = 1.0,
                 in_shift: float = 0.0, clamp: tuple[float, float] | None = None):
        super().__init__()
        try:
            self.ae = Autoencoder(AutoencoderConfig(**arch))
        except (TypeError, ValueError) as exc:
            raise UserError(f"bad autoencoder config of the latent codec: {exc}") from None
        self.path, self.fixed_scale = path, latent_scale
        self.in_scale, self.in_shift, self.clamp = in_scale, in_shift, clamp
        self.channels = self.ae.cfg.latent_channels
        self.factor = self.ae.factor
        self.weights_reader: Callable[[], dict[str, torch.Tensor]] | None = None  # set by the assembler
        self._ready = False

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Restore the weights saved with a latent model (so codec.path is not read)."""
        out = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self._ready = True
        return out

    def ensure_weights(self) -> None:
        """Read the codec run's weights on first use (training), unless restored from a checkpoint."""
        if self._ready:
            return
        if not self.path or self.weights_reader is None:
            raise UserError("a latent codec needs codec.path (a codec run or its export) to train with")
        try:
            self.ae.load_state_dict(self.weights_reader())
        except RuntimeError as exc:
            raise UserError(f"codec weights in {self.path} do not match codec.autoencoder: "
                            f"{str(exc).splitlines()[0]}") from None
        if self.fixed_scale is not None:
            self.ae.latent_scale.fill_(float(self.fixed_scale))
        self._ready = True

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        self.ensure_weights()
        return self.ae.encode(media * self.in_scale + self.in_shift)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.ensure_weights()
        out = (self.ae.decode(z) - self.in_shift) / self.in_scale
        return out.clamp(*self.clamp) if self.clamp is not None else out
