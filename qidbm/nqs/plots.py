"""Plots of a VMC run: ``energy.png`` (energy and var E_L per iteration) and ``density.png``.

``density.png`` shows the radial one-body density (:class:`~qidbm.nqs.evaluation.RadialDensity`)
with the non-interacting density and, for two electrons in 2D at omega = 1, the exact one from
Taut's solution. Matplotlib is imported (Agg backend) only when a plot is drawn.
"""

from __future__ import annotations

import math
import os
from typing import Optional, Sequence

import numpy as np

from .evaluation import RadialDensity
from .hamiltonians import taut_one_body_density

__all__ = ["density_plot", "energy_plot", "run_title", "save_plots"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def run_title(wavefunction, hamiltonian, sampler) -> str:
    """One line naming the system, the ansatz and the sampler, e.g.
    ``N=2, d=2, omega=1.0, Coulomb, RBM H=8 x Pade-Jastrow, metropolis``."""
    if hasattr(wavefunction, "n_hidden"):
        ansatz = "Gaussian" if getattr(wavefunction, "gaussian_only", False) else f"RBM H={wavefunction.n_hidden}"
    else:
        ansatz = type(wavefunction).__name__
    if getattr(wavefunction, "jastrow", None) is not None:
        ansatz += " x Pade-Jastrow"
    return (
        f"N={hamiltonian.n_particles}, d={hamiltonian.dim}, omega={hamiltonian.omega}, "
        f"{'Coulomb' if hamiltonian.interaction else 'no interaction'}, "
        f"{ansatz}, {getattr(sampler, 'name', type(sampler).__name__)}"
    )


def energy_plot(
    history: Sequence[dict], path: str, exact: Optional[float] = None, final: Optional[float] = None, title: str = ""
) -> str:
    """Energy +- error (``history`` rows with ``step``, ``energy``, ``energy_err``, ``variance``) and
    var(E_L) per iteration, with the exact and the final energy as lines; written to ``path``."""
    plt = _pyplot()
    steps = np.array([h["step"] for h in history])
    en = np.array([h["energy"] for h in history])
    er = np.array([h["energy_err"] for h in history])
    va = np.array([h["variance"] for h in history])
    fig, (a0, a1) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    a0.errorbar(steps, en, yerr=er, fmt=".", ms=2, lw=0.5, label="<E_L> per step")
    if exact is not None:
        a0.axhline(exact, color="k", ls="--", lw=1, label=f"exact {exact}")
    if final is not None:
        a0.axhline(final, color="r", lw=1, label=f"final {final:.5f}")
    lo = np.percentile(en, 1)
    a0.set_ylim(min(lo, exact if exact is not None else lo) - 0.02, np.percentile(en, 99) + 0.05)
    a0.set_ylabel("energy (hbar omega units, a.u.)")
    a0.legend(fontsize=8)
    a0.set_title(title, fontsize=9)
    a1.semilogy(steps, np.maximum(va, 1e-16), ".", ms=2)
    a1.set_ylabel("var(E_L)")
    a1.set_xlabel("iteration")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def density_plot(density: RadialDensity, hamiltonian, path: str, title: str = "") -> str:
    """The radial one-body density against the non-interacting ground state's (and Taut's exact
    density for two electrons in 2D at omega = 1); written to ``path``."""
    plt = _pyplot()
    edges, rho = density
    n, d, omega = hamiltonian.n_particles, hamiltonian.dim, hamiltonian.omega
    rc = 0.5 * (edges[1:] + edges[:-1])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.step(rc, rho, where="mid", label="VMC (RBM NQS)")
    rho0 = n * (omega / math.pi) ** (d / 2) * np.exp(-omega * rc**2)
    ax.plot(rc, rho0, "k--", lw=1, label="non-interacting ground state")
    if hamiltonian.interaction and n == 2 and d == 2 and omega == 1.0:
        ax.plot(rc, taut_one_body_density(rc), "r-", lw=1, label="exact (Taut 1993)")
    ax.set_xlabel("r")
    ax.set_ylabel("one-body density rho(r)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def save_plots(
    out: str,
    history: Sequence[dict],
    density: Optional[RadialDensity],
    wavefunction,
    hamiltonian,
    sampler,
    final: Optional[float] = None,
) -> list[str]:
    """Write ``energy.png`` (if there is a training history) and ``density.png`` (if a density
    was measured) into ``out``; returns their paths."""
    title = run_title(wavefunction, hamiltonian, sampler)
    paths = []
    if history:
        paths.append(energy_plot(history, os.path.join(out, "energy.png"), hamiltonian.exact_energy, final, title))
    if density is not None:
        paths.append(density_plot(density, hamiltonian, os.path.join(out, "density.png"), title))
    return paths
