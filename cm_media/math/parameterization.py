"""Preconditioning that turns a bare backbone F into an EDM denoiser or a consistency function.

EDM (Karras et al. 2022, table 1) and the consistency boundary condition f(x, sigma_min) = x
(Song et al. 2023, eq. 3 with the sigma - sigma_min shift of appendix C).
"""

from __future__ import annotations

import torch
from torch import nn


def append_dims(x: torch.Tensor, ndim: int) -> torch.Tensor:
    """Append trailing singleton axes so a [B] tensor broadcasts against a [B, C, *axes] one."""
    if x.ndim > ndim:
        raise ValueError(f"cannot append dims: tensor has {x.ndim} > {ndim} axes")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the batch axis: [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def edm_scalings(sigma: torch.Tensor, sigma_data: float = 0.5):
    """EDM c_skip, c_out, c_in for D(x, s) = c_skip x + c_out F(c_in x, c_noise)."""
    sd2 = sigma_data**2
    c_skip = sd2 / (sigma**2 + sd2)
    c_out = sigma * sigma_data / (sigma**2 + sd2).sqrt()
    c_in = 1 / (sigma**2 + sd2).sqrt()
    return c_skip, c_out, c_in


def consistency_scalings(sigma: torch.Tensor, sigma_data: float = 0.5, sigma_min: float = 0.002):
    """Consistency c_skip, c_out, c_in: c_skip(sigma_min) = 1 and c_out(sigma_min) = 0 exactly."""
    sd2 = sigma_data**2
    shifted = sigma - sigma_min  # exactly 0 at sigma_min in sigma's own dtype
    c_skip = sd2 / (shifted**2 + sd2)
    c_out = shifted * sigma_data / (sigma**2 + sd2).sqrt()
    c_in = 1 / (sigma**2 + sd2).sqrt()
    return c_skip, c_out, c_in


def noise_conditioning(sigma: torch.Tensor) -> torch.Tensor:
    """EDM c_noise = ln(sigma) / 4, the scalar the backbone is conditioned on."""
    return torch.log(sigma.clamp(min=1e-20)) / 4


class Preconditioned(nn.Module):
    """Wraps a backbone F(x, c_noise[, cond]) as an EDM denoiser (`kind="edm"`) or consistency function (`"consistency"`).

    The skip combination runs in float32 outside autocast, so bf16 backbones keep the boundary condition exact.
    """

    def __init__(self, backbone: nn.Module, kind: str = "consistency", sigma_data: float = 0.5, sigma_min: float = 0.002):
        super().__init__()
        if kind not in ("edm", "consistency"):
            raise ValueError(f"unknown parameterization {kind!r}")
        self.backbone = backbone
        self.kind = kind
        self.sigma_data = sigma_data
        self.sigma_min = sigma_min

    def scalings(self, sigma: torch.Tensor):
        if self.kind == "edm":
            return edm_scalings(sigma, self.sigma_data)
        return consistency_scalings(sigma, self.sigma_data, self.sigma_min)

    def forward(self, x: torch.Tensor, sigma, cond: dict | None = None) -> torch.Tensor:
        """x [B, C, *axes], sigma [B] or a number, cond {name: [B] or [B, D]} or None -> [B, C, *axes]."""
        x = x.float()
        if not torch.is_tensor(sigma) or sigma.ndim == 0:
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device)
        sigma = sigma.to(device=x.device, dtype=torch.float32)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in self.scalings(sigma))
        c_noise = noise_conditioning(sigma)
        out = (self.backbone(c_in * x, c_noise) if cond is None else self.backbone(c_in * x, c_noise, cond)).float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            return c_skip * x + c_out * out


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM loss weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
