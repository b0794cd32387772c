"""What every training method shares: the noise-schedule constants of its config, and the Method interface.

A method draws its noise levels for step k and returns per-sample losses; it owns any extra networks it needs
(CT's EMA target) so the training loop stays one readable function. Conditions arrive as a dict and are bound into
the network call once (`guidance.bind`), so the losses below never see them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cm_media.conditions import Condition
from cm_media.errors import UserError
from cm_media.math import schedules, streams


@dataclass
class MethodConfig:
    """Constants of the noise schedule every method shares (EDM / CM defaults, design notes section 3)."""

    name: str = "ict"
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0


class Method:
    """Base: `kind` picks the parameterization (consistency or edm) of the trained network."""

    kind = "consistency"
    name = ""
    Config: type = MethodConfig
    needs_teacher = False  # the training loop loads method.teacher and passes it in
    teacher_kind = "edm"  # the parameterization `method.teacher` must have been trained with
    # the loss calls the network unwrapped from DistributedDataParallel (torch.func.jvp cannot run through its
    # forward), so DDP's gradient hooks never fire and the training loop all-reduces the gradients itself
    bypasses_ddp = False
    # data-parallel shard: every rank draws the global batch's randomness and keeps its own slice,
    # so N processes reproduce one process with the same global batch
    rank, world = 0, 1

    def __init__(self, cfg, model: nn.Module, total_steps: int, teacher: nn.Module | None = None,
                 conditions: list[Condition] | None = None):
        self.cfg = cfg
        self.total_steps = total_steps
        self.teacher = teacher
        self.conditions = conditions or []  # the data's conditions (for their "no condition" values)

    @classmethod
    def wants_teacher(cls, cfg) -> bool:
        """Whether this run loads `method.teacher` (sCM: only for distillation)."""
        return cls.needs_teacher

    @staticmethod
    def unwrap(net: nn.Module) -> nn.Module:
        """The network inside a DistributedDataParallel wrapper (itself otherwise)."""
        return getattr(net, "module", net)

    @staticmethod
    def model_options(cfg) -> dict:
        """Keyword options of the network's preconditioning (`Kind.network`, math/kinds.py), e.g. sCT's smooth time input."""
        return {}

    @staticmethod
    def extra_conditions(cfg) -> list[Condition]:
        """Inputs the trained network takes beyond the data's conditions (a guided student's guidance scale)."""
        return []

    def loss(self, model: nn.Module, x0: torch.Tensor, step: int, gen: torch.Generator,
             cond: dict | None = None) -> torch.Tensor:
        raise NotImplementedError

    @classmethod
    def edits_given_streams(cls, cfg) -> bool:
        """Whether the trained network generates streams from others held clean (the stream edit sampler,
        `given_streams_multistep`, suits it); else edits take the zero-shot masked sampler."""
        return False

    @staticmethod
    def stream_sizes_for(model: nn.Module, option: str) -> list[int]:
        """The network's stream sizes, which `option` needs (a one-stream network is a config error)."""
        sizes = streams.stream_sizes(model)
        if sizes is None:
            raise UserError(f"{option} needs a multi-stream backbone (e.g. av_joint with stream_noise: true); "
                            "this one has a single stream")
        return sizes

    @staticmethod
    def complex_layout(model: nn.Module, x: torch.Tensor, option: str) -> tuple[list[int], list[bool]]:
        """(stream sizes, complex flags) of the network's output, one stream of all of x's values where it declares
        no streams; `option` needs a complex one (a one-line error otherwise)."""
        sizes = streams.stream_sizes(model) or [x[0].numel()]
        kinds = streams.complex_streams(model) or [False] * len(sizes)
        if not any(kinds):
            raise UserError(f"{option} needs a backbone with a complex stream (a complex STFT: spec_unet with two "
                            f"input channels, av_joint's soundtrack); this one has none")
        return sizes, kinds

    def num_steps(self, step: int) -> int | None:
        """Discretization N(k) at training step k, where the method has one."""
        return None

    def after_step(self, model: nn.Module, step: int) -> None:
        """Called after each optimizer step (target-network updates)."""

    def log_values(self) -> dict:
        """Extra values for the next metrics.jsonl line (averaged since the last one), e.g. a codec run's PSNR."""
        return {}

    def state_modules(self) -> dict[str, nn.Module]:
        """Extra networks to checkpoint for an exact resume."""
        return {}

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters of the method's own networks that the optimizer trains with the model's (sCM's adaptive
        loss weight); networks with frozen parameters (CT's target) have none."""
        return [p for m in self.state_modules().values() for p in m.parameters() if p.requires_grad]

    def _local(self, t: torch.Tensor) -> torch.Tensor:
        """This rank's slice of a tensor drawn for the global batch."""
        b = t.shape[0] // self.world
        return t[self.rank * b: (self.rank + 1) * b]

    def _global(self, batch: int) -> int:
        return batch * self.world

    def _noise(self, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn((self._global(x0.shape[0]), *x0.shape[1:]), generator=gen)
        return self._local(z).to(x0.device)

    def _adjacent_sigmas(self, n: int, batch: int, gen, lognormal: bool, device):
        """Pairs (sigma_hi, sigma_lo) of neighbours on an ascending Karras grid of n points."""
        c = self.cfg
        grid = schedules.karras_sigmas(n, c.sigma_min, c.sigma_max, c.rho).flip(0)  # ascending
        if lognormal:
            idx = schedules.sample_lognormal_indices(grid, self._global(batch), c.p_mean, c.p_std, generator=gen)
        else:
            idx = torch.randint(0, n - 1, (self._global(batch),), generator=gen)
        idx = self._local(idx)
        return grid[idx + 1].float().to(device), grid[idx].float().to(device)
