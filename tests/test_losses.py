import math

import pytest
import torch

from cm_media.math import losses
from cm_media.math.parameterization import edm_loss_weight


def test_pseudo_huber_hand_computed():
    x = torch.tensor([[3.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    c = 0.5
    d = losses.pseudo_huber(x, y, c)
    assert d.shape == (2,)
    assert d[0].item() == pytest.approx(math.sqrt(25 + 0.25) - 0.5)
    assert d[1].item() == 0.0
    assert losses.pseudo_huber(x, y, 0.0)[0].item() == pytest.approx(5.0)  # c = 0: L2 norm


def test_pseudo_huber_c():
    assert losses.pseudo_huber_c(3 * 32 * 32) == pytest.approx(0.00054 * math.sqrt(3072))


def test_ict_loss_per_sample_and_weight():
    def f(x, s):  # a consistency "network" that returns its input
        return x

    x0 = torch.zeros(2, 1, 3)
    noise = torch.ones(2, 1, 3)
    hi, lo = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 0.5])
    out = losses.ict_loss(f, x0, noise, hi, lo, c=0.0)
    # ||(hi - lo) * 1||_2 over 3 values, times 1 / (hi - lo)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.full((2,), math.sqrt(3)))


def test_magnitude_distance_of_the_complex_streams_only():
    """Stream 0 (2 real values) is ignored; stream 1 holds 2 complex values laid out (re, re, im, im)."""
    x = torch.tensor([[9.0, 9.0, 3.0, 0.0, 4.0, 1.0]])
    y = torch.tensor([[0.0, 0.0, 0.0, 0.0, 5.0, 0.0]])  # |x| = (5, 1): |y| = (5, 0), the first phase turned
    got = losses.magnitude_distance(x, y, [2, 4], [False, True])
    c = losses.pseudo_huber_c(2)
    assert got.shape == (1,) and got.item() == pytest.approx(math.sqrt(1 + c * c) - c, rel=1e-5)
    turned = torch.tensor([[0.0, 0.0, 0.0, 1.0, -5.0, 0.0]])  # same magnitudes, other phases
    assert losses.magnitude_distance(x, turned, [2, 4], [False, True]).abs().item() < 1e-6


def test_ict_loss_adds_the_extra_distance_under_the_same_weight():
    def f(x, s):
        return x

    x0, noise = torch.zeros(2, 1, 3), torch.ones(2, 1, 3)
    hi, lo = torch.tensor([2.0, 1.0]), torch.tensor([1.0, 0.5])
    plain = losses.ict_loss(f, x0, noise, hi, lo, c=0.0)
    more = losses.ict_loss(f, x0, noise, hi, lo, c=0.0, extra=lambda a, b: (a - b).abs().sum((1, 2)))
    assert torch.allclose(more - plain, torch.full((2,), 3.0))  # 3 (hi - lo) per sample, times 1 / (hi - lo)


def test_paired_forward_shares_dropout_mask():
    torch.manual_seed(0)
    drop = torch.nn.Dropout(0.5)

    def f(x, s):
        return drop(x)

    x = torch.ones(4, 1, 64)
    a, b = losses.paired_forward(f, f, x, None, x, None)
    assert torch.equal(a, b)
    assert b.requires_grad is False


def test_ct_loss_zero_when_target_agrees():
    def f(x, s):
        return torch.zeros_like(x)

    x0, noise = torch.randn(3, 2, 4), torch.randn(3, 2, 4)
    out = losses.ct_loss(f, f, x0, noise, torch.full((3,), 2.0), torch.full((3,), 1.0))
    assert torch.equal(out, torch.zeros(3))


def test_edm_loss_against_formula():
    def perfect(x, s):
        return torch.zeros_like(x)

    x0 = torch.full((2, 1, 2, 2), 0.5)
    sigma = torch.tensor([0.5, 2.0])
    out = losses.edm_loss(perfect, x0, torch.randn_like(x0), sigma, 0.5)
    assert torch.allclose(out, edm_loss_weight(sigma, 0.5) * 0.25)
