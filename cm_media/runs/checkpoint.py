"""Checkpoints: safetensors files with the run config as JSON metadata; written atomically, never unpickled.

A run folder has one writer at a time (`RunLock`); `--resume` starts from the newest intact checkpoint
(`newest_intact`), and the temporary files of killed writes are removed (`clean_temporary`).
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cm_media.errors import UserError

try:
    import fcntl
except ImportError:  # not POSIX: PID files only
    fcntl = None

log = logging.getLogger(__name__)
META_KEY = "cm_media"
_STEP_FILE = re.compile(r"^step_(\d+)\.safetensors$")
LOCK_NAME = ".lock"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class NoSpace(UserError):
    """A checkpoint did not fit on its disk: nothing was written (the temporary file is removed)."""

    def __init__(self, path: Path, needed: int, free: int):
        self.path, self.needed, self.free = Path(path), needed, free
        super().__init__(f"no space left on the disk of {self.path.parent} for {self.path.name}: it needs "
                         f"{megabytes(needed)}, {megabytes(free)} are free")


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _no_space(exc: BaseException) -> bool:
    """Whether a write failed for want of space: an OSError, or safetensors' own error type wrapping one."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    text = str(exc)
    return "No space left" in text or "os error 28" in text or "Disk quota exceeded" in text


def file_size(tensors: dict[str, torch.Tensor], meta: dict) -> int:
    """Bytes a safetensors file of `tensors` and `meta` takes (data plus a generous header estimate)."""
    data = sum(v.numel() * v.element_size() for v in tensors.values())
    header = len(json.dumps(meta)) + sum(len(k) + 96 for k in tensors) + 64
    return data + header


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Save tensors plus JSON metadata to `path` atomically (temp file + fsync + rename). A full disk is a
    `NoSpace` error saying the size needed; any other failure leaves no temporary file either."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    flat = {}
    try:
        flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
        save_file(flat, tmp, metadata={META_KEY: json.dumps(meta)})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except (SafetensorError, OSError) as exc:
        Path(tmp).unlink(missing_ok=True)
        if _no_space(exc):
            raise NoSpace(path, file_size(flat, meta), shutil.disk_usage(path.parent).free) from None
        if isinstance(exc, OSError):
            raise
        raise UserError(f"cannot write checkpoint {path}: {str(exc).splitlines()[0]}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_header(path: Path) -> tuple[dict[str, tuple[int, ...]], dict]:
    """({tensor name: shape}, metadata) from the file's header alone: nothing is allocated, so a file's claims
    (its config, its shapes) can be checked before loading. Missing, corrupt or foreign files are UserErrors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    if raw is None:
        raise UserError(f"{path} is not a cm-media checkpoint (no {META_KEY} metadata)")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"checkpoint {path} has unreadable metadata (not JSON: {exc})") from None
    if not isinstance(meta, dict):
        raise UserError(f"checkpoint {path} has unreadable metadata (a JSON {type(meta).__name__}, not an object)")
    return shapes, meta


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Load (tensors, metadata); a missing or corrupt file, or metadata that is not a JSON object, is a UserError
    naming it."""
    path = Path(path)
    _, meta = read_header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from None
    return tensors, meta


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN or infinity."""
    return [k for k, v in tensors.items() if v.is_floating_point() and v.numel() and not torch.isfinite(v).all()]


def prefixed(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix.`, with the prefix removed."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def with_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state_dict into flat tensors and JSON-able param_groups (no pickling)."""
    sd = opt.state_dict()
    tensors = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"{pid}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": sd["param_groups"]}


def load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of every finished checkpoint in run_dir/checkpoints, ascending by step."""
    folder = Path(run_dir) / "checkpoints"
    found = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = _STEP_FILE.match(p.name)
            if m:
                found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = step_checkpoints(run_dir)
    return found[-1][1] if found else None


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:08d}.safetensors"


def newest_intact(run_dir: Path) -> tuple[Path, dict[str, torch.Tensor], dict] | None:
    """(path, tensors, metadata) of the newest checkpoint that loads, has the training metadata and finite
    weights; newer ones that fail (a truncated or damaged file) are renamed `*.corrupt` with a note, so nothing
    picks them up again. None when there is no intact checkpoint."""
    for step, path in reversed(step_checkpoints(run_dir)):
        try:
            tensors, meta = load_checkpoint(path)
            problem = _training_meta_problem(meta, step) or (
                "non-finite weights" if non_finite(prefixed(tensors, "model")) else None)
        except UserError as exc:
            problem = str(exc)
        if problem is None:
            return path, tensors, meta
        aside = path.with_name(path.name + ".corrupt")
        log.warning("note: checkpoint %s is not usable (%s); moved aside to %s, trying the one before",
                    path, problem, aside.name)
        os.replace(path, aside)
    return None


def _training_meta_problem(meta: dict, step: int) -> str | None:
    if not isinstance(meta.get("config"), dict):
        return "no run config in its metadata"
    if meta.get("step") != step or not isinstance(meta.get("bad_steps"), int):
        return "its step metadata does not match its name"
    if not isinstance(meta.get("optimizer"), dict) or not isinstance(meta["optimizer"].get("param_groups"), list):
        return "no optimizer state in its metadata"
    return None


def clean_temporary(run_dir: Path) -> list[Path]:
    """Remove the temporary files that killed atomic writes left in a run folder (call while holding its lock)."""
    removed = []
    run_dir = Path(run_dir)
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "samples"):
        if folder.is_dir():
            for p in folder.glob(".*.tmp"):
                p.unlink(missing_ok=True)
                removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) of interrupted writes in %s", len(removed), run_dir)
    return removed


def finite_norm(params) -> bool:
    """Whether every tensor of `params` is finite (one fused norm per tensor; a NaN or inf anywhere shows)."""
    tensors = [p.detach() for p in params]
    if not tensors:
        return True
    return math.isfinite(torch.stack(torch._foreach_norm(tensors)).float().sum().item())


class RunLock:
    """One writer per run folder: `RUN/.lock`, flock'ed while held and naming the holder's PID.

    The kernel drops a flock when its process dies, so the lock of a killed run is simply taken over; where
    flock is unavailable the PID in the file decides (a dead holder's lock is taken over)."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.fd: int | None = None

    def _holder(self) -> str:
        try:
            text = self.path.read_text().strip()
        except OSError:
            text = ""
        return f"process {text}" if text.isdigit() else "another process"

    def _refuse(self):
        raise UserError(f"run directory {self.run_dir} is in use by {self._holder()} (lock {self.path}); wait for it "
                        "to finish or stop it, or choose another --out")

    def acquire(self) -> RunLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"cannot write run directory {self.run_dir}: {exc.strerror or exc}") from None
            if fcntl is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError as exc:
                    os.close(fd)
                    if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                        self._refuse()
                    return self._acquire_by_pid()
                try:  # a releasing holder may have unlinked the file we opened: lock the current one
                    if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                        break
                except FileNotFoundError:
                    pass
                os.close(fd)
            else:
                os.close(fd)
                return self._acquire_by_pid()
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def _acquire_by_pid(self) -> RunLock:
        text = self.path.read_text().strip() if self.path.exists() else ""
        if text.isdigit() and int(text) != os.getpid() and _alive(int(text)):
            self._refuse()
        self.path.write_text(f"{os.getpid()}\n")
        return self

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
