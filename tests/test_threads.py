"""The CPU thread policy (cm_media/threads.py): the pure decision, the measurement, and that the command line
applies it before torch loads."""

import json
import os
import subprocess
import sys

import pytest

from cm_media import threads
from cm_media.threads import decide

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLEAN = {}  # an environment with no thread variables


@pytest.mark.parametrize("usable, busy, want", [
    (2, 0.0, 2),  # idle 2 cores: both
    (2, 0.05, 2),  # background noise is not a busy core
    (2, 1.0, 1),  # one busy process: one thread
    (2, 0.67, 1),  # a busy process squeezed by our own spinning threads still counts
    (2, 0.49, 2),  # under half a core: not busy
    (2, 2.0, 1),  # all busy: still one thread
    (2, 5.0, 1),  # overloaded: at least one
    (8, 3.2, 5),
    (1, 0.0, 1),
])
def test_decision_from_usable_and_busy_cores(usable, busy, want):
    d = decide(usable, busy, CLEAN)
    assert d.threads == want and d.auto


@pytest.mark.parametrize("var", ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY"])
def test_user_set_environment_is_respected(var):
    d = decide(2, 1.0, {var: "2" if var != "OMP_WAIT_POLICY" else "passive"})
    assert d.threads is None and var in d.reason and not d.auto


def test_own_exported_omp_num_threads_is_not_the_users():
    # a child of a cm-media process sees the OMP_NUM_THREADS the policy exported, marked as the policy's
    assert decide(2, 0.0, {"OMP_NUM_THREADS": "1", threads.MARK: "1"}).threads == 2
    assert decide(2, 0.0, {"OMP_NUM_THREADS": "2", threads.MARK: "1"}).threads is None  # changed since: the user's


def test_cm_media_threads_override_and_explicit_request():
    assert decide(2, 2.0, {"CM_MEDIA_THREADS": "2"}).threads == 2
    assert decide(2, 1.0, {"CM_MEDIA_THREADS": "auto", "OMP_NUM_THREADS": "2"}).threads == 1  # auto wins
    assert decide(2, 1.0, {"CM_MEDIA_THREADS": "bogus"}).threads == 1  # ignored with a warning
    assert decide(2, 1.0, {"CM_MEDIA_THREADS": "0"}).threads == 1
    assert decide(2, 0.0, {"CM_MEDIA_THREADS": "1", "OMP_NUM_THREADS": "4"}, requested=3).threads == 3
    assert decide(2, None, CLEAN).threads is None  # load unknown: torch's default


def test_affinity_smaller_than_cpu_count(monkeypatch):
    # 2 usable CPUs of many: the count follows the affinity mask, and busy time is read for those CPUs only
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: None)
    assert threads.usable_cpus() == [0, 1]
    assert 1 <= threads.usable_cores() <= 2
    assert decide(threads.usable_cores([0, 1]), 0.0, CLEAN).threads <= 2
    monkeypatch.setattr(threads, "cgroup_cpu_limit", lambda: 1.5)  # a container quota of 1.5 cores
    assert threads.usable_cores([0, 1]) == 1


def test_busy_core_measurement_and_argv_request():
    busy = threads.busy_cores(window=0.05)
    assert busy is None or 0 <= busy <= len(threads.usable_cpus()) + 1e-6
    assert threads.requested_from_argv(["train", "c.yaml", "--threads", "3"]) == 3
    assert threads.requested_from_argv(["train", "--threads=2"]) == 2
    assert threads.requested_from_argv(["train", "--threads", "x"]) is None
    assert threads.apply_cli_policy(["info"]) is None and threads.apply_cli_policy(["--help"]) is None


def test_monitor_lowers_at_once_and_raises_after_confirmation(monkeypatch):
    import torch

    before = torch.get_num_threads()
    readings = iter([0.0, 1.0, 0.0, 0.0])  # other processes' busy cores at each check
    monkeypatch.setattr(threads, "_others_busy", lambda a, b, n: next(readings))
    try:
        m = threads.Monitor(2, every_s=0.0)
        m.usable = 2
        assert m.step() == 2  # idle
        assert m.step() == 1 and torch.get_num_threads() == 1  # a busy process: one thread at once
        assert m.step() == 1  # idle once: wait for confirmation
        assert m.step() == 2 and torch.get_num_threads() == 2
        assert m.changes == 2
    finally:
        torch.set_num_threads(before)


def _python(code: str, env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (*threads.USER_VARS, threads.ENV, threads.MARK)}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


_LIGHT_PACKAGE = """
import importlib.util, json, sys, types
# the cm_media package without its __init__ (which loads the library API, and torch with it)
spec = importlib.util.find_spec("cm_media")
pkg = types.ModuleType("cm_media"); pkg.__path__ = list(spec.submodule_search_locations); sys.modules["cm_media"] = pkg
"""

_REPORT = """
sys.argv = ["cm-media", "generate", "image", "--threads", "{n}"] if "{n}" else ["cm-media", "generate", "image"]
import cm_media.cli
from cm_media import threads
import torch
print(json.dumps({{**threads.APPLIED, "torch_threads": torch.get_num_threads(),
                  "omp": __import__("os").environ.get("OMP_NUM_THREADS")}}))
"""


@pytest.mark.parametrize("n", ["", "1"])
def test_cli_module_applies_the_policy_before_torch(n):
    """The CLI module's own imports come before torch: the policy exports OMP_NUM_THREADS for torch's OpenMP
    runtime and torch starts with that count."""
    r = _python(_LIGHT_PACKAGE + _REPORT.format(n=n), {})
    assert r["torch_loaded"] is False
    assert r["threads"] >= 1 and r["torch_threads"] == r["threads"] == int(r["omp"])
    if n:
        assert r["threads"] == 1 and not r["auto"]
    else:
        assert r["auto"]


def test_user_omp_num_threads_is_left_alone():
    r = _python(_LIGHT_PACKAGE + _REPORT.format(n=""), {"OMP_NUM_THREADS": "1"})
    assert r["threads"] is None and r["torch_threads"] == 1 and "OMP_NUM_THREADS" in r["reason"]


def test_entry_point_applies_the_policy_before_torch():
    """Through the console script's own import (`from cm_media.cli import main`): the package's __init__ loads
    torch lazily, so the policy sets OMP_NUM_THREADS before torch starts."""
    r = _python("import json, sys\n" + _REPORT.format(n=""), {})
    assert r["threads"] >= 1 and r["torch_threads"] == r["threads"]
    assert not r["torch_loaded"]
