"""A codec run's files, read for a learned codec (`codec.kind: latent`, `codec.path`): the autoencoder's config
from the file's header when a run config is loaded (`record_latent_codec`, so the run keeps it), and its weights
on the codec's first encode or decode (`attach_weights`), unless a latent model's checkpoint restored them.

`codec.path` is a codec run's directory (newest checkpoint, EMA weights), one of its checkpoints, its export, or a
name the modality resolves (`Modality.codec_source`, e.g. video's shipped codecs).
"""

from __future__ import annotations

from pathlib import Path

import torch

from cm_media.errors import UserError
from cm_media.nn.latent import LatentCodec
from cm_media.runs import checkpoint as ckpt

CODEC_METHOD = "autoencoder"  # the method of a codec run


def codec_file(path: str | Path) -> Path:
    """The weights file behind `codec.path`: a run directory's newest checkpoint, an export's model.safetensors,
    or the file itself."""
    p = Path(path)
    if p.is_dir():
        latest = ckpt.latest_checkpoint(p)
        if latest is not None:
            return latest
        if (p / "model.safetensors").is_file():
            return p / "model.safetensors"
        raise UserError(f"codec.path {path}: no checkpoints/step_*.safetensors or model.safetensors in that folder")
    if p.is_file():
        return p
    raise UserError(f"codec.path not found: {path} (a codec run directory, one of its checkpoints or its export; "
                    f"train one with a codec config, method.name: {CODEC_METHOD})")


def read_codec_config(path: str | Path) -> dict:
    """The run config in a codec file's header; a UserError unless it is a codec run."""
    file = codec_file(path)
    try:
        _, meta = ckpt.read_header(file)
    except UserError as exc:
        raise UserError(f"codec.path {path}: {file} is not a readable cm-media checkpoint ({exc})") from None
    cfg = meta.get("config")
    method = ((cfg or {}).get("method") or {}).get("name") if isinstance(cfg, dict) else None
    if method != CODEC_METHOD:
        raise UserError(f"codec.path {path} is not a codec run (its method is {method!r}, not {CODEC_METHOD!r})")
    return cfg


def autoencoder_arch(run_config: dict) -> dict:
    """The autoencoder's config (AutoencoderConfig keys) from a codec run's config."""
    backbone = dict(run_config.get("backbone") or {})
    if backbone.get("arch") != "autoencoder":
        raise UserError(f"a codec run's backbone.arch must be autoencoder, got {backbone.get('arch')!r}")
    return {k: v for k, v in backbone.items() if k not in ("arch", "cond", "preset")}


def latent_codec_arch(run_config: dict) -> dict:
    """What a latent model records in `codec.autoencoder`: the autoencoder's config with the channels it codes."""
    return {"in_channels": (run_config.get("codec") or {}).get("channels", 1), **autoencoder_arch(run_config)}


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The autoencoder's weights (EMA where the file has them) in float32."""
    file = codec_file(path)
    tensors, _ = ckpt.load_checkpoint(file)
    for prefix in ("ema.backbone.", "model.backbone."):
        state = ckpt.prefixed(tensors, prefix[:-1])
        if state:
            return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    raise UserError(f"{file} holds no autoencoder weights (ema.backbone.* or model.backbone.*)")


def record_latent_codec(cfg, modality) -> None:
    """A latent codec config without its autoencoder's config: read it from `codec.path` (once; the run then
    keeps it in `codec.autoencoder`). The codec run must code the same modality's pixels."""
    c = cfg.codec
    if getattr(c, "kind", None) != "latent" or getattr(c, "autoencoder", None) or not getattr(c, "path", None):
        return
    run = read_codec_config(modality.codec_source(c.path))
    if (run.get("codec") or {}).get("kind", "pixel") != "pixel" or run.get("modality") != cfg.modality:
        raise UserError(f"codec.path {c.path} is not a {cfg.modality} codec run on pixels")
    c.autoencoder = latent_codec_arch(run)


def attach_weights(codec, modality) -> None:
    """Give a latent codec the reader of its codec run's weights (read on its first use, unless restored)."""
    if isinstance(codec, LatentCodec) and codec.path:  # resolved only when read: a run or export that ships
        codec.weights_reader = lambda: read_weights(modality.codec_source(codec.path))  # its codec needs no codec run
