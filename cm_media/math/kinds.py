"""Parameterization kinds as objects: each owns its network (the preconditioning of math/parameterization.py),
its sampler entry and its count of network evaluations (NFE), so no other module switches on the kind's name.

A kind is a `str` subclass (the name a method declares, `Method.kind`, and a network's `.kind`), so comparing it
with "edm" or "meanflow" keeps working.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cm_media.math.parameterization import CodecNet, MeanFlowNet, Preconditioned, TrigFlow
from cm_media.math.samplers import (
    edm_euler,
    edm_heun,
    edm_sigmas,
    meanflow_sample,
    meanflow_times,
    multistep,
    onestep,
)


@dataclass
class SamplePlan:
    """What a sampler entry needs besides the network: the noise range, the consistency step levels
    (`step_sigmas(steps)`, the run's custom ones for the step counts in `custom_steps`), the EDM solver, and the
    loop's generator (multistep noise)."""

    step_sigmas: Callable[[int], list[float]]
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    custom_steps: frozenset = frozenset()
    solver: str = "heun"
    generator: torch.Generator | None = None


Bind = Callable[[Callable], Callable]  # f(x, s, cond) -> f(x, s) with the request's conditions (and guidance)


class Kind(str):
    """A parameterization: `network` wraps a backbone, `sample` draws from noise, `nfe` counts evaluations."""

    few_step = True  # a one- to few-step generator (consistency samplers, editing), not a diffusion model
    generates = True  # a codec run's network reconstructs and generates nothing
    estimates_x0 = True  # the bound network returns the clean sample's estimate (MeanFlow's: a velocity)

    def network(self, backbone: nn.Module, sigma_data: float = 0.5, sigma_min: float = 0.002,
                **options) -> nn.Module:
        return Preconditioned(backbone, str(self), sigma_data, sigma_min, **options)

    def nfe(self, steps: int) -> int:
        """Network evaluations of a `steps`-step sample."""
        return steps

    def sample(self, net: nn.Module, bind: Bind, noise: torch.Tensor, steps: int, plan: SamplePlan) -> torch.Tensor:
        """Consistency sampling (Song et al. 2023, alg. 1): one jump from the highest level, then re-noise and jump
        along the step levels."""
        f, sigmas = bind(net), plan.step_sigmas(steps)
        if steps == 1:
            return onestep(f, noise, sigmas[0])
        return multistep(f, noise, sigmas, plan.sigma_min, plan.generator)


class EDMKind(Kind):
    """The diffusion teacher: an EDM denoiser sampled along the Karras levels with Heun (2N - 1 evaluations) or
    Euler (N)."""

    few_step = False

    def nfe(self, steps: int, solver: str = "heun") -> int:
        return 2 * steps - 1 if solver == "heun" else steps

    def sample(self, net, bind, noise, steps, plan):
        solver = edm_euler if plan.solver == "euler" else edm_heun
        return solver(bind(net), noise, edm_sigmas(steps, plan.sigma_min, plan.sigma_max, plan.rho))


class TrigFlowKind(Kind):
    """sCM's TrigFlow network, sampled like any consistency model through its x0 estimate."""

    def network(self, backbone, sigma_data=0.5, sigma_min=0.002, **options):
        return TrigFlow(backbone, sigma_data, sigma_min, **options)


class MeanFlowKind(Kind):
    """MeanFlow's average velocity: z_r = z_t - (t - r) u(z_t, r, t) from t = 1 to 0 in `steps` jumps (uniform,
    or at the custom step levels converted to flow times), one evaluation each."""

    estimates_x0 = False

    def network(self, backbone, sigma_data=0.5, sigma_min=0.002, **options):
        return MeanFlowNet(backbone, sigma_data, sigma_min, **options)

    def sample(self, net, bind, noise, steps, plan):
        def u_as_denoiser(z, rt, c=None):  # (r, t) travel as one [B, 2] "noise level" through the binding
            return net.average_velocity(z, rt[:, 0], rt[:, 1], c)

        u = bind(u_as_denoiser)
        times = meanflow_times(steps, plan.step_sigmas(steps) if steps in plan.custom_steps else None)
        return meanflow_sample(lambda z, r, t: u(z, torch.stack([r, t], dim=1)), noise, times)


class CodecKind(Kind):
    """A codec run's autoencoder: reconstruction, no noise levels, nothing to sample."""

    few_step = False
    generates = False

    def network(self, backbone, sigma_data=0.5, sigma_min=0.002, **options):
        return CodecNet(backbone)

    def nfe(self, steps: int) -> int:
        return 0

    def sample(self, net, bind, noise, steps, plan):
        raise ValueError("a codec run generates nothing")


KINDS: dict[str, Kind] = {k: k for k in (Kind("consistency"), EDMKind("edm"), TrigFlowKind("trigflow"),
                                         MeanFlowKind("meanflow"), CodecKind("codec"))}


def kind_of(name: str) -> Kind:
    """The kind object of a method's or network's kind name."""
    if str(name) not in KINDS:
        raise ValueError(f"unknown parameterization {name!r} ({', '.join(KINDS)})")
    return KINDS[str(name)]
