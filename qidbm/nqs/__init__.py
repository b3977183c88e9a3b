"""Neural-network quantum states: a Gaussian-binary RBM wave function trained by variational Monte Carlo.

Pieces (each usable alone): :class:`RBMWaveFunction` (|Psi|^2 = P(x) of ``qidbm.models.GRBM``,
or Psi = P(x); optional Pade-Jastrow factor), :class:`HarmonicTrap` (quantum-dot Hamiltonian,
local energies), samplers (:class:`MetropolisSampler`, :class:`MetropolisHastingsSampler`,
:class:`GibbsSampler`), :func:`blocking` (Flyvbjerg-Petersen error bars), the LightningModule
:class:`VMCModule` (training: takes the wave function, Hamiltonian and sampler as objects),
:func:`evaluate_energy` (the final energy estimate with its error bar, ``evaluation.py``),
``plots.py`` (the run's figures) and the callback :class:`FinalEvaluation` (evaluates at the end
of training and writes ``nqs_result.json`` and the plots), all driven by
``qidbm fit --config configs/nqs_*.yaml``.
"""

from .blocking import BlockingResult, blocking, blocking_chains
from .callbacks import FinalEvaluation
from .evaluation import RadialDensity, evaluate_energy, radial_density
from .hamiltonians import HarmonicTrap, local_energy, local_energy_samples, taut_one_body_density
from .lightning import VMCModule, sr_direction, vmc_loss
from .samplers import (
    GibbsSampler,
    MetropolisHastingsSampler,
    MetropolisSampler,
    Sampler,
    make_sampler,
    sample_chains,
)
from .wavefunction import PadeJastrow, RBMWaveFunction, autograd_derivatives

__all__ = [
    "BlockingResult",
    "blocking",
    "blocking_chains",
    "HarmonicTrap",
    "local_energy",
    "local_energy_samples",
    "taut_one_body_density",
    "VMCModule",
    "FinalEvaluation",
    "RadialDensity",
    "evaluate_energy",
    "radial_density",
    "sr_direction",
    "vmc_loss",
    "Sampler",
    "MetropolisSampler",
    "MetropolisHastingsSampler",
    "GibbsSampler",
    "make_sampler",
    "sample_chains",
    "PadeJastrow",
    "RBMWaveFunction",
    "autograd_derivatives",
]
