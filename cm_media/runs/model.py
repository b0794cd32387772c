"""Assemble a run once: preset -> conditions -> one codec (shared by the data set and the network) -> backbone ->
the method's preconditioning (EDM, consistency, TrigFlow, MeanFlow or a codec run's autoencoder).

Training, the loader (generation, teachers, export, the benchmark) all build through `assemble`; `backbone.cond`
is only the stored form of the conditions, parsed here once and handed to the backbone as `Condition`s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from cm_media.conditions import Condition, conditions_from_spec
from cm_media.errors import UserError
from cm_media.math.kinds import kind_of
from cm_media.methods import METHODS, method_kind
from cm_media.nn import build_backbone, resolve_backbone
from cm_media.registry import get_modality
from cm_media.runs import codec_runs
from cm_media.runs.config import RunConfig


@dataclass
class Assembly:
    """A run's parts, built once: `cfg` with the preset resolved and the conditions recorded in `backbone.cond`,
    the modality, its codec, the conditions the network takes, the network (x, sigma, cond) -> x0 estimate, and
    the data set when one was asked for (training)."""

    cfg: RunConfig
    modality: Any
    codec: Any
    conditions: list[Condition]
    model: torch.nn.Module
    dataset: Any = None


def assemble(cfg: RunConfig, modality=None, split: str | None = None) -> Assembly:
    """Build a validated run config's codec, conditions and network; with `split` also its data set (encoding with
    the same codec), whose conditions the network then takes. Without it the conditions are the recorded ones
    (`backbone.cond`, as a trained run stores them). Either way the method's extra inputs (MeanFlow's interval,
    a guided student's scale) join them once."""
    modality = modality or get_modality(cfg.modality)
    cfg = with_resolved_backbone(cfg, modality)
    codec = modality.build_codec(cfg)
    codec_runs.attach_weights(codec, modality)  # a learned codec reads its codec run's weights on first use
    dataset = None
    if split is not None:
        dataset = modality.build_dataset(cfg, codec, split)
        if len(dataset) == 0:
            raise UserError(f"the {'training' if split == 'train' else split} dataset is empty")
        conditions = list(getattr(dataset, "conditions", None) or [])
    else:
        conditions = conditions_from_spec(cfg.backbone.get("cond"))
    names = {c.name for c in conditions}
    conditions += [c for c in METHODS[cfg.method.name].extra_conditions(cfg.method) if c.name not in names]
    cfg = dataclasses.replace(cfg, backbone={**cfg.backbone, "cond": [c.to_dict() for c in conditions]})
    backbone = build_backbone({**cfg.backbone, "cond": conditions}, {}, codec.dims, codec.channels)
    model = kind_of(method_kind(cfg.method.name)).network(  # the kind's preconditioning
        backbone, sigma_data=cfg.method.sigma_data, sigma_min=cfg.method.sigma_min,
        **METHODS[cfg.method.name].model_options(cfg.method),
    )
    return Assembly(cfg, modality, codec, conditions, model, dataset)


def with_resolved_backbone(cfg: RunConfig, modality) -> RunConfig:
    """`cfg` with the backbone preset's arguments written out (a run stores this form, so later preset edits cannot
    break its checkpoints); a section already resolved is kept as it is."""
    if "preset" not in cfg.backbone and "arch" in cfg.backbone:
        return cfg
    return dataclasses.replace(cfg, backbone=resolve_backbone(cfg.backbone, modality.backbone_presets))


def build_model(cfg: RunConfig):
    """(modality, codec, model) of a validated run config (the assembler's parts, for scripts and tests)."""
    a = assemble(cfg)
    return a.modality, a.codec, a.model


def run_conditions(cfg: RunConfig) -> list[Condition]:
    """The conditions a stored run config's network takes (its `backbone.cond`), without building anything."""
    return conditions_from_spec(cfg.backbone.get("cond"))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but no CUDA GPU is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise UserError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)
