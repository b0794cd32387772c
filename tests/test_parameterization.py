import math

import pytest
import torch

from cm_media.math.parameterization import (
    Preconditioned,
    append_dims,
    consistency_scalings,
    edm_scalings,
    mean_flat,
    noise_conditioning,
)

SD, SMIN = 0.5, 0.002


@pytest.mark.parametrize("s", [0.002, 0.1, 0.5, 1.0, 10.0, 80.0])
def test_edm_scalings_formula(s):
    c_skip, c_out, c_in = edm_scalings(torch.tensor([s], dtype=torch.float64), SD)
    assert c_skip.item() == pytest.approx(SD**2 / (s**2 + SD**2))
    assert c_out.item() == pytest.approx(s * SD / math.sqrt(s**2 + SD**2))
    assert c_in.item() == pytest.approx(1 / math.sqrt(s**2 + SD**2))


@pytest.mark.parametrize("s", [0.01, 0.5, 2.0, 80.0])
def test_consistency_scalings_formula(s):
    c_skip, c_out, c_in = consistency_scalings(torch.tensor([s], dtype=torch.float64), SD, SMIN)
    assert c_skip.item() == pytest.approx(SD**2 / ((s - SMIN) ** 2 + SD**2))
    assert c_out.item() == pytest.approx(SD * (s - SMIN) / math.sqrt(SD**2 + s**2))
    assert c_in.item() == pytest.approx(1 / math.sqrt(s**2 + SD**2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_scalings_exact(dtype):
    c_skip, c_out, _ = consistency_scalings(torch.tensor([SMIN], dtype=dtype), SD, SMIN)
    assert c_skip.item() == 1.0
    assert c_out.item() == 0.0


def test_noise_conditioning():
    assert noise_conditioning(torch.tensor([1.0])).item() == 0.0
    assert noise_conditioning(torch.tensor([math.e**4])).item() == pytest.approx(1.0)


class Const(torch.nn.Module):
    def forward(self, x, c_noise):
        return torch.full_like(x, 3.0)


def test_consistency_function_boundary_exact_any_axes():
    f = Preconditioned(Const(), "consistency", SD, SMIN)
    for shape in [(2, 1, 16), (2, 3, 4, 4), (2, 3, 2, 4, 4)]:
        x = torch.randn(shape)
        assert torch.equal(f(x, torch.full((2,), SMIN)), x)
        assert not torch.equal(f(x, torch.full((2,), 1.0)), x)


def test_edm_denoiser_combination():
    d = Preconditioned(Const(), "edm", SD, SMIN)
    x = torch.randn(3, 1, 4, 4)
    s = torch.tensor([0.3, 1.0, 5.0])
    c_skip, c_out, _ = edm_scalings(s, SD)
    assert torch.allclose(d(x, s), append_dims(c_skip, 4) * x + append_dims(c_out, 4) * 3.0)


def test_helpers():
    assert append_dims(torch.ones(3), 5).shape == (3, 1, 1, 1, 1)
    assert torch.equal(mean_flat(torch.arange(8.0).reshape(2, 2, 2)), torch.tensor([1.5, 5.5]))
    with pytest.raises(ValueError):
        append_dims(torch.ones(2, 2), 1)
