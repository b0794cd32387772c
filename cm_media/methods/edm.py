"""Diffusion denoising (Karras et al. 2022): the teacher of CD / ECT and the quality reference."""

from __future__ import annotations

from dataclasses import dataclass

from cm_media.math import losses, schedules
from cm_media.math.guidance import bind
from cm_media.methods.base import Method, MethodConfig


@dataclass
class EDMConfig(MethodConfig):
    """EDM training: ln sigma ~ N(edm_p_mean, edm_p_std^2)."""

    name: str = "edm"
    edm_p_mean: float = -1.2
    edm_p_std: float = 1.2


class EDM(Method):
    """EDM denoiser training, one noise level per sample."""

    kind = "edm"
    name = "edm"
    Config = EDMConfig

    def loss(self, model, x0, step, gen, cond=None):
        c = self.cfg
        sigma = self._local(schedules.edm_sample_sigmas(self._global(x0.shape[0]), c.edm_p_mean, c.edm_p_std, generator=gen))
        return losses.edm_loss(bind(model, cond), x0, self._noise(x0, gen), sigma.float().to(x0.device), c.sigma_data)
