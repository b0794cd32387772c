"""`cm-media export --codec`: a latent model with its codec's decoder replaced, keeping the encoder.

A codec run that trained only its decoder or temporal blocks from the model's codec (`method.train_part`
decoder or temporal, cm_media/methods/autoencoder.py) codes the same latent space: same encoder weights, same
latent scale. A model trained on the old codec's latents then decodes through the new decoder unchanged. The
swap checks exactly that, tensor by tensor, and refuses any other codec.
"""

from __future__ import annotations

import torch

from cm_media.errors import UserError
from cm_media.runs import checkpoint as ckpt
from cm_media.runs.codec_runs import latent_codec_arch, read_codec_config, read_weights

SHARED = ("encoder.", "latent_scale")  # what must not change: the latent space


def swap_codec(raw: dict, tensors: dict[str, torch.Tensor], source: str, modality) -> tuple[dict, dict]:
    """(config, tensors) of a latent model checkpoint with its codec replaced by the codec run or export `source`."""
    codec = dict(raw.get("codec") or {})
    if codec.get("kind") != "latent":
        raise UserError("--codec: this model has no learned codec to replace (its codec.kind is "
                        f"{codec.get('kind', 'pixel')!r}, not latent)")
    path = modality.codec_source(source)
    run = read_codec_config(path)
    arch = latent_codec_arch(run)
    old_arch = dict(codec.get("autoencoder") or {})
    keys = sorted((set(arch) | set(old_arch)) - {"temporal_blocks", "temporal_width"})
    differ = [k for k in keys if k in arch and k in old_arch and arch[k] != old_arch[k]]
    if differ:
        raise UserError(f"--codec {source}: its autoencoder differs from the model's in {', '.join(differ)}")
    new = read_weights(path)
    old = ckpt.prefixed(tensors, "codec.ae")
    shared = [k for k in old if k.startswith(SHARED)]
    changed = [k for k in shared if k not in new or not torch.equal(old[k].float(), new[k].float())]
    if not shared or changed:
        raise UserError(f"--codec {source}: its encoder is not the model's ({(changed or ['no encoder'])[0]} differs), "
                        "so the model's latents would decode to something else; use a codec trained from the model's "
                        "codec with method.train_part decoder or temporal")
    out = {k: v for k, v in tensors.items() if not k.startswith("codec.")}
    out.update(ckpt.with_prefix(ckpt.with_prefix(new, "ae"), "codec"))
    codec.update(path=str(source), autoencoder=arch)
    return {**raw, "codec": codec}, out
