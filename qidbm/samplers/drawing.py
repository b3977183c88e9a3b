"""Drawing samples for evaluation: :class:`SamplingSpec` (the options that published numbers depend
on) and :func:`draw`, used by ``qidbm sample``, ``qidbm evaluate`` and the sample-grid and FID callbacks.

How samples are drawn changes FID, so every option is explicit and printed next to
every number (docs/maths.md, 'FID protocol'):

* ``num_steps``: block Gibbs sweeps per chain;
* ``start``: ``"noise"`` (uniform random layers; ``noise_density=(lo, hi)``: binary visible units
  start ``Bernoulli(q)``, ``q ~ U(lo, hi)`` per chain), ``"data"`` (visible layer at data
  points, hidden layers from their mean field) or ``"local_mode"`` (the local mode
  reached from data points, Taniguchi et al. 2023);
* ``output``: ``"sample"`` (the last visible sample), ``"mean"`` (its conditional mean
  given the last hidden state), ``"mode"`` (the visible state most probable given the last hidden
  state, ``1[p(v_i = 1 | h) > 1/2]`` for binary units, the mean for Gaussian ones: the sample without
  the visible layer's independent per-pixel noise, as Taniguchi et al. read their samples out),
  ``"mean_field"`` (the visible conditional mean under the hidden
  layers' mean field given the last visible sample: E[v | h = <h>_{v}], which averages out the
  hidden draw's noise, for Gaussian visibles a denoised image), ``"local_mode"`` (the visible part of the local mode
  reached from the last visible state's mean field) or ``"local_search"`` (the visible part
  of the local mode that zero-temperature block updates reach from the last full state, the
  block order drawn per chain: with ``start="noise"`` and ``num_steps=0``, Taniguchi et al.'s
  sampler, :func:`qidbm.samplers.taniguchi.local_search`);
* ``quantum_step``, ``visible_step``: the kernel (:func:`qidbm.samplers.kernels.make_kernel`);
* ``matmul_precision``: ``"float32"`` or ``"bfloat16"`` matrix products (:mod:`qidbm.precision`);
* ``replica_betas`` / ``replica_field_scales``: replica exchange (:mod:`qidbm.samplers.tempering`)
  over inverse temperatures ``1 > b_1 > ...`` or transverse-field scales ``1 > s_1 > ... >= 0``;
  every replica starts as ``start`` says and runs ``num_steps`` sweeps, the samples come from the
  first (the machine itself). Empty: no exchange.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.precision import MATMUL_PRECISIONS, matmul_precision
from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.kernels import BlockGibbsKernel, make_kernel

Start = Literal["noise", "data", "local_mode"]
Output = Literal["sample", "mean", "mode", "mean_field", "local_mode", "local_search"]
OUTPUTS: tuple[str, ...] = ("sample", "mean", "mode", "mean_field", "local_mode", "local_search")


def check_sample_steps(sample_steps: int | None) -> None:
    """Raise a clear error unless ``sample_steps`` (a machine's sweeps per sample) is None or an integer >= 1."""
    if sample_steps is not None and (isinstance(sample_steps, bool) or not isinstance(sample_steps, int) or sample_steps < 1):
        raise ValueError(f"sample_steps must be a number of Gibbs sweeps >= 1 (or unset: the training chains' "
                         f"sweeps), got {sample_steps!r}")


def check_sample_output(sample_output: str | None) -> None:
    """Raise a clear error unless ``sample_output`` (a machine's read-out) is None or one of :data:`OUTPUTS`."""
    if sample_output is not None and sample_output not in OUTPUTS:
        raise ValueError(f"sample_output must be one of {list(OUTPUTS)} (or unset), got {sample_output!r}")


@dataclass
class SamplingSpec:
    """Evaluation sampling options (see the module docstring)."""

    num_steps: int = 1000
    start: Start = "noise"
    output: Output = "mean"
    quantum_step: Literal["paper", "exact"] = "paper"
    visible_step: Literal["gibbs", "langevin"] = "gibbs"
    batch_size: int = 1000
    matmul_precision: Literal["float32", "bfloat16"] = "float32"
    replica_betas: tuple[float, ...] = ()
    replica_field_scales: tuple[float, ...] = ()
    noise_density: tuple[float, float] | None = None
    anneal_from: float = 1.0

    def __post_init__(self) -> None:
        if self.anneal_from != 1.0:
            from qidbm.samplers.tempering import annealing_betas

            annealing_betas(self.anneal_from, max(self.num_steps, 1))  # validates it
            if self.replica_betas or self.replica_field_scales:
                raise ValueError("anneal_from anneals single chains: leave the replica ladders unset")
        if self.noise_density is not None:
            from qidbm.models.base import check_density_range

            self.noise_density = check_density_range(self.noise_density)
            if self.start != "noise":
                raise ValueError(f"noise_density sets the density of a noise start; start is {self.start!r}")
        self.replica_betas = tuple(float(x) for x in self.replica_betas)
        self.replica_field_scales = tuple(float(x) for x in self.replica_field_scales)
        if self.replica_betas and self.replica_field_scales:
            raise ValueError("choose one replica ladder: replica_betas (temperatures) or replica_field_scales")
        if self.num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {self.num_steps}")
        if self.start not in ("noise", "data", "local_mode"):
            raise ValueError(f"start must be 'noise', 'data' or 'local_mode', got {self.start!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"output must be one of {list(OUTPUTS)}, got {self.output!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {self.matmul_precision!r}")

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items()
                         if k != "batch_size" and not ((k.startswith("replica_") or k == "noise_density") and not v)
                         and not (k == "anneal_from" and v == 1.0))

    def replica_exchange(self, model: BoltzmannMachine, kernel: BlockGibbsKernel):
        """The :class:`~qidbm.samplers.tempering.ReplicaExchange` these options ask for, or None."""
        from qidbm.samplers.tempering import ReplicaExchange

        if self.replica_betas:
            return ReplicaExchange.temperatures(model, self.replica_betas, kernel)
        if self.replica_field_scales:
            return ReplicaExchange.field_scales(model, self.replica_field_scales, kernel)
        return None

    def kernel(self) -> BlockGibbsKernel:
        return make_kernel(quantum_step=self.quantum_step, visible_step=self.visible_step)


def trained_sampling(hparams: dict | None, gaussian_visible: bool = False) -> SamplingSpec | None:
    """The sampling a machine was trained to produce, from its training hyperparameters, or None.

    The negative estimator says it (:meth:`qidbm.estimators.NegativePhase.sampling`): a machine
    trained with chains from noise (``FromNoise(sweeps)``, alone or in a ``Mixture``) learns to turn
    noise into data in that many sweeps and is sampled the same way, read out as the visible state for
    binary units or the conditional mean for Gaussian ones; one trained by Taniguchi et al.'s
    estimator is sampled their way (noise, local search, visible mode). The kernel and matrix
    precision of training come along, the module's ``sample_output`` replaces the read-out and its
    ``sample_steps`` the number of sweeps.
    Persistent and data-started chains give no protocol of their own (None: the global defaults,
    with ``sample_output`` and ``sample_steps`` where set). Hyperparameters of the flat options of qidbm 0.1 are read
    through :func:`qidbm.legacy.upgrade_hparams`.
    """
    from qidbm.estimators import NegativePhase, build
    from qidbm.legacy import upgrade_hparams
    from qidbm.samplers.kernels import ExactStep
    from qidbm.samplers.visible import LangevinVisible

    hp = upgrade_hparams(hparams)
    readout, steps = hp.get("sample_output"), hp.get("sample_steps")
    negative = build(hp.get("negative"), NegativePhase)
    spec = None if negative is None else negative.sampling(gaussian_visible)
    if spec is None:
        chosen = {k: v for k, v in (("output", readout), ("num_steps", steps)) if v}
        return SamplingSpec(**chosen) if chosen else None
    kernel = build(hp.get("kernel"))
    return replace(spec, output=readout or spec.output, num_steps=steps or spec.num_steps,
                   quantum_step="exact" if isinstance(kernel, ExactStep) else "paper",
                   visible_step="langevin" if isinstance(getattr(kernel, "visible", None), LangevinVisible) else "gibbs",
                   matmul_precision=hp.get("matmul_precision") or "float32")


def start_state(model: BoltzmannMachine, start: Start, num: int, data: Tensor | None, generator=None,
                noise_density: tuple[float, float] | None = None) -> State:
    """Initial chain state for ``num`` chains (``noise_density``: :meth:`BoltzmannMachine.random_state`)."""
    if start == "noise":
        return model.random_state(num, generator, visible_density=noise_density)
    if data is None:
        raise ValueError(f"start={start!r} needs data points (a datamodule or --data); use start='noise' otherwise")
    if data.shape[0] < num:
        reps = -(-num // data.shape[0])
        data = data.repeat(reps, 1)
    v = data[:num].to(device=model.layer_bias(0).device, dtype=model.layer_bias(0).dtype)
    if start == "local_mode":
        return model.local_mode(v)
    mf = model.mean_field(v)
    return [v] + [bernoulli(p, generator) for p in mf[1:]]


@torch.no_grad()
def draw(
    model: BoltzmannMachine,
    num_samples: int,
    spec: SamplingSpec | None = None,
    data: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> tuple[Tensor, ChainStats]:
    """``num_samples`` visible vectors drawn according to ``spec``, in batches of ``spec.batch_size``,
    and the statistics of their chains (the exact step's acceptance per quantum layer)."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples}")
    spec = spec or SamplingSpec()
    kernel = spec.kernel()
    exchange = spec.replica_exchange(model, kernel)
    stats = ChainStats()
    out = []
    batches = range(0, num_samples, spec.batch_size)
    if progress:
        from tqdm.auto import tqdm

        from qidbm.progress import tqdm_kwargs

        batches = tqdm(batches, desc=f"sampling ({spec.num_steps} sweeps)", unit="batch", **tqdm_kwargs())
    with matmul_precision(spec.matmul_precision):
        for i in batches:
            out.append(_draw_batch(model, min(spec.batch_size, num_samples - i), i, spec, kernel, data, generator, stats,
                                   exchange))
    return torch.cat(out), stats


def _draw_batch(model, n: int, i: int, spec: SamplingSpec, kernel, data, generator, stats: ChainStats,
                exchange=None) -> Tensor:
    """One batch of ``n`` samples, the ``i``-th sample onwards (``data`` rows ``i:i+n`` start its chains)."""
    d = None if data is None else (data[i : i + n] if len(data) >= i + n else data)
    if exchange is None:
        state = start_state(model, spec.start, n, d, generator, spec.noise_density)
        if spec.anneal_from != 1.0 and spec.num_steps > 0:
            from qidbm.samplers.tempering import annealed_run, annealing_betas

            state, s = annealed_run(model, kernel, state, annealing_betas(spec.anneal_from, spec.num_steps), generator)
        else:
            state, s = kernel.run(model, state, spec.num_steps, generator=generator)
    else:
        states = [start_state(m, spec.start, n, d, generator, spec.noise_density) for m in exchange.ladder]
        states, s = exchange.run(states, spec.num_steps, generator=generator)
        state = states[0]
    stats.merge(s)
    if spec.output == "sample":
        return state[0]
    if spec.output == "mean":
        return model.conditional(0, state)[0]
    if spec.output == "mode":
        p = model.conditional(0, state)[0]
        return p if model.gaussian_visible else (p > 0.5).to(p.dtype)
    if spec.output == "mean_field":
        return model.conditional(0, model.mean_field(state[0]))[0]
    if spec.output == "local_search":
        from qidbm.samplers.taniguchi import local_search

        return local_search(model, state, generator=generator)[0]
    return model.local_mode(state[0])[0]
