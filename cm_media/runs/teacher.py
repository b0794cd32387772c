"""Load a trained EDM teacher for distillation (CD) or tuning (ECT), checked against the student's config."""

from __future__ import annotations

import dataclasses

import torch

from cm_media.runs import checkpoint as ckpt
from cm_media.runs.config import RunConfig, config_from_dict
from cm_media.errors import UserError
from cm_media.nn import resolve_backbone
from cm_media.registry import get_modality


def load_teacher(student: RunConfig, device) -> tuple[torch.nn.Module, RunConfig]:
    """The frozen teacher (EMA weights, eval mode) named by `method.teacher`, and its config."""
    from cm_media.runs.generator import resolve_source  # noqa: PLC0415
    from cm_media.runs.model import build_model  # noqa: PLC0415

    if not student.method.teacher:
        raise UserError(f"method.name {student.method.name} needs method.teacher (a teacher run directory or checkpoint)")
    path = resolve_source(student.method.teacher)
    tensors, meta = ckpt.load_checkpoint(path)
    tcfg = config_from_dict(meta["config"])
    check_compatible(student, tcfg, str(path))
    _, _, model = build_model(tcfg)
    model.load_state_dict(ckpt.prefixed(tensors, "ema") or ckpt.prefixed(tensors, "model"))
    return model.to(device).eval().requires_grad_(False), tcfg


def check_compatible(student: RunConfig, teacher: RunConfig, where: str) -> None:
    """Teacher and student must share modality, codec, backbone and sigma_data; the teacher must be EDM."""
    if teacher.method.name != "edm":
        raise UserError(f"teacher {where} was trained with method {teacher.method.name!r}; a teacher must be 'edm'")
    presets = get_modality(student.modality).backbone_presets
    for name in ("modality", "codec", "backbone"):
        a, b = getattr(student, name), getattr(teacher, name)
        if name == "backbone":  # compare what the presets resolve to, not how the configs spell it
            a, b = resolve_backbone(a, presets), resolve_backbone(b, presets)
        a = dataclasses.asdict(a) if dataclasses.is_dataclass(a) else a
        b = dataclasses.asdict(b) if dataclasses.is_dataclass(b) else b
        if a != b:
            raise UserError(f"teacher {where} has a different {name} section ({b}) than this config ({a})")
    if student.method.sigma_data != teacher.method.sigma_data:
        raise UserError(f"teacher {where} uses sigma_data {teacher.method.sigma_data}, this config {student.method.sigma_data}")


def init_from_teacher(student: torch.nn.Module, teacher: torch.nn.Module) -> None:
    """Copy the teacher's backbone weights into the student (the parameterizations differ, the network doesn't)."""
    student.backbone.load_state_dict(teacher.backbone.state_dict())
