"""A trained autoencoder as a codec (`codec.kind: latent`): media <-> scaled latents.

The autoencoder comes from a codec run (`method.name: autoencoder`, see cm_media/methods/autoencoder.py) named
by `codec.path`: its run directory (newest checkpoint, EMA weights), one of its checkpoints, or its export. Only
the file's header is read to build the codec (`read_codec_config`); the weights are read on the first
encode/decode, unless they were restored before (`load_state_dict`: a latent model's checkpoints and exports
carry its codec's weights as `codec.*` tensors), so generation never needs the codec run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from cm_media.errors import UserError

from .autoencoder import Autoencoder, AutoencoderConfig

META_KEY = "cm_media"  # the metadata key of cm_media.runs.checkpoint
_STEP_FILE = re.compile(r"^step_(\d+)\.safetensors$")
CODEC_METHOD = "autoencoder"


def codec_file(path: str | Path) -> Path:
    """The weights file behind `codec.path`: a run directory's newest checkpoint, an export's model.safetensors,
    or the file itself."""
    p = Path(path)
    if p.is_dir():
        steps = sorted((int(m.group(1)), f) for f in (p / "checkpoints").glob("step_*.safetensors")
                       if (m := _STEP_FILE.match(f.name)))
        if steps:
            return steps[-1][1]
        if (p / "model.safetensors").is_file():
            return p / "model.safetensors"
        raise UserError(f"codec.path {path}: no checkpoints/step_*.safetensors or model.safetensors in that folder")
    if p.is_file():
        return p
    raise UserError(f"codec.path not found: {path} (a codec run directory, one of its checkpoints or its export; "
                    f"train one with a codec config, method.name: {CODEC_METHOD})")


def read_codec_config(path: str | Path) -> dict:
    """The run config in a codec file's metadata (its header alone); a UserError unless it is a codec run."""
    file = codec_file(path)
    try:
        with safe_open(str(file), "pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise UserError(f"codec.path {path}: {file} is not a readable cm-media checkpoint ({exc})") from None
    cfg = meta.get("config") if isinstance(meta, dict) else None
    method = ((cfg or {}).get("method") or {}).get("name")
    if method != CODEC_METHOD:
        raise UserError(f"codec.path {path} is not a codec run (its method is {method!r}, not {CODEC_METHOD!r})")
    return cfg


def autoencoder_arch(run_config: dict) -> dict:
    """The autoencoder's config (AutoencoderConfig keys) from a codec run's config."""
    backbone = dict(run_config.get("backbone") or {})
    if backbone.get("arch") != "autoencoder":
        raise UserError(f"a codec run's backbone.arch must be autoencoder, got {backbone.get('arch')!r}")
    return {k: v for k, v in backbone.items() if k not in ("arch", "cond", "preset")}


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The autoencoder's weights (EMA where the file has them) in float32."""
    file = codec_file(path)
    try:
        tensors = load_file(str(file))
    except (SafetensorError, OSError) as exc:
        raise UserError(f"cannot read codec weights {file}: {exc}") from None
    for prefix in ("ema.backbone.", "model.backbone."):
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    raise UserError(f"{file} holds no autoencoder weights (ema.backbone.* or model.backbone.*)")


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
        if not self.path:
            raise UserError("a latent codec needs codec.path (a codec run or its export) to train with")
        try:
            self.ae.load_state_dict(read_weights(self.weights_source()))
        except RuntimeError as exc:
            raise UserError(f"codec weights in {self.path} do not match codec.autoencoder: "
                            f"{str(exc).splitlines()[0]}") from None
        if self.fixed_scale is not None:
            self.ae.latent_scale.fill_(float(self.fixed_scale))
        self._ready = True

    def weights_source(self) -> str:
        """Where the weights are read from (a modality may resolve names of shipped codecs)."""
        return self.path

    def encode(self, media: torch.Tensor) -> torch.Tensor:
        self.ensure_weights()
        return self.ae.encode(media * self.in_scale + self.in_shift)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        self.ensure_weights()
        out = (self.ae.decode(z) - self.in_shift) / self.in_scale
        return out.clamp(*self.clamp) if self.clamp is not None else out
