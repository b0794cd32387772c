"""Small networks the project trains itself and ships as safetensors beside their code (the metric feature nets):
one way to write them with their provenance and one way to read them back."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

METADATA_KEY = "cm_media_feature_net"  # JSON: the command that made the file, its accuracy, epochs, seed, ...


def save_shipped(state: dict[str, torch.Tensor], path: str | Path, meta: dict[str, str]) -> None:
    """Write a state dict (tensors made contiguous) with `meta` as JSON in the file's metadata."""
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def load_shipped(build: Callable[[], nn.Module], path: Path, strict: bool = True) -> nn.Module | None:
    """`build()` with the weights in `path` (floating tensors read as float32), in eval mode without gradients;
    None when the file is missing. `strict=False` for nets that rebuild some buffers instead of storing them."""
    if not path.is_file():
        return None
    from safetensors.torch import load_file

    net = build()
    state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
    net.load_state_dict(state, strict=strict)
    return net.eval().requires_grad_(False)
