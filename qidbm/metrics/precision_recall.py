"""Improved precision and recall of generated samples (Kynkaanniemi et al. 2019).

Each set of feature vectors defines a manifold estimate: the union of balls around its
points, each ball's radius the distance to the point's k-th nearest neighbour in its own
set. **Precision** is the fraction of generated samples inside the real manifold (are the
samples realistic?), **recall** the fraction of real samples inside the generated manifold
(is the data's variety covered?). A model that draws only 7s has high precision and low
recall; FID mixes both into one number.

The computation is torch-fidelity's (``torch_fidelity.metric_prc``); qidbm feeds it the same
2048-d Inception pool3 features that FID uses (torch-fidelity's default feature network,
VGG-16, would need a download), so the numbers are comparable between models evaluated
here, not to papers that use VGG-16 features.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch_fidelity.metric_prc import calculate_precision_recall_part


def precision_recall(generated: Tensor, real: Tensor, neighbourhood: int = 3, batch_size: int = 10000) -> dict[str, float]:
    """Precision, recall and their F-score from feature matrices ``generated`` [N, D] and ``real`` [M, D].

    ``precision = mean_{g} 1[exists r: |g - r| <= d_k(r)]``, ``recall = mean_{r} 1[exists g: |r - g| <= d_k(g)]``,
    with ``d_k(x)`` the distance from x to its k-th nearest neighbour within its own set (k = ``neighbourhood``).
    """
    if generated.dim() != 2 or real.dim() != 2 or generated.shape[1] != real.shape[1]:
        raise ValueError(
            f"precision_recall needs two feature matrices [N, D] with the same D, got {tuple(generated.shape)} "
            f"and {tuple(real.shape)}"
        )
    if min(len(generated), len(real)) <= neighbourhood:
        raise ValueError(
            f"precision_recall needs more than neighbourhood={neighbourhood} points in each set, got "
            f"{len(generated)} generated and {len(real)} real"
        )
    p, r = calculate_precision_recall_part(generated.double(), real.double(), neighbourhood, batch_size)
    f = 2 * p * r / (p + r) if p + r > 0 else 0.0
    return {"precision": p, "recall": r, "f_score": f, "neighbourhood": neighbourhood}


@torch.no_grad()
def nearest_neighbour_distances(samples: Tensor, reference: Tensor, batch_size: int = 1000) -> Tensor:
    """Euclidean distance from each of ``samples`` [N, D] to its nearest row of ``reference`` [M, D]
    (pixel space: for binary images the square root of the Hamming distance). Returns [N] float64."""
    ref = reference.flatten(1).to(torch.float32)
    out = [torch.cdist(b.flatten(1).to(torch.float32), ref).min(1).values for b in samples.split(batch_size)]
    return torch.cat(out).to(torch.float64)


def copying_report(samples: Tensor, train: Tensor, test: Tensor, batch_size: int = 1000) -> dict[str, float]:
    """Does the model copy its training images? The distance of each sample to its nearest training
    image, set against the same distance for held-out test images (which the model never saw: what an
    independent draw from the data distribution looks like). ``ratio`` near 1 is healthy; far below 1,
    with many near-zero distances, means memorised training images.
    """
    d_s = nearest_neighbour_distances(samples, train, batch_size)
    d_t = nearest_neighbour_distances(test, train, batch_size)
    tiny = float(d_t.quantile(0.01))
    return {
        "sample_nn_median": float(d_s.median()),
        "test_nn_median": float(d_t.median()),
        "ratio": float(d_s.median() / d_t.median()) if float(d_t.median()) > 0 else float("nan"),
        "fraction_closer_than_test_1pct": float((d_s < tiny).double().mean()),
        "test_1pct_distance": tiny,
    }
