"""An independent dense-matrix oracle for the layered models (test utility, float64).

Builds H = E(x with quantum units' n) - sum_j Gamma_j(x) X_j over all units of a small
binary-visible model as a 2^N x 2^N matrix (qubit 0 = first unit of layer 0 = leftmost
factor) straight from the definitions of docs/maths.md, with no code shared with the models.
"""

import itertools

import torch


def bits(n):
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)), dtype=torch.float64)


def layer_slices(sizes):
    out, s = [], 0
    for n in sizes:
        out.append(slice(s, s + n))
        s += n
    return out


def dense_hamiltonian(model):
    sizes = list(model.layer_sizes)
    Nq = sum(sizes)
    X = bits(Nq)  # [2^N, N]
    sl = layer_slices(sizes)
    xs = [X[:, s] for s in sl]
    with torch.no_grad():
        E = torch.zeros(X.shape[0], dtype=torch.float64)
        for l in range(len(sizes)):
            E -= xs[l] @ model.layer_bias(l).double()
        for k in range(len(sizes) - 1):
            E -= ((xs[k] @ model.layer_weight(k).double()) * xs[k + 1]).sum(1)
        H = torch.diag(E)
        for l in model.quantum_layers:
            gam = model.transverse_parameter(l).double().expand(X.shape[0], -1).clone()
            for nb in (l - 1, l + 1):
                if 0 <= nb < len(sizes):
                    U = model.transverse_coupling(l, nb)
                    if U is not None:
                        gam = gam + xs[nb] @ U.double()
            for j in range(sizes[l]):
                q = sl[l].start + j
                flip = torch.arange(X.shape[0]) ^ (1 << (Nq - 1 - q))
                # Gamma_j = |gamma_j + sum U x| (the sign of the field is a gauge: Z X Z = -X)
                H[flip, torch.arange(X.shape[0])] -= gam[:, j].abs()
    return H, X


def gibbs_diagonal(H):
    lam, U = torch.linalg.eigh(H)
    w = torch.exp(-(lam - lam.min()))
    rho = (U * (w / w.sum())) @ U.T
    logZ = torch.log(w.sum()) - lam.min()
    return rho, logZ


def dense_marginal(model, keep_layers):
    """p over the units of ``keep_layers`` (all other units traced out), rows in bits() order."""
    H, X = dense_hamiltonian(model)
    rho, _ = gibbs_diagonal(H)
    d = torch.diagonal(rho)
    sl = layer_slices(model.layer_sizes)
    cols = torch.cat([torch.arange(sl[l].start, sl[l].stop) for l in keep_layers])
    keep = X[:, cols]
    idx = (keep * (2 ** torch.arange(len(cols) - 1, -1, -1, dtype=torch.float64))).sum(1).long()
    return torch.zeros(2 ** len(cols), dtype=torch.float64).index_add_(0, idx, d)
