"""cm-media: one- and few-step consistency models for audio, video and images."""

__version__ = "0.1.0"

from cm_media.errors import UserError
from cm_media.runs.generator import Generator, load

__all__ = ["Generator", "UserError", "__version__", "load"]
