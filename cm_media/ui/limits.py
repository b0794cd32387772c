"""What one web request may ask for, checked before any work: the CLI's checks plus the service's bounds.

A request runs while others wait in the queue, so the server bounds its size more tightly than the CLI does (a
few samples, clips of at most a minute); an upload is probed (size, kind, duration) before the modality reads it,
so a 10-hour file or a corrupt video is one message, not minutes of decoding or a traceback.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from cm_media import checks
from cm_media.errors import UserError

log = logging.getLogger(__name__)

MAX_SAMPLES = 16  # -n of one request (the gallery shows them all)
MAX_STEPS = 16  # consistency steps of one request (the CLI allows 1000; a page request should answer in seconds)
MAX_CFG_SCALE = 100.0
MAX_SECONDS = 60.0  # clip length of a generated or uploaded recording (the CLI's edit limit)
MAX_FRAMES = 256  # frames of a generated or uploaded clip (the CLI's edit limit)
MAX_REQUEST_VALUES = 2**24  # model values of all samples of one request together (64 MiB of float32)
MAX_UPLOAD_BYTES = 50 * 2**20  # an upload larger than this is refused by the server before it is stored
MAX_PIXELS = 4096 * 4096  # an uploaded picture's size
COMPARE_STEPS = (1, 2, 4)

ANY = "(any)"  # the condition menus' "no condition" entry


def samples(n) -> int:
    return checks.integer(_int(n, "number of samples"), "number of samples", 1, MAX_SAMPLES)


def steps(value) -> int:
    return checks.integer(_int(value, "steps"), "steps", 1, MAX_STEPS)


def seed(value) -> int:
    return checks.integer(_int(value, "seed"), "seed", 0, checks.MAX_SEED)


def cfg_scale(value) -> float | None:
    """The guidance scale, or None for the model's default (an empty box)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return checks.number(value, "guidance scale", 0, MAX_CFG_SCALE)


def guidance(value) -> float:
    return checks.number(0 if value is None else value, "reconstruction guidance", 0, 1e6)


def _int(value, name: str):
    """A whole number given as an int, a float without fraction (sliders send floats) or a digit string."""
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise UserError(f"{name} must be a whole number, got {value!r}") from None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def length(value, option: str | None) -> dict:
    """The clip-length option of a request ({"seconds": s} / {"frames": n}); none when empty or 0 (the default)."""
    if option is None or value is None or value == "" or value == 0:
        return {}
    if option == "seconds":
        return {"seconds": checks.number(value, "seconds", 0, MAX_SECONDS, lo_open=True)}
    return {option: checks.integer(_int(value, option), option, 1, MAX_FRAMES)}


def request_size(n: int, shape: tuple[int, ...]) -> None:
    """n samples of model shape `shape` must stay within MAX_REQUEST_VALUES."""
    per = math.prod(shape)
    if n * per > MAX_REQUEST_VALUES:
        most = max(1, MAX_REQUEST_VALUES // per)
        raise UserError(f"{n} samples of {per:,} model values each are too much for one request (at most "
                        f"{MAX_REQUEST_VALUES:,} values): ask for {most} or fewer, or shorter clips")


def upload(path, kind: str) -> Path:
    """An uploaded file checked before the modality reads it: present, at most MAX_UPLOAD_BYTES, and decodable
    as `kind` ("audio", "video" or "image") within the duration / pixel limits. Returns its path."""
    if path is None or (isinstance(path, str) and not path.strip()):
        raise UserError("no file uploaded: choose a file to edit")
    p = Path(str(path))
    if not p.is_file():
        raise UserError(f"uploaded file {p.name} is missing (upload it again)")
    size = p.stat().st_size
    if size == 0:
        raise UserError(f"uploaded file {p.name} is empty")
    if size > MAX_UPLOAD_BYTES:
        raise UserError(f"uploaded file {p.name} is {size / 2**20:.1f} MiB; at most {MAX_UPLOAD_BYTES // 2**20} MiB")
    if kind == "image":
        _check_picture(p)
    else:
        _check_stream(p, kind)
    return p


def _check_picture(p: Path) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            w, h = im.size
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"uploaded file {p.name} is not a picture this server can read ({_first_line(exc)})") from None
    if w * h > MAX_PIXELS:
        raise UserError(f"uploaded picture {p.name} is {w}x{h} pixels; at most {MAX_PIXELS:,} pixels")


def _check_stream(p: Path, kind: str) -> None:
    """Open with PyAV (headers only) and check that it holds `kind` ("audio"/"video") of at most the limits."""
    import av

    try:
        with av.open(str(p), metadata_errors="ignore") as container:
            streams = container.streams.video if kind == "video" else container.streams.audio
            if not streams:
                raise UserError(f"uploaded file {p.name} holds no {kind} stream: this model edits {kind}")
            stream = streams[0]
            rate = _rate(stream) if kind == "video" else None  # read while open: PyAV >= 18.1.1 refuses after close
            seconds = _duration(container, stream)
            if seconds is None:  # no duration in the headers: decode the packets' timestamps (cheap, no frames)
                seconds = _demuxed_duration(container, stream)
    except UserError:
        raise
    except Exception as exc:  # av.error.*: not a media file, truncated, unknown codec
        raise UserError(f"uploaded file {p.name} is not {kind} this server can read ({_first_line(exc)})") from None
    limit = MAX_SECONDS if kind == "audio" else MAX_FRAMES / max(1e-3, rate)
    if seconds is not None and seconds > limit + 1e-6:
        what = f"{limit:g} s" if kind == "audio" else f"{MAX_FRAMES} frames ({limit:.1f} s at its frame rate)"
        raise UserError(f"uploaded file {p.name} is {seconds:.1f} s long; this server edits at most {what}: cut out "
                        "the part to edit first")


def _duration(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6  # microseconds
    return None


def _rate(stream) -> float:
    rate = getattr(stream, "average_rate", None) or getattr(stream, "base_rate", None)
    try:
        return float(rate) if rate else 25.0
    except (TypeError, ZeroDivisionError):
        return 25.0


def _demuxed_duration(container, stream) -> float | None:
    """Duration from packet timestamps, stopping past twice the longest limit (a long file costs no more)."""
    end = None
    stop = 2 * max(MAX_SECONDS, MAX_FRAMES)
    for packet in container.demux(stream):
        if packet.pts is not None and packet.time_base is not None:
            end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
            if end > stop:
                break
    return end


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def message(exc: BaseException) -> str:
    """The one line the page shows for a failed request: a UserError as the CLI prints it, anything else named
    by its type (and logged with its traceback on the server)."""
    if isinstance(exc, UserError):
        return "error: " + " ".join(str(exc).split())
    if isinstance(exc, NotImplementedError):
        return "error: " + " ".join(str(exc).split())
    if isinstance(exc, MemoryError):
        return "error: out of memory; ask for fewer samples or shorter clips"
    log.exception("request failed")
    return f"error: the request failed ({type(exc).__name__}: {_first_line(exc)})"
