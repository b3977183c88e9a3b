"""Energy of a trained wave function from long fresh Markov chains, with blocking error bars.

:func:`evaluate_energy` is the estimate that a VMC run reports (``qidbm.nqs.FinalEvaluation``
calls it at the end of training): ``n_chains`` chains, started from given positions, run
``burn_in`` sweeps and then ``n_samples`` samples ``thin`` sweeps apart. The local energies
form a [T, C] array; the energy error is the blocking error of the chain-averaged series
(:func:`~qidbm.nqs.blocking_chains`), cross-checked by the spread of the chain means. The same
loop accumulates the radial one-body density (:func:`radial_density`).
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from qidbm.progress import tqdm_kwargs

from .blocking import blocking_chains
from .hamiltonians import local_energy_samples

__all__ = ["RadialDensity", "evaluate_energy", "radial_density"]


class RadialDensity(NamedTuple):
    """Radial one-body density: bin ``edges`` [bins + 1] and ``rho`` [bins] (numpy, float64)."""

    edges: np.ndarray
    rho: np.ndarray


def radial_density(r_counts: Tensor, edges: Tensor, n_configs: int, dim: int) -> np.ndarray:
    """One-body density rho(r) from a histogram of all particles' distances to the trap centre.

    ``rho(r_bin) = counts / (n_configs * shell volume)``, shell volume
    ``V_d(r2) - V_d(r1)``, ``V_d(r) = pi^(d/2) r^d / Gamma(d/2 + 1)``, so that the integral of
    rho over space is the number of particles.
    """
    e = edges.double().cpu().numpy()
    vd = math.pi ** (dim / 2) / math.gamma(dim / 2 + 1)
    shell = vd * (e[1:] ** dim - e[:-1] ** dim)
    return r_counts.double().cpu().numpy() / (n_configs * shell)


@torch.no_grad()
def evaluate_energy(
    wavefunction,
    hamiltonian,
    sampler,
    start: Tensor,
    n_samples: int,
    n_chains: Optional[int] = None,
    thin: int = 1,
    burn_in: int = 0,
    laplacian: str = "analytic",
    density_bins: int = 60,
    density_rmax: Optional[float] = None,
    progress: bool = False,
) -> tuple[dict, RadialDensity]:
    """Energy of ``wavefunction`` for ``hamiltonian`` from fresh chains of ``sampler``.

    Args:
        start: chain positions [C0, N*d] to start from (not modified); ``n_chains`` chains
            (default C0) take them in turn (resampled with wrap-around if the count differs).
        n_samples: samples per chain (T >= 4: the blocking needs at least 4 values).
        thin: sweeps between samples; burn_in: sweeps before the first sample.
        laplacian: ``"analytic"`` or ``"autograd"`` local energies (:func:`~qidbm.nqs.local_energy`).
        density_bins, density_rmax: histogram of the radial one-body density on [0, rmax]
            (default rmax 4/sqrt(omega)).
        progress: tqdm bars.

    Returns ``(summary, density)``: ``summary`` holds ``energy``, ``energy_err`` (blocking),
    ``energy_err_chains`` (spread of the chain means), ``variance`` (var E_L),
    ``acceptance``, ``blocking_level``, ``n_samples`` (T*C), ``n_chains``,
    ``samples_per_chain``, ``thin``, ``exact`` (the Hamiltonian's known ground-state energy or
    None), ``rel_error`` and ``eval_wall_s``; ``density`` is the :class:`RadialDensity`.
    """
    T = int(n_samples)
    C = int(n_chains or start.shape[0])
    if C < 2 or T < 4 or thin < 1 or burn_in < 0 or density_bins < 1:
        raise ValueError(
            "the evaluation needs n_chains >= 2 (independent chains for the cross-check), n_samples >= 4 (blocking), "
            f"thin >= 1, burn_in >= 0 and density_bins >= 1; got {C}, {T}, {thin}, {burn_in}, {density_bins}."
        )
    n_particles, dim = hamiltonian.n_particles, hamiltonian.dim
    idx = torch.arange(C, device=start.device) % start.shape[0]
    x = start[idx].clone()
    t0 = time.perf_counter()
    for _ in tqdm(range(burn_in), desc="eval burn-in", disable=not progress, leave=False, **tqdm_kwargs()):
        x, _ = sampler.sweep(wavefunction, x)
    rmax = density_rmax or 4.0 / math.sqrt(hamiltonian.omega)
    edges = torch.linspace(0.0, rmax, density_bins + 1, dtype=torch.float64)
    counts = torch.zeros(density_bins, dtype=torch.float64)
    e_tc = torch.empty(T, C, dtype=torch.float64)
    acc = torch.zeros(C, dtype=x.dtype, device=x.device)
    for t in tqdm(range(T), desc="eval sampling", disable=not progress, leave=False, **tqdm_kwargs()):
        for _ in range(thin):
            x, a = sampler.sweep(wavefunction, x)
            acc += a
        e_tc[t] = local_energy_samples(hamiltonian, wavefunction, x, laplacian).double().cpu()
        r = x.reshape(C, n_particles, dim).norm(dim=-1).flatten().double().cpu()
        counts += torch.histc(r, bins=density_bins, min=0.0, max=rmax)
    wall = time.perf_counter() - t0
    res, chain_err = blocking_chains(e_tc.numpy())
    exact = hamiltonian.exact_energy
    summary = {
        "energy": res.mean,
        "energy_err": res.error,
        "energy_err_chains": chain_err,
        "variance": res.variance,
        "acceptance": float(acc.mean() / (T * thin)),
        "blocking_level": res.level,
        "n_samples": T * C,
        "n_chains": C,
        "samples_per_chain": T,
        "thin": thin,
        "exact": exact,
        "rel_error": None if exact is None else (res.mean - exact) / exact,
        "eval_wall_s": wall,
    }
    return summary, RadialDensity(edges.numpy(), radial_density(counts, edges, T * C, dim))
