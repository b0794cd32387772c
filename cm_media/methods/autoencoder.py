"""Training a learned codec with the ordinary training loop: `method.name: autoencoder` fits the backbone arch
`autoencoder` (cm_media/nn/autoencoder.py) to reconstruct the data.

A codec run is a run like any other (progress bar, `--resume`, checkpoints, `cm-media export`); its network is
`CodecNet` (kind "codec"), its loss a weighted sum of per-sample L2, L1, a multi-resolution STFT term for
waveforms, and a small L2 penalty on the latents (a deterministic autoencoder's stand-in for a KL term). The
autoencoder's `latent_scale` follows a running estimate of 1 / std of the latents, so the exported codec gives
unit-std latents; metrics.jsonl logs the reconstruction PSNR (images, video) or log-spectral distance (audio) of
the training batches. A consistency model then names the run (or its export) in `codec.path` with
`codec.kind: latent`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cm_media.errors import UserError
from cm_media.math.parameterization import append_dims
from cm_media.methods.base import Method, MethodConfig
from cm_media.nn import codec_losses

TRAIN_PARTS = ("all", "decoder", "temporal")


def freeze_codec_parts(ae, part: str) -> None:
    """Leave only `part` of the autoencoder trainable: all, decoder (the encoder, so the latent space and every model
    trained on it, stays as it is) or temporal (only the temporal blocks: the per-frame codec stays exactly)."""
    if part not in TRAIN_PARTS:
        raise UserError(f"method.train_part must be one of {', '.join(TRAIN_PARTS)}, got {part!r}")
    if part == "temporal" and ae.temporal is None:
        raise UserError("method.train_part temporal needs backbone.temporal_blocks >= 1")
    if part != "all":
        ae.encoder.requires_grad_(False)
    if part == "temporal":
        ae.decoder.requires_grad_(False)


@dataclass
class AutoencoderMethodConfig(MethodConfig):
    """Reconstruction loss weights (model tensors, so pixels in [-1, 1]) and how a 2D model sees video."""

    name: str = "autoencoder"
    l2: float = 1.0  # mean squared error
    l1: float = 0.1  # mean absolute error
    stft: float = 0.0  # multi-resolution STFT loss (Yamamoto et al. 2020): for waveforms [B, C, L]
    latent_l2: float = 1e-4  # mean squared latent
    frames_per_clip: int = 4  # a 2D autoencoder on video: this many random frames of each clip (0: every frame)
    scale_momentum: float = 0.02  # of the running latent std behind latent_scale
    data_range: float = 2.0  # peak-to-peak range of the model tensors, for PSNR
    latent_noise: float = 0.0  # decode latents + N(0, s^2), s ~ U[0, latent_noise] per sample (unit-std latents)
    train_part: str = "all"  # all | decoder (encoder frozen) | temporal (only the temporal blocks train)


class AutoencoderTraining(Method):
    """Reconstruction training of a codec run's autoencoder."""

    name = "autoencoder"
    kind = "codec"
    Config = AutoencoderMethodConfig
    bypasses_ddp = True  # the loss calls the autoencoder itself (for its latents), not DDP's forward

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        self._logged: dict[str, list[float]] = {}
        if cfg.latent_noise < 0:
            raise UserError(f"method.latent_noise must be >= 0, got {cfg.latent_noise}")
        ae = self.unwrap(model).backbone
        freeze_codec_parts(ae, cfg.train_part)

    @property
    def trains_encoder(self) -> bool:
        return self.cfg.train_part == "all"

    def _frames(self, x0: torch.Tensor, ae, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """Video [B, C, T, H, W] for a 2D model: k random frames per clip [B * k, C, H, W] (drawn for the global
        batch, like every random choice of a method); (x0, 1) otherwise."""
        k = self.cfg.frames_per_clip
        if ae.cfg.dims != 2 or x0.dim() != 5 or k <= 0 or k >= x0.shape[2]:
            return x0, 1
        t = self._local(torch.randint(0, x0.shape[2], (self._global(x0.shape[0]), k), generator=gen))
        picked = x0.transpose(1, 2)[torch.arange(x0.shape[0])[:, None], t.to(x0.device)]  # [B, k, C, H, W]
        return picked.flatten(0, 1), k

    def loss(self, model, x0, step, gen, cond=None):
        c = self.cfg
        ae = self.unwrap(model).backbone
        x, k = self._frames(x0, ae, gen)
        with torch.set_grad_enabled(self.trains_encoder and torch.is_grad_enabled()):
            z = ae.encode_raw(x)
        rec = ae.decode_raw(self._noisy(z, ae, gen))
        per = c.l2 * codec_losses.l2(rec, x) + c.l1 * codec_losses.l1(rec, x)
        per = per + c.latent_l2 * z.float().square().flatten(1).mean(1)
        audio = ae.cfg.dims == 1
        if c.stft > 0:
            per = per + c.stft * codec_losses.multi_resolution_stft_loss(rec.float(), x.float())
        with torch.no_grad():
            if self.trains_encoder:  # a frozen encoder keeps its scale: the latent space stays the codec's
                self._track_scale(ae, z, step)
            if audio:
                self._log("lsd", codec_losses.log_spectral_distance(rec.float(), x.float()))
            else:
                self._log("psnr", codec_losses.psnr(rec.float().clamp(-c.data_range / 2, c.data_range / 2), x,
                                                    data_range=c.data_range))
        return per.view(-1, k).mean(1)  # [B]

    def _noisy(self, z: torch.Tensor, ae, gen: torch.Generator) -> torch.Tensor:
        """Unscaled latents z plus noise of std s ~ U[0, latent_noise] per sample in the unit-std (scaled) units a
        generator works in: the decoder learns to decode a generator's imperfect latents (noise augmentation)."""
        if self.cfg.latent_noise <= 0:
            return z
        s = self._local(torch.rand(self._global(z.shape[0]), generator=gen)).to(z) * self.cfg.latent_noise
        noise = self._local(torch.randn((self._global(z.shape[0]), *z.shape[1:]), generator=gen)).to(z)
        return z + append_dims(s, z.dim()) * noise / ae.latent_scale

    def _track_scale(self, ae, z: torch.Tensor, step: int) -> None:
        """latent_scale = 1 / running std of the latents (set from the first batch); it is a buffer, so it is
        checkpointed with the weights and copied into the EMA model."""
        std = z.detach().float().std().clamp_min(1e-8)
        if step == 0:
            running = std
        else:
            running = torch.lerp(1 / ae.latent_scale.float(), std, self.cfg.scale_momentum)
        ae.latent_scale.copy_(1 / running)

    def _log(self, key: str, values: torch.Tensor) -> None:
        self._logged.setdefault(key, []).append(float(values.mean()))

    def log_values(self) -> dict:
        out = {k: round(sum(v) / len(v), 4) for k, v in self._logged.items() if v}
        self._logged = {}
        return out
