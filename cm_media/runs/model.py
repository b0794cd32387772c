"""Build the network of a run: modality codec -> backbone -> the method's preconditioning (EDM, consistency,
TrigFlow or MeanFlow)."""

from __future__ import annotations

import torch

from cm_media.conditions import Condition, conditions_from_spec
from cm_media.errors import UserError
from cm_media.math.parameterization import precondition
from cm_media.methods import METHODS, method_kind
from cm_media.nn import build_backbone
from cm_media.registry import get_modality
from cm_media.runs.config import RunConfig


def build_model(cfg: RunConfig):
    """(modality, codec, model) for a validated run config; the model maps (x, sigma [B], cond) -> x0 estimate."""
    modality = get_modality(cfg.modality)
    codec = modality.build_codec(cfg)
    backbone = build_backbone(with_method_inputs(cfg), modality.backbone_presets, codec.dims, codec.channels)
    model = precondition(
        backbone, method_kind(cfg.method.name), sigma_data=cfg.method.sigma_data, sigma_min=cfg.method.sigma_min,
        **METHODS[cfg.method.name].model_options(cfg.method),
    )
    return modality, codec, model


def with_method_inputs(cfg: RunConfig) -> dict:
    """The backbone section with the method's own inputs among its conditions (MeanFlow's interval t - r, a guided
    student's scale): training records them in `backbone.cond`; a config straight from YAML lacks them."""
    spec = list(cfg.backbone.get("cond") or [])
    names = {c["name"] if isinstance(c, dict) else c.name for c in spec}
    extra = [c.to_dict() for c in METHODS[cfg.method.name].extra_conditions(cfg.method) if c.name not in names]
    return {**cfg.backbone, "cond": spec + extra} if extra else cfg.backbone


def run_conditions(cfg: RunConfig) -> list[Condition]:
    """The conditions a run's network takes (recorded in `backbone.cond` by training)."""
    return conditions_from_spec(cfg.backbone.get("cond"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)
