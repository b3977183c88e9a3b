"""Pauli strings, qubit order, Hamiltonian assembly, CQ blocks and the spin-convention map (docs/maths.md)."""
import itertools
import math

import pytest
import torch

from qidbm.exact import (
    PauliString,
    basis_bits,
    bits_to_index,
    cq_qrbm_hamiltonian,
    pauli_matrix,
    qbm_hamiltonian,
    qrbm_theta_from_rbm,
    sqrbm_hamiltonian,
)


def kron_all(mats):
    out = mats[0]
    for m in mats[1:]:
        out = torch.kron(out, m)
    return out


@pytest.mark.parametrize("label", ["Z", "XY", "ZIX", "YYZ", "IXYZ", "YIIY"])
def test_pauli_string_matches_kron(label):
    ps = PauliString.from_label(label)
    mats = [pauli_matrix(c, dtype=torch.complex128) for c in label]
    assert torch.allclose(ps.matrix(dtype=torch.complex128), kron_all(mats), atol=0)


def test_qubit_zero_is_leftmost_factor():
    # Z on qubit 0 of 3 qubits is -1 exactly on basis indices >= 4 (bit 0 is the MSB).
    z0 = PauliString.from_ops({0: "Z"}, 3).matrix()
    assert torch.equal(torch.diagonal(z0), torch.tensor([1.0, 1, 1, 1, -1, -1, -1, -1], dtype=torch.float64))
    bits = basis_bits(3)
    assert bits[4].tolist() == [1.0, 0.0, 0.0]
    assert torch.equal(bits_to_index(bits), torch.arange(8))


def test_trace_with_matches_dense(gen):
    B = torch.randn(16, 16, dtype=torch.float64, generator=gen)
    for label in ["XZYI", "ZZII", "IXIX", "YYYY"]:
        ps = PauliString.from_label(label)
        ref = torch.trace(B.to(torch.complex128) @ ps.matrix(dtype=torch.complex128))
        val = ps.trace_with(B)
        assert abs(complex(val) - complex(ref)) < 1e-12


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="Pauli letter"):
        PauliString.from_label("ZQ")
    with pytest.raises(ValueError, match="complex"):
        pauli_matrix("Y", dtype=torch.float64)
    h = cq_qrbm_hamiltonian(2, 1)
    with pytest.raises(TypeError, match="float64"):
        h.dense(torch.zeros(h.n_params, dtype=torch.float32))
    with pytest.raises(ValueError, match="not a CQ model"):
        qbm_hamiltonian(2, 1).blocks(torch.zeros(qbm_hamiltonian(2, 1).n_params, dtype=torch.float64))


def test_dense_equals_sum_of_terms(gen):
    h = qbm_hamiltonian(2, 2, couplings=("ZZ", "ZX", "XX"), visible_couplings=("ZZ",), hidden_couplings=("XX",))
    th = h.random_theta(gen)
    ref = sum(th[i] * h.operator(i) for i in range(h.n_params))
    assert torch.allclose(h.dense(th), ref, atol=1e-14)
    # term expectations are Tr(rho O_i)
    rho = torch.randn(16, 16, dtype=torch.float64, generator=gen)
    rho = rho @ rho.T
    ref_e = torch.stack([torch.trace(rho @ h.operator(i)) for i in range(h.n_params)])
    assert torch.allclose(h.term_expectations(rho), ref_e, atol=1e-12)


@pytest.mark.parametrize("paulis", ["Z", "XZ", "XYZ"])
def test_cq_blocks_equal_dense_diagonal_blocks(paulis, gen):
    h = sqrbm_hamiltonian(3, 2, paulis)
    th = h.random_theta(gen)
    H = h.dense(th)
    blocks = h.blocks(th)
    dh = 4
    for v in range(8):
        assert torch.allclose(blocks[v], H[v * dh:(v + 1) * dh, v * dh:(v + 1) * dh], atol=1e-14)
    # CQ: nothing outside the blocks
    mask = torch.block_diag(*[torch.ones(dh, dh)] * 8).bool()
    assert H[~mask].abs().max() == 0
    assert h.is_complex == ("Y" in paulis)


def test_cq_detection():
    assert cq_qrbm_hamiltonian(3, 2, zx=True).is_cq
    assert qbm_hamiltonian(3, 2, visible_x=False, hidden_couplings=("XX", "ZZ")).is_cq
    assert not qbm_hamiltonian(3, 2).is_cq
    assert not qbm_hamiltonian(3, 2, visible_x=False, couplings=("XZ",)).is_cq


def test_models_map_reproduces_energy(gen):
    """docs/maths.md, 'Spin-convention map': the spin-convention QRBM equals -a.v - b.n - v^T W n - Gamma.X + const."""
    n, m = 3, 2
    h = cq_qrbm_hamiltonian(n, m)
    a = torch.randn(n, dtype=torch.float64, generator=gen)
    b = torch.randn(m, dtype=torch.float64, generator=gen)
    W = torch.randn(n, m, dtype=torch.float64, generator=gen)
    G = torch.rand(m, dtype=torch.float64, generator=gen)
    th, const = qrbm_theta_from_rbm(h, a, b, W, G)
    N = n + m
    num = [(torch.eye(2, dtype=torch.float64) - pauli_matrix("Z")) / 2]
    I2 = torch.eye(2, dtype=torch.float64)

    def op(k, single):
        return kron_all([single if q == k else I2 for q in range(N)])

    H_ref = torch.zeros(2**N, 2**N, dtype=torch.float64)
    for i in range(n):
        H_ref -= a[i] * op(i, num[0])
    for j in range(m):
        H_ref -= b[j] * op(n + j, num[0]) + G[j] * op(n + j, pauli_matrix("X"))
    for i, j in itertools.product(range(n), range(m)):
        H_ref -= W[i, j] * op(i, num[0]) @ op(n + j, num[0])
    assert torch.allclose(h.dense(th) + const * torch.eye(2**N, dtype=torch.float64), H_ref, atol=1e-13)
    assert math.isfinite(const)
