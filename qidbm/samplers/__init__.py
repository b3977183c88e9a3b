"""Sampling: the one home of every chain that draws from a machine.

* :mod:`qidbm.samplers.kernels`: transition kernels with one interface,
  ``kernel.run(model, state, num_steps, clamped, generator) -> (state, ChainStats)``:
  :class:`PaperStep`, :class:`ExactStep` (Metropolis-corrected); :func:`make_kernel` maps the
  string options of configs (``quantum_step``, ``visible_step``, ...) onto them;
* :mod:`qidbm.samplers.visible`: moves of a Gaussian visible layer, :class:`GaussianGibbs` and
  :class:`LangevinVisible`, given to a kernel;
* :mod:`qidbm.samplers.chain`: :class:`ChainStats` (acceptance per chain set) and :func:`bernoulli`;
* :mod:`qidbm.samplers.drawing`: :class:`SamplingSpec` and :func:`draw`, the evaluation sampling of
  ``qidbm sample``, ``qidbm evaluate`` and the callbacks;
* :mod:`qidbm.samplers.arguments`: those options as command-line arguments;
* :mod:`qidbm.samplers.taniguchi`: Taniguchi et al.'s chains (local search, coupling);
* :mod:`qidbm.samplers.tempering`: replica exchange over inverse temperatures or transverse-field
  scales (:class:`ReplicaExchange`).
"""

from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.drawing import SamplingSpec, draw, trained_sampling
from qidbm.samplers.kernels import (
    BlockGibbsKernel,
    ExactStep,
    Kernel,
    PaperStep,
    make_kernel,
)
from qidbm.samplers.tempering import ReplicaExchange
from qidbm.samplers.visible import GaussianGibbs, LangevinVisible

__all__ = [
    "BlockGibbsKernel", "ChainStats", "ExactStep", "GaussianGibbs", "Kernel", "LangevinVisible", "PaperStep",
    "ReplicaExchange", "SamplingSpec", "bernoulli", "draw", "make_kernel", "trained_sampling",
]
