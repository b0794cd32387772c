"""CPU thread policy: as many torch threads as there are idle usable cores, chosen before torch starts.

torch's OpenMP threads spin while they wait for each other. Beside one other busy process on 2 cores, a
2-thread training step ran 22x slower than alone (a descheduled thread stalls its spinning partners); with one
thread there was no slowdown, but one thread leaves an idle machine's second core unused. A passive OpenMP wait
policy costs 1.7x on an idle machine. So the command line measures what the machine is doing when it starts
and takes the idle cores:

    threads = usable cores - busy cores (at least 1)

- usable cores: the CPUs this process may run on (`os.sched_getaffinity`), capped by a cgroup CPU quota
  (containers), and by the physical cores among them (SMT siblings add little to matrix work);
- busy cores: the CPU time other processes used on those CPUs over a short window (/proc/stat, ~0.15 s, minus
  this process's own time); a core counts as busy from half its time (`BUSY_THRESHOLD`). Where /proc/stat is
  missing, the 1-minute load average stands in.

The user's choice wins: `--threads N` (or `train.threads: N`), then `CM_MEDIA_THREADS=N`, then any of
OMP_NUM_THREADS / MKL_NUM_THREADS / OMP_WAIT_POLICY in the environment (then torch's own default applies).
`CM_MEDIA_THREADS=auto` asks for the measured choice even when those variables are set.

`apply_policy()` runs at the top of `cm_media/cli/__init__.py`: before torch is imported it exports
OMP_NUM_THREADS (read once when torch's OpenMP runtime loads), after that it calls `torch.set_num_threads`.
During a long training run `Monitor` re-decides every `every_s` seconds from the other processes' CPU use since
the previous check (no sleeping; one /proc/stat read): fewer threads at once when another process starts,
more only when two checks in a row agree.

This module imports only the standard library (it must not load torch).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "CM_MEDIA_THREADS"  # auto | N
MARK = "CM_MEDIA_AUTO_THREADS"  # set beside OMP_NUM_THREADS when this policy, not the user, set it
USER_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY")
BUSY_THRESHOLD = 0.5  # share of a core other processes must use for it to count as busy
WINDOW_S = 0.15  # start-up measurement window
COMPUTE_COMMANDS = ("train", "generate", "bench", "edit", "demo")  # the CLI commands that run torch work


@dataclass(frozen=True)
class Decision:
    threads: int | None  # None: leave the thread count alone (the user's variables or torch's default apply)
    reason: str
    auto: bool = False  # True: chosen from the machine's load (a `Monitor` may revise it)


def user_setting(env: Mapping[str, str]) -> str | None:
    """The thread-related variable the user set themselves, if any (OMP_NUM_THREADS this policy exported, marked
    by CM_MEDIA_AUTO_THREADS, does not count)."""
    for var in USER_VARS:
        if env.get(var, "").strip():
            if var == "OMP_NUM_THREADS" and env.get(MARK) == env[var]:
                continue
            return var
    return None


def busy_core_count(busy: float, threshold: float = BUSY_THRESHOLD) -> int:
    """Whole busy cores in a measured busy-core total: a core's share counts from `threshold`."""
    return max(0, math.floor(busy + 1 - threshold + 1e-9))


def decide(usable: int, busy: float | None, env: Mapping[str, str], requested: int | None = None,
           threshold: float = BUSY_THRESHOLD) -> Decision:
    """The thread count for `usable` cores of which `busy` (cores' worth of CPU time, None: unknown) other
    processes use, given the environment `env` and an explicit request (--threads / train.threads; 0 or None:
    none). Pure: no measurement, no side effects."""
    if requested:
        return Decision(int(requested), "requested (--threads / train.threads)")
    value = env.get(ENV, "").strip().lower()
    if value and value != "auto":
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n >= 1:
            return Decision(n, f"{ENV}={n}")
        log.warning("%s=%r is neither 'auto' nor a positive integer; ignored", ENV, env.get(ENV))
    if value != "auto":
        var = user_setting(env)
        if var:
            return Decision(None, f"{var} set by the user")
    if busy is None:
        return Decision(None, "the machine's load is unknown: torch's default")
    usable = max(int(usable), 1)
    n = max(1, usable - busy_core_count(busy, threshold))
    return Decision(n, f"{usable} usable core(s), {busy:.2f} busy with other processes", auto=True)


# ---------------------------------------------------------------- measuring the machine


def usable_cpus() -> list[int]:
    """The CPU ids this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def cgroup_cpu_limit() -> float | None:
    """Cores' worth of CPU time a cgroup quota allows (cgroup v2 cpu.max or v1 cfs quota), None: no quota."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def physical_cores(cpus: list[int]) -> int:
    """Distinct physical cores among `cpus` (SMT siblings counted once); len(cpus) where topology is unknown."""
    cores = set()
    for c in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{c}/topology")
        try:
            cores.add(((base / "physical_package_id").read_text().strip(), (base / "core_id").read_text().strip()))
        except OSError:
            return len(cpus)
    return len(cores) or len(cpus)


def usable_cores(cpus: list[int] | None = None) -> int:
    """Cores torch threads can use: affinity, capped by physical cores and a cgroup quota (at least 1)."""
    cpus = usable_cpus() if cpus is None else cpus
    n = physical_cores(cpus)
    limit = cgroup_cpu_limit()
    if limit is not None:
        n = min(n, math.floor(limit + 1e-9))
    return max(n, 1)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def _cpu_sample(cpus: list[int]) -> tuple[int, int] | None:
    """(busy jiffies, total jiffies) summed over `cpus` from /proc/stat; None where it cannot be read."""
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return None
    wanted = {f"cpu{c}" for c in cpus}
    busy = total = 0
    for line in lines:
        parts = line.split()
        if parts and parts[0] in wanted:
            v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
            idle = v[3] + v[4]
            total += sum(v)
            busy += sum(v) - idle
    return (busy, total) if total else None


@dataclass
class _Reading:
    t: float
    own: float
    stat: tuple[int, int] | None


def _read(cpus: list[int]) -> _Reading:
    return _Reading(time.monotonic(), _own_cpu_s(), _cpu_sample(cpus))


def _others_busy(a: _Reading, b: _Reading, ncpus: int) -> float | None:
    """Cores' worth of CPU time processes other than this one used between readings a and b."""
    if a.stat is None or b.stat is None or b.stat[1] <= a.stat[1] or b.t <= a.t:
        return None
    share = (b.stat[0] - a.stat[0]) / (b.stat[1] - a.stat[1])
    return max(0.0, share * ncpus - (b.own - a.own) / (b.t - a.t))


def busy_cores(cpus: list[int] | None = None, window: float = WINDOW_S) -> float | None:
    """Cores' worth of CPU time other processes use now: /proc/stat over `window` seconds, else the 1-minute
    load average, else None."""
    cpus = usable_cpus() if cpus is None else cpus
    a = _read(cpus)
    if a.stat is not None:
        time.sleep(window)
        busy = _others_busy(a, _read(cpus), len(cpus))
        if busy is not None:
            return busy
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# ---------------------------------------------------------------- applying it

APPLIED: dict = {}  # the start-up decision: threads, reason, auto, torch_loaded (whether torch came first)


def set_threads(n: int) -> None:
    """Use `n` intra-op threads: exported for torch's OpenMP runtime when torch is not loaded yet (marked as
    this policy's, so child processes decide again), else through torch.set_num_threads."""
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    else:
        os.environ["OMP_NUM_THREADS"] = os.environ[MARK] = str(n)


def apply_policy(requested: int | None = None, env: Mapping[str, str] | None = None) -> Decision:
    """Decide (measuring the machine only when the decision depends on it) and apply; logs at debug level."""
    env = os.environ if env is None else env
    decision = decide(1, None, env, requested)
    if decision.threads is None and decision.reason.startswith("the machine's load"):  # auto: measure
        cpus = usable_cpus()
        decision = decide(usable_cores(cpus), busy_cores(cpus), env, requested)
    APPLIED.clear()
    APPLIED.update(threads=decision.threads, reason=decision.reason, auto=decision.auto,
                   torch_loaded="torch" in sys.modules)
    if decision.threads is not None:
        set_threads(decision.threads)
    log.debug("threads: %s (%s)", decision.threads if decision.threads is not None else "unchanged", decision.reason)
    return decision


def requested_from_argv(argv: list[str]) -> int | None:
    """The value of a --threads N / --threads=N option in raw arguments (None: absent or not a number)."""
    for i, a in enumerate(argv):
        value = a.partition("=")[2] if a.startswith("--threads=") else (
            argv[i + 1] if a == "--threads" and i + 1 < len(argv) else None)
        if value is not None:
            try:
                return int(value) if int(value) >= 1 else None
            except ValueError:
                return None
    return None


def apply_cli_policy(argv: list[str] | None = None) -> Decision | None:
    """The command line's start-up policy: applied only for the commands that run torch work (help, info and
    argument errors pay no measurement)."""
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMPUTE_COMMANDS:
        return None
    return apply_policy(requested_from_argv(argv))


class Monitor:
    """Re-decides the thread count during a long run from the CPU time other processes used since the previous
    check: call `step()` once per training step; every `every_s` seconds it reads /proc/stat (microseconds) and
    calls torch.set_num_threads when the answer changed: at once for fewer threads, after `confirm` checks in a
    row for more."""

    def __init__(self, threads: int, every_s: float = 10.0, confirm: int = 2):
        self.cpus = usable_cpus()
        self.usable = usable_cores(self.cpus)
        self.threads, self.every_s, self.confirm = threads, every_s, confirm
        self.last = _read(self.cpus)
        self.pending: list[int] = []
        self.changes = 0

    def step(self) -> int:
        now = time.monotonic()
        if now - self.last.t < self.every_s:
            return self.threads
        reading = _read(self.cpus)
        busy = _others_busy(self.last, reading, len(self.cpus))
        self.last = reading
        if busy is None:
            return self.threads
        want = decide(self.usable, busy, {ENV: "auto"}).threads
        if want < self.threads:
            self.pending = []
            self._set(want, busy)
        elif want > self.threads:
            self.pending.append(want)
            if len(self.pending) >= self.confirm:
                self._set(min(self.pending), busy)
                self.pending = []
        else:
            self.pending = []
        return self.threads

    def _set(self, n: int, busy: float) -> None:
        import torch

        log.debug("threads: %d -> %d (%.2f cores busy with other processes)", self.threads, n, busy)
        torch.set_num_threads(n)
        self.threads = n
        self.changes += 1


def training_monitor(requested: int) -> Monitor | None:
    """For the training loop: `train.threads` N > 0 is applied as asked (None returned); 0 follows the process's
    automatic policy (a `Monitor`) when one was applied at start-up, else leaves torch's setting alone."""
    if requested > 0:
        import torch

        torch.set_num_threads(requested)
        return None
    if not APPLIED.get("auto"):
        return None
    import torch

    return Monitor(torch.get_num_threads())
