"""Frechet distance between Gaussians, and Gaussian moments from running sums: pure maths.

Stateless functions only (no network, no state, no files). The FID is the Frechet
distance between the Gaussians fitted to two sets of Inception features::

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

(docs/maths.md, 'FID protocol').
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["frechet_distance", "gaussian_moments"]


def _as_float64_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; FID statistics must be finite.")
    return arr


def gaussian_moments(num_samples: int | Tensor, feature_sum: Tensor, outer_sum: Tensor) -> tuple[np.ndarray, np.ndarray]:
    r"""Mean and unbiased covariance from running float64 sums, as float64 numpy arrays.

    With ``n`` samples, ``S = sum_i f_i`` and ``P = sum_i f_i f_i^T``:

    .. math:: \mu = S / n, \qquad \Sigma = (P - n \mu \mu^T) / (n - 1)

    (the covariance ``np.cov`` gives in pytorch-fid), symmetrised exactly as
    ``(Sigma + Sigma^T) / 2`` since the sums are symmetric only up to round-off. These
    are the sums torchmetrics' ``FrechetInceptionDistance`` keeps
    (``*_features_num_samples``, ``*_features_sum``, ``*_features_cov_sum``).

    Raises:
        RuntimeError: fewer than 2 samples.
    """
    n = int(num_samples)
    if n < 2:
        raise RuntimeError(f"FID statistics need at least 2 images, got {n}.")
    mu = feature_sum / n
    sigma = (outer_sum - n * torch.outer(mu, mu)) / (n - 1)
    sigma = 0.5 * (sigma + sigma.T)
    return mu.cpu().numpy(), sigma.cpu().numpy()


def frechet_distance(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6, method: str = "sqrtm"
) -> float:
    r"""Frechet distance between N(mu1, S1) and N(mu2, S2), in float64.

    .. math:: d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\bigl(S_1 + S_2 - 2 (S_1 S_2)^{1/2}\bigr)

    The numerics are pytorch-fid's ``calculate_frechet_distance`` step for step
    (``scipy.linalg.sqrtm`` of ``S1 @ S2``; only if that is not finite, ``eps`` is added
    to both diagonals and the root recomputed; an imaginary round-off part is dropped,
    or rejected when a diagonal entry's exceeds 1e-3). It is re-implemented rather than
    called because pytorch-fid 0.3 passes ``sqrtm(..., disp=False)``, which SciPy 1.17
    deprecates (and mishandles for 1x1 input) and SciPy 1.18 removes. Accepts numpy
    arrays or torch tensors.

    ``method="eigh"`` computes the same trace from symmetric eigendecompositions only,
    ``Tr (S1 S2)^(1/2) = sum_i sqrt(lambda_i(S1^(1/2) S2 S1^(1/2)))`` (the product is
    similar to that PSD matrix), which is several times faster than ``sqrtm`` for
    d = 2048; it agrees with the default to round-off (``bench/fid_speed.py`` measures
    it). The default stays pytorch-fid's route so numbers match published ones.

    Args:
        mu1, mu2: mean vectors, shape ``[d]``.
        sigma1, sigma2: covariance matrices, shape ``[d, d]``.
        eps: diagonal offset used only when the product is numerically singular.
        method: ``"sqrtm"`` (pytorch-fid) or ``"eigh"``.

    Returns:
        The distance as a Python float (the FID when the inputs are Inception
        pool3 statistics).
    """
    from scipy import linalg

    mu1 = np.atleast_1d(_as_float64_numpy(mu1, "mu1"))
    mu2 = np.atleast_1d(_as_float64_numpy(mu2, "mu2"))
    sigma1 = np.atleast_2d(_as_float64_numpy(sigma1, "sigma1"))
    sigma2 = np.atleast_2d(_as_float64_numpy(sigma2, "sigma2"))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must be vectors of equal length, got {mu1.shape} and {mu2.shape}.")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"sigma1 and sigma2 must be [{d}, {d}] covariance matrices, got {sigma1.shape} and {sigma2.shape}."
        )
    diff = mu1 - mu2
    if method == "eigh":
        w1, v1 = np.linalg.eigh(0.5 * (sigma1 + sigma1.T))
        r1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
        m = r1 @ sigma2 @ r1
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0, None)).sum()
        return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    if method != "sqrtm":
        raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}.")
    with warnings.catch_warnings():
        # sample covariances of n < d images are singular; sqrtm warns, the result is still usable
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals.", stacklevel=2)
            offset = np.eye(d) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}.")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))
