"""Backbones for any number of data axes, built from a config section by name ("arch") and preset.

Importing this package registers the built-in architectures: unet, spacetime_unet, dit and autoencoder (what a
codec run trains).
"""

from cm_media.nn import autoencoder, spacetime, transformer, unet  # noqa: F401  each registers its arch
from cm_media.nn.registry import ARCHS, build_backbone, register_arch, resolve_backbone
from cm_media.nn.unet import UNet, UNetConfig, count_parameters

__all__ = ["ARCHS", "UNet", "UNetConfig", "build_backbone", "count_parameters", "register_arch", "resolve_backbone"]
