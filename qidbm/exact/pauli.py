"""Pauli strings on n qubits as signed permutations, and basis-index helpers.

Conventions (docs/maths.md, 'Qubit order and Pauli strings'): qubit 0 is the leftmost tensor factor, so the
computational basis index of a bit string is ``sum_k bit_k 2^(N-1-k)``; the
Z-basis state |1> of a qubit means "on" (n = (I - Z)/2).

A Pauli string ``P = P_0 (x) P_1 (x) ... (x) P_{N-1}`` maps a basis state |x> to
``phase(x) |x XOR f>`` with ``f`` the mask of qubits carrying X or Y and
``phase(x) = i^{#Y} prod_{k in Z or Y} (-1)^{x_k}`` (since Y = i X Z). Dense
matrices are therefore built by one scatter, and ``Tr(B P)`` costs O(2^N) without
forming P.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

__all__ = [
    "PauliString",
    "PAULI_LETTERS",
    "pauli_matrix",
    "basis_bits",
    "bits_to_index",
    "all_bitstrings",
    "spins",
]

PAULI_LETTERS = ("I", "X", "Y", "Z")


def pauli_matrix(letter: str, dtype: torch.dtype | None = None, device=None) -> torch.Tensor:
    """The 2x2 Pauli matrix for ``letter`` in {I, X, Y, Z} (complex128 for Y unless a dtype is given)."""
    letter = letter.upper()
    if letter not in PAULI_LETTERS:
        raise ValueError(f"Pauli letter must be one of {PAULI_LETTERS}, got {letter!r}")
    if dtype is None:
        dtype = torch.complex128 if letter == "Y" else torch.float64
    if letter == "Y":
        if not dtype.is_complex:
            raise ValueError("Pauli Y is imaginary: ask for a complex dtype (torch.complex128)")
        return torch.tensor([[0, -1j], [1j, 0]], dtype=dtype, device=device)
    table = {"I": [[1.0, 0.0], [0.0, 1.0]], "X": [[0.0, 1.0], [1.0, 0.0]], "Z": [[1.0, 0.0], [0.0, -1.0]]}
    return torch.tensor(table[letter], dtype=dtype, device=device)


def basis_bits(n_qubits: int, device=None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """All 2^n bit strings as a [2^n, n] tensor, row r = bits of basis index r (qubit 0 = most significant bit)."""
    if n_qubits < 0:
        raise ValueError("n_qubits must be >= 0")
    idx = torch.arange(2**n_qubits, device=device)
    shifts = torch.arange(n_qubits - 1, -1, -1, device=device)
    return ((idx[:, None] >> shifts[None, :]) & 1).to(dtype)


all_bitstrings = basis_bits


def bits_to_index(bits: torch.Tensor) -> torch.Tensor:
    """Basis index ``sum_k bit_k 2^(N-1-k)`` of each row of a [..., N] 0/1 tensor."""
    n = bits.shape[-1]
    weights = 2 ** torch.arange(n - 1, -1, -1, device=bits.device)
    return (bits.round().long() * weights).sum(-1)


def spins(n_qubits: int, device=None) -> torch.Tensor:
    """Z eigenvalues ``(-1)^{bit}`` of every qubit on every basis state, [2^n, n] float64."""
    return 1.0 - 2.0 * basis_bits(n_qubits, device=device)


@dataclass(frozen=True)
class PauliString:
    """A tensor product of single-qubit Paulis on ``n_qubits`` qubits.

    ``ops`` maps qubit index -> letter in {X, Y, Z} (identity elsewhere).
    """

    n_qubits: int
    ops: tuple[tuple[int, str], ...]

    @staticmethod
    def from_ops(ops: Mapping[int, str] | Sequence[tuple[int, str]], n_qubits: int) -> "PauliString":
        """Build from ``{qubit: letter}``; identities may be given and are dropped."""
        items = dict(ops).items() if not isinstance(ops, Mapping) else ops.items()
        clean = []
        for q, letter in sorted(items):
            letter = letter.upper()
            if letter not in PAULI_LETTERS:
                raise ValueError(f"Pauli letter must be one of {PAULI_LETTERS}, got {letter!r}")
            if not 0 <= q < n_qubits:
                raise ValueError(f"qubit {q} out of range for {n_qubits} qubits")
            if letter != "I":
                clean.append((int(q), letter))
        return PauliString(n_qubits, tuple(clean))

    @staticmethod
    def from_label(label: str) -> "PauliString":
        """Build from a label such as ``"ZIXY"`` (character k acts on qubit k)."""
        return PauliString.from_ops({k: c for k, c in enumerate(label)}, len(label))

    @property
    def label(self) -> str:
        chars = ["I"] * self.n_qubits
        for q, c in self.ops:
            chars[q] = c
        return "".join(chars)

    def _bitpos(self, q: int) -> int:
        return self.n_qubits - 1 - q

    @property
    def flip_mask(self) -> int:
        """Bit mask of the qubits carrying X or Y (the permutation x -> x XOR mask)."""
        return sum(1 << self._bitpos(q) for q, c in self.ops if c in "XY")

    @property
    def sign_mask(self) -> int:
        """Bit mask of the qubits carrying Z or Y (the sign (-1)^{popcount(x & mask)})."""
        return sum(1 << self._bitpos(q) for q, c in self.ops if c in "ZY")

    @property
    def n_y(self) -> int:
        return sum(1 for _, c in self.ops if c == "Y")

    @property
    def is_complex(self) -> bool:
        return self.n_y % 2 == 1

    @property
    def is_diagonal(self) -> bool:
        return self.flip_mask == 0

    def qubits(self) -> set[int]:
        return {q for q, _ in self.ops}

    def letters_on(self, qubits: Sequence[int]) -> str:
        d = dict(self.ops)
        return "".join(d.get(q, "I") for q in qubits)

    def restrict(self, qubits: Sequence[int]) -> "PauliString":
        """The factor of this string on ``qubits`` (renumbered 0..len-1)."""
        d = dict(self.ops)
        return PauliString.from_ops({k: d.get(q, "I") for k, q in enumerate(qubits)}, len(qubits))

    def phases(self, device=None) -> torch.Tensor:
        """``phase(x)`` for every basis index x, so that ``P|x> = phase(x)|x ^ flip_mask>``.

        float64 when the phase is real (even number of Y), complex128 otherwise.
        """
        dim = 2**self.n_qubits
        x = torch.arange(dim, device=device)
        parity = _popcount(x & self.sign_mask) & 1
        sign = 1.0 - 2.0 * parity.to(torch.float64)
        k = self.n_y % 4
        if k == 0:
            return sign
        if k == 2:
            return -sign
        return sign.to(torch.complex128) * (1j if k == 1 else -1j)

    def matrix(self, device=None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Dense 2^N x 2^N matrix (float64, or complex128 when it has an odd number of Y)."""
        dim = 2**self.n_qubits
        ph = self.phases(device)
        if dtype is None:
            dtype = ph.dtype
        x = torch.arange(dim, device=device)
        out = torch.zeros(dim, dim, dtype=dtype, device=device)
        out[x ^ self.flip_mask, x] = ph.to(dtype)
        return out

    def trace_with(self, B: torch.Tensor) -> torch.Tensor:
        """``Tr(B P)`` for a dense (possibly batched) matrix B, in O(2^N) per matrix.

        ``Tr(B P) = sum_x B[x, x ^ f] phase(x)``. Returns real part when B is Hermitian
        and P Hermitian (always the case for expectation values); the caller decides.
        """
        dim = 2**self.n_qubits
        if B.shape[-1] != dim:
            raise ValueError(f"matrix of size {B.shape[-1]} does not act on {self.n_qubits} qubits")
        x = torch.arange(dim, device=B.device)
        ph = self.phases(B.device)
        vals = B[..., x, x ^ self.flip_mask]
        if ph.is_complex() and not vals.is_complex():
            vals = vals.to(torch.complex128)
        return (vals * ph.to(vals.dtype)).sum(-1)

    def expectation(self, rho: torch.Tensor) -> torch.Tensor:
        """Real expectation ``Tr(rho P)`` for Hermitian rho (float64)."""
        val = self.trace_with(rho)
        return val.real if val.is_complex() else val

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.label


def _popcount(x: torch.Tensor) -> torch.Tensor:
    """Number of set bits of a non-negative int64 tensor."""
    count = torch.zeros_like(x)
    while True:
        if not bool((x != 0).any()):
            return count
        count = count + (x & 1)
        x = x >> 1
