"""Output paths, checked before any work starts, and writes whose OS errors become one-line user errors.

`output_file` / `output_folder` refuse a path under an existing file, an existing folder given as a file, an
unwritable folder or a full disk (a probe file is created and removed), and create the missing folders.
`writing(path)` turns an OSError raised while writing (disk full, permission) into a UserError naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

from cm_media.errors import UserError


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _first_existing(path: Path) -> Path:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def output_folder(path: str | Path, option: str = "--out", target: str | Path | None = None) -> Path:
    """Make sure `path` is (or can be made) a writable folder: create it, probe it; else a UserError naming
    `option` and `target` (what is to be written there; default the folder itself)."""
    path = Path(path)
    target = path if target is None else target
    anchor = _first_existing(path)
    if anchor.exists() and not anchor.is_dir():
        raise UserError(f"cannot write {option} {target}: {anchor} is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create folder {path} for {option}: {_reason(exc)}") from None
    try:
        fd, probe = tempfile.mkstemp(dir=path, prefix=".cm-media-probe-")
        try:
            os.write(fd, b"\0" * 4096)  # a full disk refuses data, not always the empty file
            os.fsync(fd)
        finally:
            os.close(fd)
            Path(probe).unlink(missing_ok=True)
    except OSError as exc:
        raise UserError(f"cannot write to folder {path} ({option}): {_reason(exc)}") from None
    return path


def output_file(path: str | Path, option: str = "--out") -> Path:
    """Make sure the file `path` can be written: not an existing folder, its folder writable (created)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{option} {path} is an existing folder; name a file inside it, e.g. {path / 'out'}"
                        f"{path.suffix or ''}")
    if path.name in ("", ".", ".."):
        raise UserError(f"{option} {path} does not name a file")
    output_folder(path.parent if str(path.parent) else Path("."), option, path)
    return path


@contextlib.contextmanager
def writing(path: str | Path):
    """Run a write; an OSError (no space, permission, read-only file system) becomes a UserError naming `path`."""
    try:
        yield
    except UserError:
        raise
    except OSError as exc:
        hint = " (the disk is full)" if exc.errno == errno.ENOSPC else ""
        raise UserError(f"cannot write {path}: {_reason(exc)}{hint}") from None
