"""Load a trained EDM teacher for distillation (CD) or tuning (ECT), checked against the student's config."""

from __future__ import annotations

import dataclasses

import torch

from cm_media.conditions import GUIDANCE
from cm_media.errors import UserError
from cm_media.methods import METHODS, method_kind
from cm_media.nn import resolve_backbone
from cm_media.registry import get_modality
from cm_media.runs.config import RunConfig
from cm_media.runs.loader import load_run


def load_teacher(student: RunConfig, device) -> tuple[torch.nn.Module, RunConfig]:
    """The frozen teacher (EMA weights, eval mode) named by `method.teacher`, and its config."""
    if not getattr(student.method, "teacher", None):
        raise UserError(f"method.name {student.method.name} needs method.teacher (a teacher run directory or checkpoint)")
    run = load_run(student.method.teacher, device)
    check_compatible(student, run.cfg, str(run.path), METHODS[student.method.name].teacher_kind,
                     same_backbone=getattr(student.method, "init_from_teacher", True))
    return run.model.requires_grad_(False), run.cfg


def _comparable(cfg: RunConfig, name: str) -> dict:
    """A config section as compared between teacher and student: presets resolved, the student-only guidance input
    left out of the conditions."""
    value = getattr(cfg, name)
    if name == "backbone":
        value = resolve_backbone(value, get_modality(cfg.modality).backbone_presets)
        value["cond"] = [c for c in value.get("cond") or [] if c.get("name") != GUIDANCE]
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def check_compatible(student: RunConfig, teacher: RunConfig, where: str, kind: str = "edm",
                     same_backbone: bool = True) -> None:
    """Teacher and student must share modality, codec, sigma_data and (when the student starts from the teacher's
    weights, `same_backbone`) the backbone; the teacher must be an EDM model (`kind` "edm") or, for
    self-distillation, a consistency model."""
    if method_kind(teacher.method.name) != kind:
        need = "'edm'" if kind == "edm" else f"a {kind} model (ict, ct, cd, ect, cmt, kd)"
        raise UserError(f"teacher {where} was trained with method {teacher.method.name!r}; a teacher must be {need}")
    for name in ("modality", "codec", "backbone") if same_backbone else ("modality", "codec"):
        a, b = _comparable(student, name), _comparable(teacher, name)
        if a != b:
            raise UserError(f"teacher {where} has a different {name} section ({b}) than this config ({a})")
    if student.method.sigma_data != teacher.method.sigma_data:
        raise UserError(f"teacher {where} uses sigma_data {teacher.method.sigma_data}, this config {student.method.sigma_data}")
