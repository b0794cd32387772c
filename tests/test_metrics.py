"""Metrics against hand/scipy computations on small Gaussians and constructed sets."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from cm_media.eval import metrics


def _gauss(n, d, seed, shift=0.0, scale=1.0):
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(1234)) * 0.3 + torch.eye(d)  # correlations
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g) @ a) * scale + shift


def _fd_scipy(x, y):
    x, y = x.double().numpy(), y.double().numpy()
    m1, m2 = x.mean(0), y.mean(0)
    c1, c2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * covmean))


def test_frechet_distance_matches_scipy():
    x, y = _gauss(400, 6, 0), _gauss(300, 6, 1, shift=0.5, scale=1.3)
    assert metrics.frechet_distance(x, y) == pytest.approx(_fd_scipy(x, y), rel=1e-6)


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    # N(0, I) vs N(m, s^2 I) in d dims: ||m||^2 + d (1 - s)^2, from the stats directly
    d, s = 5, 2.0
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.full((d,), 0.5, dtype=torch.float64)
    c1, c2 = torch.eye(d, dtype=torch.float64), s**2 * torch.eye(d, dtype=torch.float64)
    assert metrics.frechet_distance_from_stats(mu1, c1, mu2, c2) == pytest.approx(d * 0.25 + d * (1 - s) ** 2)


def test_frechet_distance_of_identical_sets_is_zero_and_grows_with_shift():
    x = _gauss(200, 8, 2)
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8)
    assert metrics.frechet_distance(x, x + 1.0) == pytest.approx(8.0, rel=1e-6)  # a pure mean shift: ||1||^2


def test_mmd2_unbiased_matches_direct_double_loop():
    x, y = _gauss(12, 3, 3).double(), _gauss(9, 3, 4, shift=0.3).double()

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    assert metrics.mmd2_unbiased(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-9)


def test_kid_is_near_zero_for_same_distribution_and_positive_for_different():
    a, b = _gauss(600, 4, 5), _gauss(600, 4, 6)
    a_shift = _gauss(600, 4, 7, shift=1.0)
    same, diff = metrics.kid(a, b), metrics.kid(a, a_shift)
    assert same.blocks == 10 and same.block_size == 60
    assert abs(same.value) < 3 * same.se  # unbiased: zero within its error
    assert diff.value > 10 * diff.se > 0


def test_kid_block_mean_and_standard_error():
    x, y = _gauss(64, 3, 8), _gauss(64, 3, 9, shift=0.5)
    r = metrics.kid(x, y, blocks=4, min_block=16, seed=1)
    g = torch.Generator().manual_seed(1)
    px, py = torch.randperm(64, generator=g), torch.randperm(64, generator=g)
    est = [metrics.mmd2_unbiased(x[px[i * 16:(i + 1) * 16]], y[py[i * 16:(i + 1) * 16]]) for i in range(4)]
    assert r.value == pytest.approx(np.mean(est))
    assert r.se == pytest.approx(np.std(est, ddof=1) / 2)
    small = metrics.kid(x[:20], y[:20])  # too small for two blocks of 16: one block, no error estimate
    assert small.blocks == 1 and math.isnan(small.se)


def test_precision_recall_on_constructed_sets():
    x = _gauss(100, 5, 10)
    assert metrics.precision_recall(x, x) == (1.0, 1.0)
    assert metrics.precision_recall(x, x + 100.0) == (0.0, 0.0)
    # fakes covering only half of the real set: full precision, partial recall
    real = torch.cat([_gauss(50, 2, 11), _gauss(50, 2, 12) + 50])
    fake = _gauss(50, 2, 13)
    p, r = metrics.precision_recall(real, fake, k=3)
    assert p > 0.9 and 0.3 < r < 0.6


def test_knn_radii_excludes_the_point_itself():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    assert metrics.knn_radii(x, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert metrics.knn_radii(x, 2).tolist() == [3.0, 2.0, 3.0, 6.0]


def test_quality_metrics_rank_closer_sets_better():
    real = _gauss(300, 6, 14)
    near, far = _gauss(300, 6, 15, shift=0.2), _gauss(300, 6, 16, shift=2.0)
    qn, qf = metrics.quality_metrics(real, near), metrics.quality_metrics(real, far)
    assert qn["fd"] < qf["fd"] and qn["kid"] < qf["kid"]
    assert qn["precision"] > qf["precision"] and qn["recall"] > qf["recall"]
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        metrics.frechet_distance(torch.zeros(5), torch.zeros(5))


# ---------------------------------------------------------------- per-modality features


def test_image_features_shape_and_gradients():
    from modalities.image.features import features, gradients, learned_features

    flat = torch.full((2, 1, 8, 8), 0.5)
    edge = torch.zeros(2, 1, 8, 8)
    edge[..., 4:] = 1.0
    f_flat, f_edge = features(flat), features(edge)
    assert f_flat.shape == (2, 64 + 32 + 8 + 4)
    dx, dy = gradients(flat)
    assert dx.abs().max() == 0 and dy.abs().max() == 0
    dx, dy = gradients(edge)
    assert dx.abs().max() == 0.5 and dy.abs().max() == 0  # a vertical edge has only x-gradients
    assert f_edge[0, -2] > f_flat[0, -2]  # mean gradient magnitude
    assert features(torch.rand(3, 3, 32, 32)).shape == (3, 3 * 64 + 32 + 8 + 4)  # RGB at any size
    net = learned_features(torch.rand(3, 1, 8, 8))
    assert net is not None and net.shape == (3, 64)


def test_shipped_digits_net_classifies_held_out_digits():
    from modalities.image.datasets import digits_pixels, split
    from modalities.image.feature_net import load_feature_net

    net = load_feature_net()
    assert net is not None, "modalities/image/feature_net.safetensors is missing"
    pixels, labels = digits_pixels()
    ev = split(len(pixels), 0.1, "eval")
    with torch.no_grad():
        acc = (net(pixels[ev]).argmax(1) == labels[ev]).float().mean()
    assert acc > 0.9


def test_video_features_see_motion():
    from modalities.video.features import features

    def clip(move):
        v = torch.zeros(1, 1, 6, 16, 16)
        for t in range(6):
            x0 = 2 + (2 * t if move else 0)
            v[0, 0, t, 6:10, x0:x0 + 4] = 1
        return v

    f = features(torch.cat([clip(True), clip(False)]))
    assert f.shape == (2, 108 + 5 + 32 + 4)
    moving, static = f[0, 108:], f[1, 108:]
    assert static.abs().max() == 0
    assert moving[0] > 0 and moving[2] == pytest.approx(4 * 2 / 15, rel=1e-4)  # centroid speed, x4 scaled


def test_audio_features_track_pitch_and_stay_finite_on_silence():
    from modalities.audio.features import N_MELS, N_MFCC, features

    class Cfg:
        class codec:
            sample_rate = 8000

    t = torch.arange(4000) / 8000
    clips = torch.stack([torch.sin(2 * math.pi * 220 * t), torch.sin(2 * math.pi * 1760 * t), torch.zeros_like(t)])
    f = features(clips[:, None] * 0.5, Cfg)
    assert f.shape == (3, 2 * N_MELS + 2 * N_MFCC + 12) and torch.isfinite(f).all()
    centroid = f[:, 2 * N_MELS + 2 * N_MFCC]  # first spectral descriptor: mean centroid / Nyquist
    assert centroid[1] > 4 * centroid[0]
    assert centroid[0] == pytest.approx(220 / 4000, rel=0.3)
