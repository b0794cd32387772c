"""Value checks shared by configs, the CLI and the Python API, and the limits that bound memory.

Each check names the option it checks and raises a one-line UserError: a value is checked where it is parsed,
before any model is built, so no mistake surfaces as a traceback or as a silently "corrected" result.
"""

from __future__ import annotations

import math

from cm_media.errors import UserError

MAX_SEED = 2**63 - 2  # torch seeds are 64-bit; --interpolate also uses seed + 1
MAX_STEPS = 1000  # sampling steps (consistency steps or EDM solver steps)
MAX_SAMPLES = 100_000_000  # -n: generation streams batch by batch, so this only bounds file numbering
MAX_BATCH = 65_536
MAX_INT = 2**63 - 1  # any integer config value
# one generated sample may hold at most this many model values ([C, *axes]); modalities state it in their units
# (seconds, frames). The bundled 8 kHz audio model: 256 s; 32x32 grey video: 4096 frames.
MAX_SAMPLE_ELEMENTS = 2**22
# a batch chosen by default (no --batch-size) holds at most this many model values (long clips: smaller batches)
DEFAULT_BATCH_ELEMENTS = 2**22
# an explicit --batch-size may ask for up to this many model values per batch
MAX_BATCH_ELEMENTS = 2**25
MAX_PARAMETERS = 2_000_000_000  # network size a config or model file may describe (8 GB of float32 weights)


def _show(value) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def number(value, name: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
           hi_open: bool = False) -> float:
    """A finite real number within [lo, hi] (open ends with lo_open / hi_open); else a UserError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise UserError(f"{name} must be a number, got {_show(value)}") from None
    try:
        v = float(value)
    except OverflowError:  # an int beyond float range
        v = math.inf if value > 0 else -math.inf
    ok = math.isfinite(v)
    if ok and lo is not None:
        ok = v > lo if lo_open else v >= lo
    if ok and hi is not None:
        ok = v < hi if hi_open else v <= hi
    if not ok:
        raise UserError(f"{name} must be a finite number{_range(lo, hi, lo_open, hi_open)}, got {_show(value)}")
    return v


def integer(value, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """An integer within [lo, hi] (a float with no fraction counts); else a UserError naming `name`."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} must be an integer{_range(lo, hi)}, got {_show(value)}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise UserError(f"{name} must be an integer{_range(lo, hi)}, got {value}")
    return value


def optional_number(value, name: str, **kw) -> float | None:
    return None if value is None else number(value, name, **kw)


def _range(lo, hi, lo_open: bool = False, hi_open: bool = False) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" {'>' if lo_open else '>='} {lo:g}" if isinstance(lo, float) else f" {'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f" {'<' if hi_open else '<='} {hi:g}" if isinstance(hi, float) else f" {'<' if hi_open else '<='} {hi}"
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    if isinstance(lo, int) and isinstance(hi, int) and not (lo_open or hi_open):
        return f" in {lo}..{hi}"
    return f" in {left}{lo:g}, {hi:g}{right}"


def seed(value, name: str = "--seed") -> int:
    return integer(value, name, 0, MAX_SEED)


def steps(value, name: str = "--steps") -> int:
    return integer(value, name, 1, MAX_STEPS)


def count(value, name: str = "-n") -> int:
    return integer(value, name, 1, MAX_SAMPLES)


def batch_size(value, name: str = "--batch-size") -> int:
    return integer(value, name, 1, MAX_BATCH)


def parse_float(text: str, name: str) -> float:
    """A finite float from text (rejects nan, inf and garbage with the option named)."""
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {text!r}") from None
    if not math.isfinite(v):
        raise UserError(f"{name} must be a finite number, got {text!r}")
    return v
