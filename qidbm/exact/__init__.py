"""Exact density-operator toolkit (dense float64, CPU or GPU, independent of Lightning).

Small systems whose density matrices can be written down: Pauli-string Hamiltonians
(QBM / CQ QRBM / sqRBM), Gibbs states, partial traces, relative entropies, the Petz
recovery map, DO-EM Algorithms 1 and 2, Kimura et al.'s em algorithm, exact-gradient and
bound-based (Amin et al.) baselines, the sqRBM closed forms of Demidik et al., and the
small benchmark distributions. Conventions: docs/maths.md, 'Qubit order and Pauli strings' (qubit 0 leftmost,
visible qubits first, basis index ``sum_k bit_k 2^(N-1-k)``).
"""
from .baselines import (
    bound_log_likelihood_and_grad,
    cq_log_likelihood_and_grad,
    exact_log_likelihood_and_grad,
    exp_divided_differences,
    frechet_exp,
    train_bound_qbm,
    train_exact_gradient,
    train_gradient_ascent,
)
from .distributions import (
    DISTRIBUTIONS,
    BarsAndStripes,
    BinaryDistribution,
    Cardinality,
    MixtureOfBernoulli,
    OnSquared,
    Parity,
    get_distribution,
)
from .doem import (
    EMHistory,
    MStepResult,
    cq_estep_statistics,
    cq_log_likelihood,
    cq_mstep_objective,
    dense_mstep_objective,
    do_em_cq,
    do_em_dense,
    kimura_em,
    maximize_concave,
)
from .hamiltonians import (
    CQStructure,
    Hamiltonian,
    cq_qrbm_hamiltonian,
    qbm_hamiltonian,
    qrbm_theta_from_rbm,
    rbm_hamiltonian,
    sqrbm_hamiltonian,
)
from .pauli import PauliString, all_bitstrings, basis_bits, bits_to_index, pauli_matrix, spins
from .petz import ConditionSReport, check_condition_s, log_likelihood, petz_recovery, qelbo
from .sqrbm import (
    log_cosh_norm,
    sqrbm_init,
    sqrbm_log_probs,
    sqrbm_log_unnormalized,
    sqrbm_nll,
    sqrbm_nll_grad,
    sqrbm_params_to_theta,
    sqrbm_phi,
    sqrbm_theta_to_params,
)
from .states import (
    CQEvaluation,
    GibbsState,
    block_exp_states,
    cq_evaluate,
    diagonal_state,
    gibbs,
    gibbs_state,
    inv_sqrtm_psd,
    is_density_operator,
    kl_divergence,
    log_partition,
    logm_psd,
    matrix_function,
    model_distribution,
    partial_trace,
    partial_trace_hidden,
    relative_entropy,
    sqrtm_psd,
    total_variation,
    visible_distribution,
    von_neumann_entropy,
)

__all__ = [name for name in dir() if not name.startswith("_")]
