import math

import pytest
import torch

from cm_media.math import schedules


def test_karras_endpoints_monotone_float64():
    s = schedules.karras_sigmas(18, 0.002, 80.0, 7.0)
    assert s.dtype == torch.float64
    assert s[0].item() == 80.0 and s[-1].item() == 0.002
    assert torch.all(s[1:] < s[:-1])


def test_karras_matches_formula():
    n, lo, hi, rho = 5, 0.002, 80.0, 7.0
    s = schedules.karras_sigmas(n, lo, hi, rho)
    for i in range(n):
        expect = (hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho
        assert s[i].item() == pytest.approx(expect, rel=1e-12)


def test_karras_single_and_invalid():
    assert schedules.karras_sigmas(1).tolist() == [80.0]
    with pytest.raises(ValueError):
        schedules.karras_sigmas(0)


def test_ct_curriculum_values():
    # N(k) = ceil(sqrt(k/K ((s1+1)^2 - s0^2) + s0^2) - 1) + 1
    assert schedules.ct_num_steps(0, 1000, 2, 150) == 2  # N(0) = s0
    assert schedules.ct_num_steps(1000, 1000, 2, 150) == 151
    expect = math.ceil(math.sqrt(0.5 * (151**2 - 4) + 4) - 1) + 1
    assert schedules.ct_num_steps(500, 1000, 2, 150) == expect == 107


def test_ct_target_ema():
    assert schedules.ct_target_ema(2, s0=2, mu0=0.95) == pytest.approx(0.95)
    assert schedules.ct_target_ema(151, s0=2, mu0=0.95) == pytest.approx(math.exp(2 * math.log(0.95) / 151))


def test_ict_curriculum_values():
    # K = 800000, s0 = 10, s1 = 1280: K' = floor(800000 / 8) = 100000
    K = 800_000
    assert schedules.ict_num_steps(0, K) == 11
    assert schedules.ict_num_steps(99_999, K) == 11
    assert schedules.ict_num_steps(100_000, K) == 21
    assert schedules.ict_num_steps(350_000, K) == 81
    assert schedules.ict_num_steps(K, K) == 1281
    assert schedules.ict_num_steps(10 * K, K) == 1281  # capped at s1 + 1
    # short-run curriculum: s1 = 40 -> two doublings
    assert [schedules.ict_num_steps(k, 300, 10, 40) for k in (0, 99, 100, 200, 299)] == [11, 11, 21, 41, 41]


def test_lognormal_index_probs_sum_and_shape():
    grid = schedules.karras_sigmas(21).flip(0)
    p = schedules.lognormal_index_probs(grid, -1.1, 2.0)
    assert p.shape == (20,)
    assert p.sum().item() == pytest.approx(1.0, abs=1e-12)
    assert torch.all(p >= 0)
    # against the erf formula for one interval
    cdf = lambda s: math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0))  # noqa: E731
    raw = [cdf(grid[i + 1].item()) - cdf(grid[i].item()) for i in range(20)]
    assert p[7].item() == pytest.approx(raw[7] / sum(raw), rel=1e-9)


def test_lognormal_indices_in_range():
    grid = schedules.karras_sigmas(11).flip(0)
    idx = schedules.sample_lognormal_indices(grid, 1000, generator=torch.Generator().manual_seed(0))
    assert idx.min() >= 0 and idx.max() <= 9


def test_edm_sigma_sampler_distribution():
    s = schedules.edm_sample_sigmas(20000, -1.2, 1.2, torch.Generator().manual_seed(0))
    assert torch.log(s).mean().item() == pytest.approx(-1.2, abs=0.05)
    assert torch.log(s).std().item() == pytest.approx(1.2, abs=0.05)


def test_ect_r_mapping():
    t = torch.tensor([0.01, 1.0, 10.0])
    r = schedules.ect_r(t, stage=0)
    expect = t * (1 - 0.5 * (1 + 8 * torch.sigmoid(-t)))
    assert torch.allclose(r, expect.clamp(min=0))
    assert r[0].item() == 0.0  # small t: r <= 0 clamps to 0 (plain diffusion target)
    later = schedules.ect_r(t, stage=4)
    assert torch.all(t - later <= t - r)  # the gap shrinks as the stage grows
