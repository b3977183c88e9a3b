"""Precision of the chains' matrix products: float32 or bfloat16 (docs/maths.md, 'Samplers').

Sampling is almost all matrix products ``x_l W`` between a layer's state and a weight matrix.
On CPUs with AVX512_BF16 (and on GPUs) a bfloat16 product runs several times faster than a
float32 one (docs/performance.md). Binary states are exact in bfloat16; the weights are rounded
to 8 significant bits (relative error <= 2^-9), the products accumulate in float32, and the
result is rounded to bfloat16 too (torch has no float32-output bfloat16 product on CPU) before it
comes back in the chain's dtype: each pre-activation within 2^-8 of ``sum_i |x_i W_ij|``. For a
Gaussian visible layer ``v / s^2`` is rounded as well.

Inside ``with matmul_precision("bfloat16"):`` every product :func:`layer_product` computes uses
bfloat16: the chains, mean field, local search, AIS and, under autograd, the training loss's free
energy and its backward pass (the casts are differentiable, so the gradient ``<x_k x_{k+1}^T>``
of binary states is formed by bfloat16 products too, within 2^-8 relative per entry: far below
the Monte Carlo noise of the CD estimate). Outside the context every product is float32.

Without autograd the weights' bfloat16 copies are cached per tensor and refreshed when the
optimizer changes them (``Tensor._version``), so a run of sweeps casts each matrix once.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator, Literal

import torch
from torch import Tensor

MatmulPrecision = Literal["float32", "bfloat16"]
MATMUL_PRECISIONS: tuple[str, ...] = ("float32", "bfloat16")

_local = threading.local()


def current_matmul_precision() -> str:
    """The precision :func:`layer_product` uses now (``"float32"`` outside any context)."""
    return getattr(_local, "precision", "float32")


@contextlib.contextmanager
def matmul_precision(precision: str) -> Iterator[None]:
    """Run the enclosed sampling with ``precision`` (``"float32"`` or ``"bfloat16"``) products."""
    if precision not in MATMUL_PRECISIONS:
        raise ValueError(f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {precision!r}")
    before = current_matmul_precision()
    _local.precision = precision
    try:
        yield
    finally:
        _local.precision = before


class _CastCache:
    """bfloat16 copies of weight tensors, keyed by identity and valid while their version holds."""

    def __init__(self) -> None:
        self._copies: dict[int, tuple[int, int, Tensor, Tensor]] = {}

    def get(self, w: Tensor) -> Tensor:
        key = id(w)
        hit = self._copies.get(key)
        if hit is not None and hit[0] == w._version and hit[1] == w.data_ptr() and hit[2] is w:
            return hit[3]
        copy = w.detach().to(torch.bfloat16)
        if len(self._copies) > 64:  # parameters come and go in tests: keep the cache small
            self._copies.clear()
        self._copies[key] = (w._version, w.data_ptr(), w, copy)
        return copy


_cache = _CastCache()


def layer_product(x: Tensor, w: Tensor, transpose: bool = False) -> Tensor:
    """``x @ w`` (``x @ w.T`` with ``transpose``) in the current precision, returned in ``x``'s dtype.

    bfloat16 applies to float32 operands (float64, used by the exact tests, is never lowered).
    """
    if current_matmul_precision() != "bfloat16" or x.dtype != torch.float32 or w.dtype != torch.float32:
        return x @ (w.t() if transpose else w)
    if torch.is_grad_enabled() and (x.requires_grad or w.requires_grad):
        wb = w.to(torch.bfloat16)  # differentiable cast: the backward products run in bfloat16 too
    else:
        wb = _cache.get(w)
    return (x.to(torch.bfloat16) @ (wb.t() if transpose else wb)).to(x.dtype)
