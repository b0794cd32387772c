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

from cm_media.methods.base import Method, MethodConfig
from cm_media.nn import codec_losses


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


class AutoencoderTraining(Method):
    """Reconstruction training of a codec run's autoencoder."""

    name = "autoencoder"
    kind = "codec"
    Config = AutoencoderMethodConfig
    bypasses_ddp = True  # the loss calls the autoencoder itself (for its latents), not DDP's forward

    def __init__(self, cfg, model, total_steps, teacher=None, conditions=None):
        super().__init__(cfg, model, total_steps, teacher, conditions)
        self._logged: dict[str, list[float]] = {}

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
        rec, z = ae(x)
        per = c.l2 * codec_losses.l2(rec, x) + c.l1 * codec_losses.l1(rec, x)
        per = per + c.latent_l2 * z.float().square().flatten(1).mean(1)
        audio = ae.cfg.dims == 1
        if c.stft > 0:
            per = per + c.stft * codec_losses.multi_resolution_stft_loss(rec.float(), x.float())
        with torch.no_grad():
            self._track_scale(ae, z, step)
            if audio:
                self._log("lsd", codec_losses.log_spectral_distance(rec.float(), x.float()))
            else:
                self._log("psnr", codec_losses.psnr(rec.float().clamp(-c.data_range / 2, c.data_range / 2), x,
                                                    data_range=c.data_range))
        return per.view(-1, k).mean(1)  # [B]

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
