"""Parameterised Hamiltonians ``H(theta) = sum_i theta_i c_i P_i`` on n visible + m hidden qubits.

Qubits 0..n-1 are visible, n..n+m-1 hidden (docs/maths.md, 'Qubit order and Pauli strings'). Every model here is
linear in its parameters, which is what makes the DO-EM M-step concave.

Constructors:

* :func:`qbm_hamiltonian` - transverse-field Ising QBM (Amin et al. 2018) in the spin
  convention ``H = -sum_k h_k^P sigma_k^P - sum_(k,l) J_kl^(PQ) sigma_k^P sigma_l^Q``:
  Z fields everywhere, X fields on visible and/or hidden qubits, ZZ couplings and
  optional ZX / XX couplings, visible-hidden and optionally within layers.
* :func:`cq_qrbm_hamiltonian` - the CQ QRBM (quantum terms on hidden qubits only).
* :func:`sqrbm_hamiltonian` - the semi-quantum RBM of Demidik et al. in *their* sign
  convention ``H = sum_i a_i Z_i + sum_{P,j} b_j^P sigma^P_{n+j} + sum_{P,i,j} w_ij^{ZP} Z_i sigma^P_{n+j}``.
* :func:`qrbm_theta_from_rbm` - the map of docs/maths.md, 'Spin-convention map', from the QRBM of 'Models'
  (0/1 units: ``H = -a.v - b.n - v^T W n - Gamma.X``) to the spin-convention QBM.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .pauli import PauliString, spins

__all__ = [
    "Hamiltonian",
    "CQStructure",
    "qbm_hamiltonian",
    "cq_qrbm_hamiltonian",
    "rbm_hamiltonian",
    "sqrbm_hamiltonian",
    "qrbm_theta_from_rbm",
]


@dataclass
class CQStructure:
    """Block form of a CQ Hamiltonian: ``H = sum_v |v><v| (x) H_v`` with
    ``H_v(theta) = sum_i theta_i c_i s_i(v) K_{k(i)}``.

    ``s_i(v)`` = product of (-1)^{v_k} over the term's visible Z qubits; terms share the
    distinct visible patterns: ``patterns`` [2^n, S] holds each pattern's signs and
    ``pattern_index`` [P] the pattern of each term. ``hidden_ops`` [K, 2^m, 2^m] are the
    distinct hidden factors and ``hidden_index`` [P] the factor of each term. Nothing of size
    [2^n, P] is ever formed (2^n can be 10^6).
    """

    patterns: torch.Tensor
    pattern_index: torch.Tensor
    hidden_ops: torch.Tensor
    hidden_index: torch.Tensor
    coeffs: torch.Tensor

    @property
    def signs(self) -> torch.Tensor:
        """``s_i(v)`` for every term, [2^n, P] (for small systems and tests)."""
        return self.patterns[:, self.pattern_index]

    def _pair_weights(self, theta: torch.Tensor) -> torch.Tensor:
        S, K = self.patterns.shape[1], self.hidden_ops.shape[0]
        W = torch.zeros(S * K, dtype=theta.dtype, device=theta.device)
        return W.index_add(0, self.pattern_index * K + self.hidden_index, theta * self.coeffs).reshape(S, K)

    def blocks(self, theta: torch.Tensor) -> torch.Tensor:
        """All blocks ``H_v`` as a [2^n, 2^m, 2^m] tensor (differentiable in theta)."""
        wk = self.patterns @ self._pair_weights(theta)  # [V, K]
        ops = self.hidden_ops
        if ops.is_complex():
            wk = wk.to(ops.dtype)
        return torch.einsum("vk,kab->vab", wk, ops)

    def hidden_expectations(self, block_states: torch.Tensor) -> torch.Tensor:
        """``Tr(rho_v K_k)`` for each block state and hidden factor, [2^n, K] float64."""
        tk = torch.einsum("vab,kba->vk", block_states, self.hidden_ops)
        return tk.real if tk.is_complex() else tk

    def weighted_expectations(self, tk: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """``sum_v w_v c_i s_i(v) Tr(rho_v K_{k(i)})`` for all terms i, [P]."""
        pk = self.patterns.T @ (weights[:, None] * tk)  # [S, K]
        return pk[self.pattern_index, self.hidden_index] * self.coeffs

    def term_expectations(self, block_states: torch.Tensor) -> torch.Tensor:
        """``c_i s_i(v) Tr(rho_v K_{k(i)})`` per block, [2^n, P] (small systems only)."""
        tk = self.hidden_expectations(block_states)
        return self.signs * tk[:, self.hidden_index] * self.coeffs[None, :]


class Hamiltonian:
    """``H(theta) = sum_i theta_i c_i P_i`` on ``n_visible + n_hidden`` qubits.

    Parameters
    ----------
    n_visible, n_hidden: qubit counts (visible first).
    terms: the Pauli strings ``P_i`` (on ``n_visible + n_hidden`` qubits).
    coeffs: the fixed real signs/scales ``c_i`` (e.g. -1 in the spin convention).
    names: one name per term (for reading parameters back).
    groups: parameter groups ``name -> (start, shape)`` for :meth:`split`/:meth:`join`.
    """

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        terms: Sequence[PauliString],
        coeffs: Sequence[float],
        names: Sequence[str],
        groups: dict[str, tuple[int, tuple[int, ...]]] | None = None,
    ):
        if n_visible < 1 or n_hidden < 0:
            raise ValueError("need n_visible >= 1 and n_hidden >= 0")
        n_q = n_visible + n_hidden
        if not (len(terms) == len(coeffs) == len(names)):
            raise ValueError("terms, coeffs and names must have equal length")
        for t in terms:
            if t.n_qubits != n_q:
                raise ValueError(f"term {t.label} acts on {t.n_qubits} qubits, expected {n_q}")
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        self.terms = list(terms)
        self.coeffs = torch.tensor(list(coeffs), dtype=torch.float64)
        self.names = list(names)
        self.groups = dict(groups or {})
        self._cache: dict = {}

    # ------------------------------------------------------------------ basic facts
    @property
    def n_qubits(self) -> int:
        return self.n_visible + self.n_hidden

    @property
    def dim(self) -> int:
        return 2**self.n_qubits

    @property
    def n_params(self) -> int:
        return len(self.terms)

    @property
    def is_complex(self) -> bool:
        """True when some term has an odd number of Y (the matrix is complex Hermitian)."""
        return any(t.is_complex for t in self.terms)

    @property
    def dtype(self) -> torch.dtype:
        return torch.complex128 if self.is_complex else torch.float64

    @property
    def is_cq(self) -> bool:
        """CQ-LVM test (DO-EM Corollary 5.3/5.5): no X or Y on any visible qubit."""
        vis = range(self.n_visible)
        return all(c == "Z" for t in self.terms for q, c in t.ops if q in vis)

    def trainable_mask(self, fixed_groups: Sequence[str] = ()) -> torch.Tensor:
        """Boolean mask over parameters, False for the groups named in ``fixed_groups``."""
        mask = torch.ones(self.n_params, dtype=torch.bool)
        for g in fixed_groups:
            if g not in self.groups:
                raise KeyError(f"unknown parameter group {g!r}; have {sorted(self.groups)}")
            start, shape = self.groups[g]
            size = int(torch.tensor(shape).prod()) if shape else 1
            mask[start : start + size] = False
        return mask

    # ------------------------------------------------------------------ parameters
    def split(self, theta: torch.Tensor) -> dict[str, torch.Tensor]:
        """Parameter vector -> dict of named, shaped groups."""
        out = {}
        for g, (start, shape) in self.groups.items():
            size = int(torch.tensor(shape).prod()) if shape else 1
            out[g] = theta[..., start : start + size].reshape(*theta.shape[:-1], *shape)
        return out

    def join(self, values: dict[str, torch.Tensor], device=None) -> torch.Tensor:
        """Inverse of :meth:`split`; missing groups are zero."""
        theta = torch.zeros(self.n_params, dtype=torch.float64, device=device)
        for g, v in values.items():
            if g not in self.groups:
                raise KeyError(f"unknown parameter group {g!r}; have {sorted(self.groups)}")
            start, shape = self.groups[g]
            v = torch.as_tensor(v, dtype=torch.float64, device=theta.device)
            if tuple(v.shape) != tuple(shape):
                raise ValueError(f"group {g!r} needs shape {tuple(shape)}, got {tuple(v.shape)}")
            size = v.numel()
            theta[start : start + size] = v.reshape(-1)
        return theta

    def random_theta(self, generator: torch.Generator | None = None, scale: float = 1.0, device=None,
                     low: float | None = None) -> torch.Tensor:
        """Uniform parameters in [-scale, scale] (or [low, scale]) from a seeded generator."""
        lo = -scale if low is None else low
        u = torch.rand(self.n_params, dtype=torch.float64, generator=generator)
        return (lo + (scale - lo) * u).to(device)

    # ------------------------------------------------------------------ dense form
    def _index_data(self, device):
        key = ("idx", str(device))
        if key not in self._cache:
            x = torch.arange(self.dim, device=device)
            cols = x.expand(self.n_params, -1)
            flips = torch.tensor([t.flip_mask for t in self.terms], device=device)
            rows = x[None, :] ^ flips[:, None]
            ph = torch.stack([t.phases(device).to(self.dtype) for t in self.terms]) if self.terms else \
                torch.zeros(0, self.dim, dtype=self.dtype, device=device)
            self._cache[key] = (rows, cols, ph * self.coeffs.to(device)[:, None].to(self.dtype))
        return self._cache[key]

    def dense(self, theta: torch.Tensor) -> torch.Tensor:
        """Dense H(theta), [2^N, 2^N] (float64, or complex128 with Y terms); differentiable."""
        theta = _check_theta(theta, self.n_params)
        rows, cols, cph = self._index_data(theta.device)
        vals = (theta.to(self.dtype)[:, None] * cph).reshape(-1)
        H = torch.zeros(self.dim, self.dim, dtype=self.dtype, device=theta.device)
        return H.index_put((rows.reshape(-1), cols.reshape(-1)), vals, accumulate=True)

    def operator(self, i: int, device=None) -> torch.Tensor:
        """Dense ``dH/dtheta_i = c_i P_i``."""
        return self.coeffs[i].item() * self.terms[i].matrix(device=device, dtype=self.dtype)

    def term_expectations(self, rho: torch.Tensor) -> torch.Tensor:
        """``Tr(rho dH/dtheta_i) = c_i Tr(rho P_i)`` for all i (real part), [..., P] float64.

        For a Hermitian rho this is the expectation; for any matrix B it is the real part
        of the Hilbert-Schmidt pairing, which is what the Daleckii-Krein gradient needs.
        """
        rows, cols, cph = self._index_data(rho.device)
        # Tr(B P) = sum_x B[x, x^f] ph(x): B[cols, rows] since rows = x ^ f.
        vals = rho[..., cols, rows]
        if cph.is_complex() and not vals.is_complex():
            vals = vals.to(cph.dtype)
        out = (vals * cph).sum(-1)
        return out.real if out.is_complex() else out

    def term_expectations_factored(self, C: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        """``Re Tr(C U^H O_i)`` for all i without forming ``B = C U^H`` (e.g. ``C = U diag(p)`` for
        ``rho = U diag(p) U^H``): only the entries ``B[x, x^f]`` are needed, one O(D^2) pass per
        distinct flip mask f instead of an O(D^3) product."""
        key = ("flipgroups", str(C.device))
        if key not in self._cache:
            flips = [t.flip_mask for t in self.terms]
            uniq = sorted(set(flips))
            self._cache[key] = (uniq, torch.tensor([uniq.index(f) for f in flips], device=C.device))
        uniq, which = self._cache[key]
        x = torch.arange(self.dim, device=C.device)
        rows, cols, cph = self._index_data(C.device)
        diag_vals = torch.stack([(C * U[x ^ f, :].conj()).sum(-1) for f in uniq])  # [F, D]: B[x, x^f]
        vals = diag_vals[which]  # [P, D]
        if cph.is_complex() and not vals.is_complex():
            vals = vals.to(cph.dtype)
        out = (vals * cph).sum(-1)
        return out.real if out.is_complex() else out

    # ------------------------------------------------------------------ CQ blocks
    def cq_structure(self, device=None) -> CQStructure:
        """Block form of a CQ Hamiltonian (error when a visible qubit carries X or Y)."""
        if not self.is_cq:
            raise ValueError(
                "this Hamiltonian has X or Y terms on visible qubits, so it is not a CQ model "
                "(DO-EM Corollary 5.5); use the dense routines (Algorithm 1) instead"
            )
        key = ("cq", str(device))
        if key not in self._cache:
            n, m = self.n_visible, self.n_hidden
            hid = list(range(n, n + m))
            s = spins(n, device=device)  # [2^n, n]
            pattern_ids: dict[tuple, int] = {}
            patterns = []
            pattern_index = []
            hidden_labels: dict[str, int] = {}
            hidden_index = []
            mats = []
            for t in self.terms:
                zq = tuple(q for q, c in t.ops if q < n)
                if zq not in pattern_ids:
                    pattern_ids[zq] = len(patterns)
                    patterns.append(s[:, list(zq)].prod(-1) if zq else
                                    torch.ones(2**n, dtype=torch.float64, device=device))
                pattern_index.append(pattern_ids[zq])
                hl = t.letters_on(hid)
                if hl not in hidden_labels:
                    hidden_labels[hl] = len(mats)
                    ps = t.restrict(hid) if m > 0 else PauliString(0, ())
                    mats.append(ps.matrix(device=device, dtype=self.dtype) if m > 0 else
                                torch.ones(1, 1, dtype=self.dtype, device=device))
                hidden_index.append(hidden_labels[hl])
            self._cache[key] = CQStructure(
                patterns=torch.stack(patterns, dim=1),
                pattern_index=torch.tensor(pattern_index, dtype=torch.long, device=device),
                hidden_ops=torch.stack(mats),
                hidden_index=torch.tensor(hidden_index, dtype=torch.long, device=device),
                coeffs=self.coeffs.to(device),
            )
        return self._cache[key]

    def blocks(self, theta: torch.Tensor) -> torch.Tensor:
        """CQ blocks ``H_v`` = <v| H |v> as [2^n, 2^m, 2^m]."""
        theta = _check_theta(theta, self.n_params)
        return self.cq_structure(theta.device).blocks(theta)

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Hamiltonian(n_visible={self.n_visible}, n_hidden={self.n_hidden}, "
                f"n_params={self.n_params}, groups={list(self.groups)}, cq={self.is_cq})")


def _check_theta(theta: torch.Tensor, n: int) -> torch.Tensor:
    if not torch.is_tensor(theta):
        theta = torch.as_tensor(theta, dtype=torch.float64)
    if theta.dtype != torch.float64:
        raise TypeError(f"parameters must be float64 (got {theta.dtype}); call .double()")
    if theta.shape != (n,):
        raise ValueError(f"parameter vector must have shape ({n},), got {tuple(theta.shape)}")
    return theta


class _Builder:
    def __init__(self, n_visible: int, n_hidden: int):
        self.n, self.m = n_visible, n_hidden
        self.N = n_visible + n_hidden
        self.terms: list[PauliString] = []
        self.coeffs: list[float] = []
        self.names: list[str] = []
        self.groups: dict[str, tuple[int, tuple[int, ...]]] = {}

    def add_group(self, name: str, shape: tuple[int, ...], items: list[tuple[dict, str]], coeff: float):
        if not items:
            return
        self.groups[name] = (len(self.terms), shape)
        for ops, label in items:
            self.terms.append(PauliString.from_ops(ops, self.N))
            self.coeffs.append(coeff)
            self.names.append(f"{name}[{label}]")

    def build(self) -> Hamiltonian:
        return Hamiltonian(self.n, self.m, self.terms, self.coeffs, self.names, self.groups)


def qbm_hamiltonian(
    n_visible: int,
    n_hidden: int,
    *,
    visible_x: bool = True,
    hidden_x: bool = True,
    couplings: Sequence[str] = ("ZZ",),
    visible_couplings: Sequence[str] = (),
    hidden_couplings: Sequence[str] = (),
) -> Hamiltonian:
    """Transverse-field Ising QBM, spin convention ``H = -sum h sigma - sum J sigma sigma``.

    Groups: ``h_z`` [N] (Z field on every qubit, visible then hidden), ``h_x_visible`` [n]
    (if ``visible_x``), ``h_x_hidden`` [m] (if ``hidden_x``); ``J_<pq>`` [n, m] for each
    visible-hidden coupling type in ``couplings`` (P on the visible qubit, Q on the hidden
    one; subset of ZZ, ZX, XZ, XX); ``Jv_<pq>`` [n(n-1)/2] and ``Jh_<pq>`` [m(m-1)/2] for
    visible-visible and hidden-hidden couplings (pairs k < l, P on k). The model is CQ
    (DO-EM Corollary 5.5) iff no X sits on a visible qubit: ``visible_x=False``, couplings
    in {ZZ, ZX}, visible couplings in {ZZ}; hidden couplings are free.
    """
    allowed = {"ZZ", "ZX", "XZ", "XX"}
    for c in (*couplings, *visible_couplings, *hidden_couplings):
        if c not in allowed:
            raise ValueError(f"coupling {c!r} not in {sorted(allowed)}")
    b = _Builder(n_visible, n_hidden)
    n, m, N = n_visible, n_hidden, b.N
    b.add_group("h_z", (N,), [({k: "Z"}, str(k)) for k in range(N)], -1.0)
    if visible_x:
        b.add_group("h_x_visible", (n,), [({i: "X"}, str(i)) for i in range(n)], -1.0)
    if hidden_x and m:
        b.add_group("h_x_hidden", (m,), [({n + j: "X"}, str(j)) for j in range(m)], -1.0)
    vh = [(i, n + j) for i in range(n) for j in range(m)]
    vv = [(k, l) for k in range(n) for l in range(k + 1, n)]
    hh = [(n + k, n + l) for k in range(m) for l in range(k + 1, m)]
    for prefix, pairs, shape, kinds in (("J", vh, (n, m), couplings), ("Jv", vv, (len(vv),), visible_couplings),
                                         ("Jh", hh, (len(hh),), hidden_couplings)):
        for c in kinds:
            items = [({k: c[0], l: c[1]}, f"{k},{l}") for k, l in pairs]
            b.add_group(f"{prefix}_{c.lower()}", shape, items, -1.0)
    return b.build()


def cq_qrbm_hamiltonian(n_visible: int, n_hidden: int, *, zx: bool = False) -> Hamiltonian:
    """The CQ QRBM: Z fields, X fields on hidden qubits only, visible-hidden ZZ (and ZX) couplings.

    ``H = -sum_k h_k^Z Z_k - sum_j Gamma_j X_{n+j} - sum_ij J_ij Z_i Z_{n+j} [- sum_ij K_ij Z_i X_{n+j}]``.
    With ``zx=True`` it is the sqRBM {X, Z} of Demidik et al. up to signs.
    """
    return qbm_hamiltonian(n_visible, n_hidden, visible_x=False, hidden_x=True,
                           couplings=("ZZ", "ZX") if zx else ("ZZ",))


def rbm_hamiltonian(n_visible: int, n_hidden: int) -> Hamiltonian:
    """The classical RBM as a diagonal Hamiltonian (no X terms), spin convention."""
    return qbm_hamiltonian(n_visible, n_hidden, visible_x=False, hidden_x=False)


def sqrbm_hamiltonian(n_visible: int, n_hidden: int, paulis: str = "XZ") -> Hamiltonian:
    """The sqRBM of Demidik et al. (their Eq. 5, their sign: ``H = +sum ...``).

    Groups: ``a`` [n] (Z on visible), ``b`` [|W|, m] and ``w`` [|W|, n, m] with the Pauli
    set ``W = paulis`` (a string of distinct letters from X, Y, Z, in the given order).
    ``paulis="Z"`` is the classical RBM in spin variables.
    """
    paulis = paulis.upper()
    if not paulis or len(set(paulis)) != len(paulis) or any(p not in "XYZ" for p in paulis):
        raise ValueError(f"paulis must be distinct letters from 'XYZ', e.g. 'XZ' or 'XYZ'; got {paulis!r}")
    n, m = n_visible, n_hidden
    b = _Builder(n, m)
    b.add_group("a", (n,), [({i: "Z"}, str(i)) for i in range(n)], 1.0)
    b.add_group("b", (len(paulis), m), [({n + j: P}, f"{P},{j}") for P in paulis for j in range(m)], 1.0)
    b.add_group("w", (len(paulis), n, m),
                [({i: "Z", n + j: P}, f"Z{P},{i},{j}") for P in paulis for i in range(n) for j in range(m)], 1.0)
    return b.build()


def qrbm_theta_from_rbm(
    ham: Hamiltonian,
    visible_bias: torch.Tensor,
    hidden_bias: torch.Tensor,
    weight: torch.Tensor,
    transverse_field: torch.Tensor | None = None,
    transverse_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """Map the QRBM (0/1 units) to the spin-convention CQ QRBM (docs/maths.md, 'Spin-convention map').

    With v = (1 - Z)/2 and n = (1 - Z)/2,
    ``-a.v - b.n - v^T W n - Gamma.X = -sum h^Z Z - sum Gamma X - sum J Z Z + const`` where
    ``h_i^Z = -(a_i/2 + sum_j W_ij/4)``, ``h_j^Z = -(b_j/2 + sum_i W_ij/4)``, ``J_ij = W_ij/4``,
    ``const = -sum a/2 - sum b/2 - sum W/4``. Returns ``(theta, const)``; the constant drops out
    of every normalised quantity. ``ham`` must come from :func:`cq_qrbm_hamiltonian` /
    :func:`qbm_hamiltonian` with ``h_z``, ``J_zz`` (and ``h_x_hidden`` when Gamma is given).

    Coupled transverse fields (docs/maths.md, 'Coupled transverse fields'), ``Gamma_j(v) = gamma_j + sum_i U_ij v_i``
    with ``U = transverse_weight``: ``-Gamma_j(v) X_j = -(gamma_j + sum_i U_ij/2) X_j - sum_i (-U_ij/2) Z_i X_j``,
    i.e. ``h_x_hidden = gamma + U.sum(0)/2`` and ``J_zx = -U/2`` (needs ``cq_qrbm_hamiltonian(..., zx=True)``).
    Only |Gamma_j(v)| enters p(v), so ``gamma = transverse_field`` may carry either sign.
    """
    a = torch.as_tensor(visible_bias, dtype=torch.float64)
    bb = torch.as_tensor(hidden_bias, dtype=torch.float64)
    W = torch.as_tensor(weight, dtype=torch.float64)
    n, m = ham.n_visible, ham.n_hidden
    if a.shape != (n,) or bb.shape != (m,) or W.shape != (n, m):
        raise ValueError(f"expected shapes a ({n},), b ({m},), W ({n},{m}); got {a.shape}, {bb.shape}, {W.shape}")
    vals = {
        "h_z": torch.cat([-(a / 2 + W.sum(1) / 4), -(bb / 2 + W.sum(0) / 4)]),
        "J_zz": W / 4,
    }
    if transverse_field is not None:
        if "h_x_hidden" not in ham.groups:
            raise ValueError("this Hamiltonian has no hidden X fields; build it with cq_qrbm_hamiltonian")
        vals["h_x_hidden"] = torch.as_tensor(transverse_field, dtype=torch.float64)
    if transverse_weight is not None:
        if "J_zx" not in ham.groups or transverse_field is None:
            raise ValueError("coupled transverse fields need transverse_field and a Hamiltonian with ZX couplings "
                             "(cq_qrbm_hamiltonian(n, m, zx=True))")
        U = torch.as_tensor(transverse_weight, dtype=torch.float64)
        vals["h_x_hidden"] = vals["h_x_hidden"] + U.sum(0) / 2
        vals["J_zx"] = -U / 2
    theta = ham.join({k: v.to(a.device) for k, v in vals.items()}, device=a.device)
    const = float(-(a.sum() / 2 + bb.sum() / 2 + W.sum() / 4))
    return theta, const
