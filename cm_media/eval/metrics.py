"""Distribution distances on feature vectors [N, D]: Frechet distance, unbiased KID, k-NN precision/recall.

All work happens in float64 on the CPU. FD is biased at small N (report the sample sizes); KID's estimator
is unbiased (Binkowski et al. 2018); precision/recall use k-NN manifolds (Kynkaanniemi et al. 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


def _f64(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to("cpu", torch.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {tuple(x.shape)}")
    return x


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix via its eigendecomposition."""
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def gaussian_stats(x) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and unbiased covariance [D, D] of features [N, D]."""
    x = _f64(x)
    if x.shape[0] < 2:
        raise ValueError("need at least 2 feature vectors for a covariance")
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def frechet_distance_from_stats(mu1, cov1, mu2, cov2) -> float:
    """||mu1 - mu2||^2 + tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2); the inner root is of a PSD matrix, so eigh suffices."""
    root1 = _sqrtm_psd(cov1)
    cross = torch.linalg.eigvalsh(root1 @ cov2 @ root1).clamp(min=0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross
    return max(float(value), 0.0)


def frechet_distance(x, y) -> float:
    """Frechet distance between Gaussians fitted to features x [N, D] and y [M, D]."""
    return frechet_distance_from_stats(*gaussian_stats(x), *gaussian_stats(y))


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KID's kernel k(a, b) = (a.b / D + 1)^3: [N, D] x [M, D] -> [N, M]."""
    return (x @ y.T / x.shape[1] + 1) ** 3


def mmd2_unbiased(x, y) -> float:
    """Unbiased MMD^2 with the polynomial kernel: mean off-diagonal k(x,x') + k(y,y') - 2 mean k(x,y)."""
    x, y = _f64(x), _f64(y)
    n, m = x.shape[0], y.shape[0]
    if n < 2 or m < 2:
        raise ValueError("need at least 2 vectors per set for unbiased MMD")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


@dataclass
class KID:
    value: float  # mean of the per-block unbiased MMD^2 estimates
    se: float  # standard error of that mean (blocks are disjoint, hence independent)
    blocks: int
    block_size: int


def kid(x, y, blocks: int = 10, min_block: int = 16, seed: int = 0) -> KID:
    """KID with a standard error: unbiased MMD^2 on `blocks` disjoint random blocks of both sets.

    Fewer blocks are used when the sets are too small for `min_block` vectors each; one block gives se = nan.
    """
    x, y = _f64(x), _f64(y)
    n = min(x.shape[0], y.shape[0])
    blocks = max(1, min(blocks, n // min_block))
    size = n // blocks
    if size < 2:
        raise ValueError("KID needs at least 2 vectors per set")
    g = torch.Generator().manual_seed(seed)
    px, py = torch.randperm(x.shape[0], generator=g), torch.randperm(y.shape[0], generator=g)
    est = torch.tensor([
        mmd2_unbiased(x[px[i * size:(i + 1) * size]], y[py[i * size:(i + 1) * size]]) for i in range(blocks)
    ], dtype=torch.float64)
    se = float(est.std(unbiased=True) / math.sqrt(blocks)) if blocks > 1 else float("nan")
    return KID(float(est.mean()), se, blocks, size)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of x [N, D] to its k-th nearest other row: [N]."""
    d = torch.cdist(x, x)  # [N, N]; the diagonal (0) is the point itself, hence k + 1
    k = min(k, x.shape[0] - 1)
    return d.kthvalue(k + 1, dim=1).values


def coverage_fraction(points: torch.Tensor, centers: torch.Tensor, radii: torch.Tensor) -> float:
    """Share of `points` inside at least one ball (center, radius) of the k-NN manifold."""
    d = torch.cdist(points, centers)  # [P, C]
    return float((d <= radii[None, :]).any(dim=1).double().mean())


def precision_recall(real, fake, k: int = 3) -> tuple[float, float]:
    """Improved precision (fake inside the real manifold) and recall (real inside the fake manifold)."""
    real, fake = _f64(real), _f64(fake)
    precision = coverage_fraction(fake, real, knn_radii(real, k))
    recall = coverage_fraction(real, fake, knn_radii(fake, k))
    return precision, recall


def standardizer(reference) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the reference features, so no feature family dominates distances.

    The std is floored at a tenth of its mean, so near-constant reference dimensions (blank image corners)
    do not turn tiny deviations into huge distances.
    """
    ref = _f64(reference)
    sd = ref.std(0)
    return ref.mean(0), sd.clamp(min=max(0.1 * float(sd.mean()), 1e-8))


def quality_metrics(real, fake, k: int = 3, kid_blocks: int = 10, standardize: bool = False) -> dict[str, float]:
    """FD, KID +- se and precision/recall of `fake` against `real` (optionally after a shared standardization).

    Off by default: features are designed on comparable scales, and dividing by small reference stds lets
    single outliers dominate KID's cubic kernel.
    """
    real, fake = _f64(real), _f64(fake)
    if standardize:
        mu, sd = standardizer(real)
        real, fake = (real - mu) / sd, (fake - mu) / sd
    k_ = kid(real, fake, blocks=kid_blocks)
    p, r = precision_recall(real, fake, k)
    return {"fd": frechet_distance(real, fake), "kid": k_.value, "kid_se": k_.se, "precision": p, "recall": r,
            "kid_blocks": k_.blocks}


# ---------------------------------------------------------------- classifier scores (SC09-style)
# p: class probabilities [N, K] of generated samples from a classifier trained on the real data.


def _probs(p) -> torch.Tensor:
    p = torch.as_tensor(p).detach().to("cpu", torch.float64)
    if p.ndim != 2:
        raise ValueError(f"class probabilities must be [N, K], got shape {tuple(p.shape)}")
    return p.clamp_min(1e-12) / p.clamp_min(1e-12).sum(1, keepdim=True)


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.log()).sum(-1)


def inception_score(p) -> float:
    """Inception Score exp(E_x KL(p(y|x) || p(y))), p(y) the mean prediction (Salimans et al. 2016); 1..K."""
    p = _probs(p)
    marginal = p.mean(0, keepdim=True)
    return math.exp(float((p * (p.log() - marginal.log())).sum(1).mean()))


def modified_inception_score(p) -> float:
    """Modified IS exp(E_{x,x'} KL(p(y|x) || p(y|x'))) over all pairs x != x' (Gurumurthy et al. 2017): high
    when each sample is confident and samples differ from each other."""
    p = _probs(p)
    n = p.shape[0]
    if n < 2:
        return float("nan")
    logp = p.log()
    # sum over pairs of KL(p_i || p_j) = sum_i n (-H(p_i)) - sum_{i,j} p_i . log p_j ; the i = j terms are 0
    cross = p @ logp.T  # [N, N]: sum_y p_i(y) log p_j(y)
    total = float(-(_entropy(p)).sum() * n - cross.sum())
    return math.exp(total / (n * (n - 1)))


def am_score(p, real_marginal) -> float:
    """AM score KL(p*(y) || p(y)) + E_x H(p(y|x)) (Zhou et al. 2018), p* the real data's label distribution [K]:
    0 is best (confident samples whose classes are spread like the real data's)."""
    p = _probs(p)
    star = torch.as_tensor(real_marginal, dtype=torch.float64).clamp_min(1e-12)
    star = star / star.sum()
    marginal = p.mean(0)
    return float((star * (star.log() - marginal.log())).sum() + _entropy(p).mean())


def classifier_scores(p, real_marginal=None, labels=None) -> dict[str, float]:
    """IS, modified IS, AM score (with `real_marginal`) and accuracy (with the requested `labels` [N])."""
    out = {"is": inception_score(p), "mis": modified_inception_score(p)}
    if real_marginal is not None:
        out["am"] = am_score(p, real_marginal)
    if labels is not None:
        out["accuracy"] = float((torch.as_tensor(p).argmax(1).cpu() == torch.as_tensor(labels).cpu()).double().mean())
    return out
