import math

import pytest
import torch

from cm_media.math import samplers


def test_onestep_equals_f_at_sigma_max():
    calls = []

    def f(x, s):
        calls.append(s.clone())
        return x * 0.5 + 1

    z = torch.randn(3, 2, 5)
    out = samplers.onestep(f, z, 80.0)
    assert torch.allclose(out, 80.0 * z * 0.5 + 1)
    assert len(calls) == 1 and torch.all(calls[0] == 80.0)


def test_multistep_algorithm():
    seen = []

    def f(x, s):
        seen.append((x.clone(), s[0].item()))
        return torch.zeros_like(x)

    z = torch.randn(2, 1, 4)
    g = torch.Generator().manual_seed(1)
    samplers.multistep(f, z, [80.0, 0.8], 0.002, generator=g)
    assert [s for _, s in seen] == [80.0, pytest.approx(0.8)]
    expect_noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(seen[1][0], math.sqrt(0.8**2 - 0.002**2) * expect_noise, atol=1e-6)


def test_default_step_sigmas():
    assert samplers.default_step_sigmas(1) == [80.0]
    s = samplers.default_step_sigmas(3)
    assert len(s) == 3 and s[0] == 80.0 and s[1] > s[2] > 0.002


def gaussian_denoiser(mu, var):
    """Exact denoiser for data ~ N(mu, var): E[x0 | x] = mu + var / (var + s^2) (x - mu)."""

    def d(x, s):
        s2 = s.reshape(-1, *([1] * (x.ndim - 1))) ** 2
        return mu + var / (var + s2) * (x - mu)

    return d


def test_edm_heun_nfe_and_accuracy():
    calls = []
    d0 = gaussian_denoiser(1.0, 0.25)

    def d(x, s):
        calls.append(1)
        return d0(x, s)

    z = torch.randn(4000, 1, 1, generator=torch.Generator().manual_seed(0))
    x = samplers.edm_heun(d, z, samplers.edm_sigmas(18))
    assert len(calls) == 2 * 18 - 1
    assert x.mean().item() == pytest.approx(1.0, abs=0.03)
    assert x.std().item() == pytest.approx(0.5, abs=0.03)


def test_edm_euler_converges_to_data_distribution():
    z = torch.randn(4000, 1, 1, generator=torch.Generator().manual_seed(0))
    x = samplers.edm_euler(gaussian_denoiser(-0.5, 0.04), z, samplers.edm_sigmas(64))
    assert x.mean().item() == pytest.approx(-0.5, abs=0.02)
    assert x.std().item() == pytest.approx(0.2, abs=0.02)
