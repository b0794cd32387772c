"""cm-media: one- and few-step consistency models for audio, video and images."""

__version__ = "0.1.0"

from cm_media.errors import UserError

__all__ = ["Generator", "UserError", "__version__", "load"]


def __getattr__(name: str):
    """`Generator` and `load` import torch on first use, so the CLI can choose torch's threads before it loads."""
    if name in ("Generator", "load"):
        from cm_media.runs import generator

        return getattr(generator, name)
    raise AttributeError(f"module 'cm_media' has no attribute {name!r}")
