"""Attention helper: values against a hand-written softmax attention, backend resolution and fallbacks."""

import logging
import math
import sys
import types

import pytest
import torch

from cm_media.nn import attention as attn_mod
from cm_media.nn.attention import TokenAttention, attention, resolve_backend


@pytest.fixture
def fresh_caches(monkeypatch):
    """Forget earlier probes and resolutions so each test sees its own xformers situation."""
    monkeypatch.setattr(attn_mod, "_PROBED", {})
    monkeypatch.setattr(attn_mod, "_RESOLVED", {})
    monkeypatch.setattr(attn_mod, "_FAILED", set())


@pytest.fixture
def no_xformers(monkeypatch, fresh_caches):
    monkeypatch.setitem(sys.modules, "xformers", None)  # makes `import xformers...` raise ImportError
    monkeypatch.setitem(sys.modules, "xformers.ops", None)


def reference_attention(q, k, v):
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])  # [B, H, L, L]
    return torch.softmax(scores, dim=-1) @ v


def test_attention_matches_softmax_formula():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 8, generator=g) for _ in range(3))
    torch.testing.assert_close(attention(q, k, v, "sdpa"), reference_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_auto_on_cpu_without_xformers_is_sdpa_and_logs_once(no_xformers, caplog):
    with caplog.at_level(logging.INFO, logger="cm_media.nn.attention"):
        assert resolve_backend("auto", "cpu") == "sdpa"
        assert resolve_backend("auto", "cpu") == "sdpa"
    lines = [r.getMessage() for r in caplog.records if "attention backend" in r.getMessage()]
    assert len(lines) == 1 and "sdpa" in lines[0]


def test_requested_xformers_without_it_warns_and_uses_sdpa(no_xformers, caplog):
    with caplog.at_level(logging.INFO, logger="cm_media.nn.attention"):
        assert resolve_backend("xformers", "cpu") == "sdpa"
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    q = torch.randn(1, 2, 4, 8)
    torch.testing.assert_close(attention(q, q, q, "xformers"), reference_attention(q, q, q), atol=1e-5, rtol=1e-5)


def test_unknown_backend_raises(fresh_caches):
    with pytest.raises(ValueError, match="unknown attention backend 'flash9'"):
        resolve_backend("flash9", "cpu")


def _fake_xformers(monkeypatch, fails_for_dim=None):
    """Install a stand-in xformers whose kernel is plain softmax attention on [B, L, H, d] (or raises)."""
    calls = []

    def memory_efficient_attention(q, k, v):
        calls.append(q.shape[-1])
        if q.shape[-1] == fails_for_dim:
            raise NotImplementedError("no kernel for this head dim")
        out = reference_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)

    pkg, ops = types.ModuleType("xformers"), types.ModuleType("xformers.ops")
    ops.memory_efficient_attention = memory_efficient_attention
    pkg.ops = ops
    monkeypatch.setitem(sys.modules, "xformers", pkg)
    monkeypatch.setitem(sys.modules, "xformers.ops", ops)
    return calls


def test_xformers_used_when_its_kernel_runs(monkeypatch, fresh_caches):
    calls = _fake_xformers(monkeypatch)
    assert resolve_backend("auto", "cpu") == "sdpa"  # auto keeps torch's CPU kernel
    assert resolve_backend("xformers", "cpu") == "xformers"
    q, k, v = torch.randn(3, 2, 2, 6, 16).unbind(0)
    out = attention(q, k, v, "xformers")
    assert calls[-1] == 16  # the (fake) xformers kernel ran, in [B, L, H, d] layout
    torch.testing.assert_close(out, reference_attention(q, k, v), atol=1e-5, rtol=1e-5)


def test_failing_xformers_kernel_falls_back_to_sdpa(monkeypatch, fresh_caches, caplog):
    calls = _fake_xformers(monkeypatch, fails_for_dim=12)
    q = torch.randn(2, 2, 5, 12)
    with caplog.at_level(logging.WARNING, logger="cm_media.nn.attention"):
        first = attention(q, q, q, "xformers")
        second = attention(q, q, q, "xformers")
    torch.testing.assert_close(first, reference_attention(q, q, q), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, first)
    assert calls.count(12) == 1  # the failing kernel is not retried
    assert sum("xformers failed" in r.getMessage() for r in caplog.records) == 1


def test_token_attention_shape_and_heads():
    layer = TokenAttention(width=24, num_heads=3)
    assert layer(torch.randn(2, 7, 24)).shape == (2, 7, 24)
    with pytest.raises(ValueError, match="not divisible"):
        TokenAttention(width=24, num_heads=5)
