"""Preconditioning that turns a bare backbone F into an EDM denoiser, a consistency function, a TrigFlow consistency
function or a MeanFlow average velocity.

EDM (Karras et al. 2022, table 1), the consistency boundary condition f(x, sigma_min) = x (Song et al. 2023, eq. 3
with the sigma - sigma_min shift of appendix C), TrigFlow (Lu & Song 2024, sCM) and MeanFlow (Geng et al. 2025).
Every kind answers `model(x, sigma, cond)` with an x0 estimate of x = x0 + sigma z, so the consistency samplers and
zero-shot editing work with all of them; the TrigFlow and MeanFlow kinds add their native functions
(`trigflow_velocity`, `average_velocity`) that their training methods and samplers use.
"""

from __future__ import annotations

import torch
from torch import nn

from cm_media.conditions import INTERVAL
from cm_media.math.streams import per_element

KINDS = ("edm", "consistency", "trigflow", "meanflow")  # and "codec": a codec run's autoencoder (CodecNet)


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
    The "trigflow" and "meanflow" kinds are the subclasses below; math/kinds.py picks the network of a kind.
    """

    def __init__(self, backbone: nn.Module, kind: str = "consistency", sigma_data: float = 0.5, sigma_min: float = 0.002,
                 time_scale: float = 1.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown parameterization {kind!r}")
        self.backbone = backbone
        self.kind = kind
        self.sigma_data = sigma_data
        self.sigma_min = sigma_min
        # multiplies c_noise: the backbones' sinusoids run up to 1000 rad per unit c_noise, fine for networks trained
        # without derivatives in time; JVP methods trained from scratch (sCT, MeanFlow) take 1e-3 (see below)
        self.time_scale = time_scale

    def scalings(self, sigma: torch.Tensor):
        if self.kind != "consistency":  # edm, and trigflow (an EDM denoiser read in TrigFlow time, see below)
            return edm_scalings(sigma, self.sigma_data)
        return consistency_scalings(sigma, self.sigma_data, self.sigma_min)

    def forward(self, x: torch.Tensor, sigma, cond: dict | None = None) -> torch.Tensor:
        """x [B, C, *axes], sigma [B], a number, or [B, S] per stream of a multi-stream backbone (math/streams.py),
        cond {name: [B] or [B, D]} or None -> [B, C, *axes]."""
        x = x.float()
        if not torch.is_tensor(sigma) or sigma.ndim == 0:
            sigma = torch.full((x.shape[0],), float(sigma), device=x.device)
        sigma = sigma.to(device=x.device, dtype=torch.float32)
        if sigma.ndim == 2 and self.kind in ("trigflow", "meanflow"):
            raise ValueError(f"per-stream noise levels need the consistency or edm kind, not {self.kind}")
        sizes = getattr(self.backbone, "stream_sizes", None)
        c_skip, c_out, c_in = (per_element(c, x, sizes) for c in self.scalings(sigma))
        c_noise = noise_conditioning(sigma) * self.time_scale
        out = (self.backbone(c_in * x, c_noise) if cond is None else self.backbone(c_in * x, c_noise, cond)).float()
        with torch.autocast(device_type=x.device.type, enabled=False):
            return c_skip * x + c_out * out


def _time_vector(t, x: torch.Tensor) -> torch.Tensor:
    """A time (number or [B] / [] tensor) as a float32 [B] tensor on x's device."""
    if not torch.is_tensor(t) or t.ndim == 0:
        return torch.full((x.shape[0],), float(t), device=x.device)
    return t.to(device=x.device, dtype=torch.float32)


class TrigFlow(Preconditioned):
    """TrigFlow (Lu & Song 2024, sCM): x_t = cos(t) x0 + sin(t) z with z ~ N(0, sd^2 I), t in [0, pi/2], and the
    consistency function f(x_t, t) = cos(t) x_t - sin(t) sd F(x_t / sd, t).

    F is the EDM-preconditioned backbone read in TrigFlow time: F(x_t, t) = -backbone(x_t / sd, ln(sd tan t) / 4).
    With sigma = sd tan t and x = x_t / cos t (the EDM noisy point), EDM's c_in x = x_t / sd, c_skip = cos^2 t,
    c_out = sd sin t, so f(x_t, t) = D_edm(x, sigma) exactly: an EDM teacher's weights are a TrigFlow network
    with the same time input (sCD starts from them), `forward(x, sigma)` is the EDM denoiser formula, and the
    boundary condition f(x, 0) = x holds exactly. Under the sCM tangent (scaled by cos t sin t) the time input's
    derivative is the constant 1/4 (times `time_scale`). sCT from scratch takes time_scale 1e-3, which keeps the
    sinusoids' derivatives in t small (sCM's finding: high-frequency time embeddings destabilize the tangent);
    sCD keeps 1, its EDM teacher's input."""

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002, time_scale: float = 1.0):
        super().__init__(backbone, "trigflow", sigma_data, sigma_min, time_scale)

    def trigflow_velocity(self, x_t: torch.Tensor, t, cond: dict | None = None) -> torch.Tensor:
        """F(x_t, t): sd F is the model's PF-ODE velocity dx_t/dt at t (a consistency model's F_theta)."""
        t = _time_vector(t, x_t)
        c_noise = torch.log(self.sigma_data * torch.tan(t)) / 4 * self.time_scale
        x_in = x_t.float() / self.sigma_data
        out = self.backbone(x_in, c_noise) if cond is None else self.backbone(x_in, c_noise, cond)
        return -out.float()

    def trigflow_consistency(self, x_t: torch.Tensor, t, cond: dict | None = None) -> torch.Tensor:
        """f(x_t, t) = cos(t) x_t - sin(t) sd F(x_t, t) (the x0 estimate in TrigFlow time)."""
        t = _time_vector(t, x_t)
        c, s = (append_dims(v, x_t.ndim) for v in (torch.cos(t), torch.sin(t)))
        return c * x_t.float() - s * self.sigma_data * self.trigflow_velocity(x_t, t, cond)


class MeanFlowNet(Preconditioned):
    """MeanFlow (Geng et al. 2025): on the flow path z_t = (1 - t) x0 + t e (t in [0, 1]) the backbone predicts the
    average velocity u(z_t, r, t) = 1/(t - r) int_r^t v(z_s, s) ds, so z_r = z_t - (t - r) u(z_t, r, t).

    The backbone sees c_noise = t / 1000 and the interval (t - r) / 100 as the scalar condition `interval`
    (cm_media.conditions, added by the meanflow method to the run's conditions), so every backbone takes both times
    unchanged.
    `forward(x, sigma)` is the x0 estimate z_t - t u(z_t, 0, t) at t = sigma / (1 + sigma), z_t = x / (1 + sigma)."""

    # the backbones' sinusoids run up to 1000 rad per unit c_noise (ScalarEmbedding: 100 per unit); feeding t / 1000
    # and (t - r) / 100 puts t and t - r at frequencies up to 1 rad per unit, as the authors' DiT embeds them: a
    # smooth time input keeps du/dt, the JVP in the target, free of high-frequency noise (measured on digits, tiny
    # UNet: the unweighted loss fell 110 -> 56 in 300 steps with it, and stalled near 90-100 without)
    interval_scale = 1e-2

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002, time_scale: float = 1e-3):
        super().__init__(backbone, "meanflow", sigma_data, sigma_min, time_scale)

    def average_velocity(self, z: torch.Tensor, r, t, cond: dict | None = None) -> torch.Tensor:
        """u(z, r, t) for z [B, C, *axes], r and t [B] (or numbers) with r <= t."""
        t, r = _time_vector(t, z), _time_vector(r, z)
        cond = {**(cond or {}), INTERVAL: (t - r) * self.interval_scale}
        return self.backbone(z.float(), t * self.time_scale, cond).float()

    def forward(self, x: torch.Tensor, sigma, cond: dict | None = None) -> torch.Tensor:
        sigma = _time_vector(sigma, x)
        t = sigma / (1 + sigma)
        z = x.float() / append_dims(1 + sigma, x.ndim)
        u = self.average_velocity(z, torch.zeros_like(t), t, cond)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return z - append_dims(t, x.ndim) * u


class CodecNet(nn.Module):
    """The network of a codec run (`kind="codec"`): its backbone is an autoencoder `backbone(x) -> (x_rec, z)`, and
    `model(x, ...)` is the reconstruction of x (noise levels and conditions do not apply). It is no generator:
    `cm_media.load` refuses it; a latent model names the run in `codec.path` instead."""

    kind = "codec"

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor, sigma=None, cond: dict | None = None) -> torch.Tensor:
        return self.backbone(x)[0]


def trigflow_time(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """TrigFlow time of an EDM noise level: t = arctan(sigma / sd)."""
    return torch.atan2(sigma, torch.full_like(sigma, sigma_data))


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM loss weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2
