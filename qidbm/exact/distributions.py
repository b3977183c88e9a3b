"""Benchmark distributions on n bits: exact probabilities and seeded sampling.

Probabilities are float64 vectors over the 2^n basis states, index
``sum_k bit_k 2^(n-1-k)`` (bit 0 leftmost, docs/maths.md, 'Qubit order and Pauli strings'). Samples are [num, n]
float64 0/1 tensors drawn with a ``torch.Generator`` seeded from ``seed``.

* :class:`MixtureOfBernoulli` (Amin et al. 2018; DO-EM Appendix D.2):
  ``p(v) = (1/M) sum_k p^(n - d_k) (1 - p)^(d_k)``, d_k = Hamming distance from v to the
  random mode k.
* :class:`BarsAndStripes`: on a rows x cols grid (row-major bits), the standard dataset is
  uniform on the 2^rows + 2^cols - 2 distinct images whose rows are all equal (stripes) or
  whose columns are all equal (bars); ``single_line=True`` is the "simplified BAS" of
  Demidik et al.: uniform on the rows + cols images with exactly one full row or exactly one
  full column on (default grid 2 x n/2).
* :class:`OnSquared` - uniform on n^2 distinct random strings (needs n^2 <= 2^n).
* :class:`Cardinality` - uniform on strings with exactly n/2 ones (n even).
* :class:`Parity` - uniform on even-parity strings.
"""
from __future__ import annotations

import itertools

import torch

from .pauli import basis_bits, bits_to_index

__all__ = [
    "BinaryDistribution",
    "MixtureOfBernoulli",
    "BarsAndStripes",
    "OnSquared",
    "Cardinality",
    "Parity",
    "get_distribution",
    "DISTRIBUTIONS",
]


class BinaryDistribution:
    """Base class: a distribution on {0,1}^n given by its exact probability vector."""

    name = "distribution"

    def __init__(self, n: int):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if n > 24:
            raise ValueError(f"n={n} is too large for exact enumeration of 2^n probabilities (max 24)")
        self.n = n

    def _probs(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def probs(self, device=None) -> torch.Tensor:
        """Exact probabilities over all 2^n strings, float64 [2^n]."""
        p = self._probs()
        return (p / p.sum()).to(device)

    def log_prob(self, bits: torch.Tensor) -> torch.Tensor:
        """``log p(v)`` of 0/1 rows [..., n] (-inf off the support)."""
        if bits.shape[-1] != self.n:
            raise ValueError(f"expected bit strings of length {self.n}, got {bits.shape[-1]}")
        return self.probs(bits.device).log()[bits_to_index(bits)]

    def support(self) -> torch.Tensor:
        """The strings with non-zero probability, [k, n] float64."""
        p = self.probs()
        return basis_bits(self.n)[p > 0]

    def sample(self, num: int, seed: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """``num`` i.i.d. samples [num, n] (0/1 float64), reproducible from ``seed`` or ``generator``."""
        if generator is None:
            generator = torch.Generator().manual_seed(0 if seed is None else int(seed))
        idx = torch.multinomial(self.probs(), num, replacement=True, generator=generator)
        return basis_bits(self.n)[idx]

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return f"{type(self).__name__}(n={self.n})"


def _uniform_on(n: int, indices: torch.Tensor) -> torch.Tensor:
    p = torch.zeros(2**n, dtype=torch.float64)
    p[indices] = 1.0
    return p


class MixtureOfBernoulli(BinaryDistribution):
    """Mixture of M product-Bernoulli modes (Amin et al.): ``p(v) = (1/M) sum_k p^(n-d_k)(1-p)^(d_k)``.

    Modes are M uniformly random strings drawn from a generator seeded with ``seed``.
    Amin et al. and DO-EM use M = 8, p = 0.9.
    """

    name = "bernoulli_mixture"

    def __init__(self, n: int, n_modes: int = 8, p: float = 0.9, seed: int = 0):
        super().__init__(n)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must lie in [0, 1], got {p}")
        if n_modes < 1:
            raise ValueError("n_modes must be >= 1")
        self.n_modes, self.p, self.seed = n_modes, p, seed
        g = torch.Generator().manual_seed(seed)
        self.modes = torch.randint(0, 2, (n_modes, n), generator=g).to(torch.float64)

    def _probs(self) -> torch.Tensor:
        v = basis_bits(self.n)  # [V, n]
        d = (v[:, None, :] != self.modes[None, :, :]).sum(-1).to(torch.float64)  # [V, M]
        p = torch.tensor(self.p, dtype=torch.float64)
        return (p ** (self.n - d) * (1 - p) ** d).mean(-1)


class BarsAndStripes(BinaryDistribution):
    """Bars and stripes on a ``rows x cols`` grid (bit k = pixel (k // cols, k % cols)).

    ``single_line=False``: uniform on all bars-or-stripes images (2^rows + 2^cols - 2 of them).
    ``single_line=True``: Demidik et al.'s simplified BAS, uniform on the rows + cols images with
    exactly one full row or one full column switched on. Without ``rows``/``cols`` the grid is
    2 x n/2 (n even).
    """

    def __init__(self, n: int, rows: int | None = None, cols: int | None = None, single_line: bool = False):
        super().__init__(n)
        if rows is None and cols is None:
            if n % 2:
                raise ValueError(f"bars-and-stripes on the default 2 x n/2 grid needs even n, got n={n}; "
                                 "pass rows and cols with rows * cols = n")
            rows, cols = 2, n // 2
        elif rows is None:
            rows = n // cols
        elif cols is None:
            cols = n // rows
        if rows * cols != n:
            raise ValueError(f"rows * cols must equal n ({rows} * {cols} != {n})")
        self.rows, self.cols, self.single_line = rows, cols, single_line
        self.name = "bas_single_line" if single_line else "bas"

    def images(self) -> torch.Tensor:
        """The distinct support images, [k, rows, cols]."""
        r, c = self.rows, self.cols
        imgs = []
        if self.single_line:
            for i in range(r):
                im = torch.zeros(r, c, dtype=torch.float64)
                im[i, :] = 1
                imgs.append(im)
            for j in range(c):
                im = torch.zeros(r, c, dtype=torch.float64)
                im[:, j] = 1
                imgs.append(im)
        else:
            for pat in itertools.product([0.0, 1.0], repeat=r):
                imgs.append(torch.tensor(pat, dtype=torch.float64)[:, None].expand(r, c).clone())
            for pat in itertools.product([0.0, 1.0], repeat=c):
                imgs.append(torch.tensor(pat, dtype=torch.float64)[None, :].expand(r, c).clone())
        stacked = torch.stack(imgs).reshape(len(imgs), -1)
        uniq = torch.unique(bits_to_index(stacked))
        return basis_bits(self.n)[uniq].reshape(-1, r, c)

    def _probs(self) -> torch.Tensor:
        return _uniform_on(self.n, bits_to_index(self.images().reshape(-1, self.n)))


class OnSquared(BinaryDistribution):
    """O(n^2) dataset: uniform on n^2 distinct strings chosen uniformly at random (seeded)."""

    name = "o_n2"

    def __init__(self, n: int, seed: int = 0):
        super().__init__(n)
        if n * n > 2**n:
            raise ValueError(f"O(n^2) needs n^2 <= 2^n distinct strings; n={n} gives {n * n} > {2**n}")
        self.seed = seed
        g = torch.Generator().manual_seed(seed)
        self.indices = torch.randperm(2**n, generator=g)[: n * n]

    def _probs(self) -> torch.Tensor:
        return _uniform_on(self.n, self.indices)


class Cardinality(BinaryDistribution):
    """Uniform on the C(n, n/2) strings with exactly n/2 ones (n must be even)."""

    name = "cardinality"

    def __init__(self, n: int):
        super().__init__(n)
        if n % 2:
            raise ValueError(f"the cardinality dataset needs an even n (strings with n/2 ones); got n={n}")

    def _probs(self) -> torch.Tensor:
        return (basis_bits(self.n).sum(-1) == self.n // 2).to(torch.float64)


class Parity(BinaryDistribution):
    """Uniform on the 2^(n-1) strings with an even number of ones."""

    name = "parity"

    def _probs(self) -> torch.Tensor:
        return (basis_bits(self.n).sum(-1) % 2 == 0).to(torch.float64)


DISTRIBUTIONS = ("bernoulli_mixture", "bas", "bas_single_line", "o_n2", "cardinality", "parity")


def get_distribution(name: str, n: int, seed: int = 0, **kw) -> BinaryDistribution:
    """Factory by name (one of :data:`DISTRIBUTIONS`)."""
    if name == "bernoulli_mixture":
        return MixtureOfBernoulli(n, seed=seed, **kw)
    if name == "bas":
        return BarsAndStripes(n, single_line=False, **kw)
    if name == "bas_single_line":
        return BarsAndStripes(n, single_line=True, **kw)
    if name == "o_n2":
        return OnSquared(n, seed=seed)
    if name == "cardinality":
        return Cardinality(n)
    if name == "parity":
        return Parity(n)
    raise ValueError(f"unknown distribution {name!r}; choose from {DISTRIBUTIONS}")
