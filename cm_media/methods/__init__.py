"""Training methods by name: each pairs a config dataclass (its `method:` keys) with a Method class.

Add one by writing a module with `XConfig(MethodConfig)` and `X(Method)` and registering it here or with
`register_method`; the config section, `cm-media train` and checkpoints pick it up by `method.name`.
"""

from __future__ import annotations

from cm_media.methods.autoencoder import AutoencoderTraining
from cm_media.methods.base import Method, MethodConfig
from cm_media.methods.cmt import CMT
from cm_media.methods.consistency_training import CT, ICT
from cm_media.methods.distillation import CD, ECT
from cm_media.methods.edm import EDM
from cm_media.methods.meanflow import MeanFlow
from cm_media.methods.scm import SCM
from cm_media.methods.self_distillation import KD

METHODS: dict[str, type[Method]] = {
    "ict": ICT, "ct": CT, "edm": EDM, "cd": CD, "ect": ECT, "meanflow": MeanFlow, "scm": SCM, "cmt": CMT,
    "kd": KD,  # one-step student of a consistency model's own multistep sampler
    "autoencoder": AutoencoderTraining,  # a codec run: trains a learned codec for latent models
}


def register_method(cls: type[Method]) -> None:
    """Make `cls` (with its `name` and `Config`) available as `method.name`."""
    METHODS[cls.name] = cls


def method_kind(name: str) -> str:
    """The parameterization a method trains: "consistency", "edm", "trigflow" (sCM), "meanflow" or "codec"."""
    return METHODS[name].kind


def build_method(cfg: MethodConfig, model, total_steps: int, teacher=None, conditions=None) -> Method:
    return METHODS[cfg.name](cfg, model, total_steps, teacher, conditions)


__all__ = ["METHODS", "Method", "MethodConfig", "build_method", "method_kind", "register_method"]
