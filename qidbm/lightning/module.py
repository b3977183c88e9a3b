"""DO-EM under contrastive divergence as a LightningModule (docs/maths.md, 'DO-EM loss and gradient').

The training step is a loss whose autograd gradient is the CD estimate of the
log-likelihood gradient with every summed-out layer (the quantum ones included)
Rao-Blackwellised:

    loss = mean_batch F_C(x_C^+) - mean_batch F_C(x_C^-)

x_C^+ is the data with the classical hidden layers drawn from a chain clamped at
the data (the E-step: for CQ models the Petz recovery map reduces to the model's
own conditional), x_C^- comes from the negative chains; both are detached. One
optimizer step on this loss is one M-step gradient step of DO-EM (Algorithm 2 of
the DO-EM paper), so any torch optimizer, gradient clipping, precision plugin and
DDP work unchanged.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from qidbm.checkpoint import check_checkpoint, checkpoint_section
from qidbm.lightning.lr_schedule import check_cooldown, lr_factor
from qidbm.models import BoltzmannMachine
from qidbm.models.base import State
from qidbm import fused
from qidbm.precision import MATMUL_PRECISIONS, matmul_precision
from qidbm.quantum import qubit_draw_prob
from qidbm.samplers.chain import ChainStats, bernoulli
from qidbm.samplers.drawing import Output, check_sample_output
from qidbm.samplers.kernels import PaperStep, make_kernel

NegativeStart = Literal["data", "persistent", "local_mode", "data_local_mode", "noise", "noise_and_persistent"]
NEGATIVE_STARTS: tuple[str, ...] = ("data", "persistent", "local_mode", "data_local_mode", "noise", "noise_and_persistent")


class BoltzmannModule(L.LightningModule):
    """Train any :class:`~qidbm.models.BoltzmannMachine` by DO-EM / CD.

    Args:
        model: the machine (``RBM``, ``QRBM``, ``GRBM``, ``QGRBM``, ``DBM``, ``QiDBM``).
        cd_steps: Gibbs sweeps of the negative chains per training step (the k of CD-k / PCD-k).
        negative_start: where negative chains start each step: ``"data"`` (CD-k), ``"persistent"``
            (PCD: chains are module state, saved in checkpoints, one set per DDP rank),
            ``"local_mode"`` (Taniguchi et al. 2023: uniform noise, a local mode by zero-temperature
            block updates, one Gibbs sweep, then their Metropolis "coupling" steps; see
            :mod:`qidbm.samplers.taniguchi`. The loss then scores full states, quantum layers traced
            out, as their estimator does), ``"data_local_mode"`` (the local mode reached from the
            data's mean field, then ``cd_steps`` sweeps: this package's earlier reading of theirs)
            ``"noise"`` (fresh uniform noise, as Liao et al. 2022 do for GRBMs) or
            ``"noise_and_persistent"`` (both at once: as many noise-started chains as data rows and
            ``num_chains`` persistent ones, all run ``cd_steps`` sweeps and weighted equally per row in
            the negative term unless ``persistent_weight`` is set; the noise rows keep the k-sweep
            sampler from noise, the persistent rows pull the model towards maximum likelihood).
        num_chains: persistent chains (default: the batch size).
        persistent_weight: ``"noise_and_persistent"`` only: the weight w of the persistent rows in the
            negative term, ``F_neg = (1 - w) mean_noise F + w mean_persistent F`` (default: per row,
            w = num_chains / (num_chains + batch size)). The gradient then matches the data to that
            mixture of the noise sampler and the model's equilibrium; a smaller w leaves less of
            the persistent chains' excess in some modes to the noise sampler to make up.
        persistent_betas: replica exchange for the persistent chains (``"persistent"`` or
            ``"noise_and_persistent"``, ``persistent_update="sweep"``): inverse temperatures
            ``1 > b_1 > ...``; ``num_chains`` chains per temperature, the ``cd_steps`` sweeps of each
            step become ``cd_steps`` rounds of sweeps and swaps (:mod:`qidbm.samplers.tempering`), and
            only the first temperature's chains enter the loss. The hotter chains are not saved in
            checkpoints (a resume restarts them from noise). Default: none.
        positive: the E-step for classical hidden layers that are not summed out (DBMs):
            ``"gibbs"`` (``positive_steps`` sweeps of a chain clamped at the data, started at
            its mean field), ``"mean_field"`` (the mean-field fixed point itself) or ``"local_mode"``
            (Taniguchi et al.'s clamped chain: hidden noise, local search, one sweep, coupling).
        centering, centering_rate: train in centered coordinates (:mod:`qidbm.lightning.centering`;
            Melchior et al. 2016), offsets following the positive phase's layer means at this rate
            (GRBM/QGRBM: the hidden layer only, the visible offset stays 0).
        lr_decay: with the default optimizer, ``lr_t = lr / sqrt(1 + lr_decay * t)`` per optimizer step
            (Taniguchi et al. use 1e-3); 0 keeps the rate constant.
        lr_cooldown_steps: with the default optimizer, the last ``N`` updates of the run
            (``trainer.max_steps``, which must be set) lower the rate linearly towards 0:
            ``lr_t = lr * min(1, (max_steps - t) / N)`` (times the ``lr_decay`` factor;
            :mod:`qidbm.lightning.lr_schedule`). 0 (default): no cool-down.
        matmul_precision: ``"float32"`` or ``"bfloat16"``: every matrix product of a training step,
            the chains' and the loss's forward and backward (:mod:`qidbm.precision`; several times
            faster on CPUs with AVX512_BF16 and on GPUs); parameters, optimizer and elementwise
            closed forms stay float32.
        fused_kernels: run the elementwise closed forms of a step (the qubit's log-partition and
            draw probability, the classical softplus) as ``torch.compile``d kernels, one loop each
            (:mod:`qidbm.fused`; same values to a few eps, compiled on the first step; without a
            working compiler it warns once and runs eagerly).
        quantum_step: ``"paper"`` (the DO-EM paper's Z-basis step) or ``"exact"``
            (Metropolis-corrected, exact for Gamma != 0); used by every chain.
        visible_step, langevin_steps, langevin_step_size: Gaussian visibles: ``"gibbs"`` or
            ``"langevin"`` (Gibbs-Langevin of Liao et al. 2022). These four options name the
            transition kernel (:func:`qidbm.samplers.kernels.make_kernel`), ``self.kernel``; the
            exact step's acceptance of the negative chains is logged as ``train/acceptance/layer{l}``.
        lr, momentum, weight_decay: the default optimizer, SGD (the DO-EM paper's; a CLI
            ``optimizer:`` section replaces it).
        init_visible_bias: set visible biases from the training data's marginals at the start
            of a new fit (logit of the mean for binary units, mean and variance for Gaussian).
        visible_variance_scale: Gaussian visible units start (learned variances) or stay (fixed,
            ``learn_variance=False``) at ``c`` times each pixel's data variance (floored at the mean
            pixel variance); ``c < 1`` gives sharper conditionals ``p(v | h)`` and a narrower noise
            start. Default 1.
        noise_anneal: ``negative_start="noise"`` only: the inverse temperature ``beta_1 <= 1`` of the
            first of the ``cd_steps`` sweeps; the sweeps' temperatures fall geometrically to 1 at the
            last (:func:`qidbm.samplers.tempering.annealing_betas`), so the chains from noise are
            simulated annealing and ``qidbm sample`` draws the same way. Default 1: no annealing.
        sample_output: how this machine's samples are read out by ``qidbm sample``, ``qidbm evaluate``
            and the sample-grid and FID callbacks left at their default (any
            :class:`~qidbm.samplers.drawing.SamplingSpec` output, e.g. ``"local_mode"``: the visible
            part of the local mode reached from the chains' last state). It changes nothing in
            training. Default None: the visible state for binary units, the conditional mean for
            Gaussian ones.
        chain_seed: seed of this module's sampling generator (default: torch's initial seed); rank r
            of a DDP job uses ``seed + r`` so chains differ across ranks.
        persistent_update: how PCD advances its chains each step. ``"sweep"``: ``cd_steps`` full
            sweeps, odd layers first (Tieleman's order). ``"fused"``: even layers first, and the
            last odd half-sweep is drawn from the fields that the loss's free energy of the
            negative rows computes anyway (scikit-learn's BernoulliRBM order: one product fewer
            per step; it applies when the summed layers are exactly the odd layers and the
            quantum step is the paper's). Both are valid PCD, but the chain's odd layers then lag
            the parameters by one update, which measurably changes the training dynamics at large
            learning rates (see bench/RESULTS.md), so it is opt-in.
    """

    def __init__(
        self,
        model: BoltzmannMachine,
        cd_steps: int = 1,
        negative_start: NegativeStart = "persistent",
        num_chains: int | None = None,
        positive: Literal["gibbs", "mean_field", "local_mode"] = "gibbs",
        positive_steps: int = 5,
        quantum_step: Literal["paper", "exact"] = "paper",
        visible_step: Literal["gibbs", "langevin"] = "gibbs",
        langevin_steps: int = 10,
        langevin_step_size: float = 0.1,
        lr: float = 1e-3,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        init_visible_bias: bool = True,
        chain_seed: int | None = None,
        persistent_update: Literal["sweep", "fused"] = "sweep",
        centering: bool = False,
        centering_rate: float = 0.01,
        lr_decay: float = 0.0,
        lr_cooldown_steps: int = 0,
        matmul_precision: Literal["float32", "bfloat16"] = "float32",
        fused_kernels: bool = False,
        persistent_betas: list[float] | None = None,
        persistent_weight: float | None = None,
        noise_density: list[float] | None = None,
        visible_variance_scale: float = 1.0,
        noise_anneal: float = 1.0,
        sample_output: Output | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, BoltzmannMachine):
            raise TypeError(f"model must be a qidbm BoltzmannMachine (RBM, QRBM, ...), got {type(model).__name__}")
        if cd_steps < 1:
            raise ValueError(f"cd_steps must be >= 1, got {cd_steps}")
        if negative_start not in NEGATIVE_STARTS:
            raise ValueError(f"negative_start must be one of {', '.join(NEGATIVE_STARTS)}; got {negative_start!r}")
        if persistent_update not in ("sweep", "fused"):
            raise ValueError(f"persistent_update must be 'sweep' or 'fused', got {persistent_update!r}")
        if positive not in ("gibbs", "mean_field", "local_mode"):
            raise ValueError(f"positive must be 'gibbs', 'mean_field' or 'local_mode', got {positive!r}")
        from qidbm.lightning.argument_checks import check_module_arguments

        check_module_arguments(num_chains=num_chains, positive_steps=positive_steps, lr=lr, momentum=momentum,
                               weight_decay=weight_decay, langevin_steps=langevin_steps,
                               langevin_step_size=langevin_step_size)
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.kernel = make_kernel(
            quantum_step=quantum_step,
            visible_step=visible_step,
            langevin_steps=langevin_steps,
            langevin_step_size=langevin_step_size,
        )
        # Taniguchi et al.'s estimator scores the chains' full states (only quantum layers, which have
        # no classical value, are traced out); every other estimator is Rao-Blackwellised
        self.summed_layers = (
            tuple(model.quantum_layers) if negative_start == "local_mode" else model.default_summed_layers()
        )
        if persistent_betas:
            from qidbm.samplers.tempering import check_ladder

            check_ladder(persistent_betas, "betas", allow_zero=False)
            if negative_start not in ("persistent", "noise_and_persistent") or persistent_update != "sweep":
                raise ValueError("persistent_betas tempers persistent chains: use negative_start 'persistent' or "
                                 "'noise_and_persistent' with persistent_update 'sweep'")
        if persistent_weight is not None:
            if negative_start != "noise_and_persistent":
                raise ValueError("persistent_weight weighs the persistent rows against the noise rows: use "
                                 "negative_start 'noise_and_persistent' (or leave persistent_weight unset)")
            if not 0 < persistent_weight < 1:
                raise ValueError(f"persistent_weight must be in (0, 1), got {persistent_weight}")
        if noise_density is not None:
            from qidbm.models.base import check_density_range

            check_density_range(noise_density)
            if negative_start not in ("noise", "noise_and_persistent") or model.gaussian_visible:
                raise ValueError("noise_density sets the start of noise-started negative rows of binary visible "
                                 "units: use negative_start 'noise' or 'noise_and_persistent' with RBM/QRBM/DBM/QiDBM")
        if noise_anneal != 1.0:
            from qidbm.samplers.tempering import annealing_betas

            annealing_betas(noise_anneal, cd_steps)  # validates it
            if negative_start != "noise":
                raise ValueError("noise_anneal anneals the noise-started negative chains: use negative_start 'noise' "
                                 "(or leave noise_anneal at 1)")
        check_sample_output(sample_output)
        self.data_info: dict | None = None
        self._chains: State | None = None
        self._hot_chains: list[State] | None = None  # the persistent chains above temperature 1
        self._exchange = None  # the ReplicaExchange of persistent_betas, rebuilt from the model each step
        self._generator: torch.Generator | None = None
        self._restored_generator_state: Tensor | None = None
        self._first_batch_checked = False
        if not (visible_variance_scale > 0 and math.isfinite(visible_variance_scale)):
            raise ValueError(f"visible_variance_scale must be a positive number, got {visible_variance_scale}")
        if visible_variance_scale != 1.0 and not model.gaussian_visible:
            raise ValueError("visible_variance_scale scales the variances of Gaussian visible units: "
                             "use it with GRBM/QGRBM, or leave it at 1")
        if matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {matmul_precision!r}")
        if not isinstance(fused_kernels, bool):
            raise TypeError(f"fused_kernels must be true or false, got {fused_kernels!r}")
        if lr_decay < 0:
            raise ValueError(f"lr_decay must be >= 0 (0: constant learning rate), got {lr_decay}")
        if isinstance(lr_cooldown_steps, bool) or not isinstance(lr_cooldown_steps, int) or lr_cooldown_steps < 0:
            raise ValueError(f"lr_cooldown_steps must be an integer >= 0 (0: no cool-down), got {lr_cooldown_steps!r}")
        if not 0 < centering_rate <= 1:
            raise ValueError(f"centering_rate must be in (0, 1], got {centering_rate}")
        # centering offsets (qidbm.lightning.centering), one per layer; set at the start of a fit
        self._offsets: list[Tensor] | None = None
        self._batch_means: list[Tensor | None] | None = None
        # optimizer settings of this fit, and those recorded in the checkpoint it resumes from
        self._optimizer_settings: list | None = None
        self._resume: dict | None = None

    # ------------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "data_info"):
            self.data_info = dm.data_info()
            n_vis = self.data_info.get("n_visible")
            if n_vis is not None and n_vis != self.model.n_visible:
                raise ValueError(
                    f"the data has {n_vis} visible units ({self.data_info.get('dataset')}, encoding "
                    f"{self.data_info.get('encoding')!r}) but the model has n_visible={self.model.n_visible}; "
                    "set the model's first layer size to match the data's encoding"
                )
            enc = self.data_info.get("encoding")
            if enc == "continuous" and not self.model.gaussian_visible:
                raise ValueError("continuous data needs Gaussian visible units: use GRBM or QGRBM, or encoding=binary")
            if enc in ("binary", "bitplanes") and self.model.gaussian_visible:
                raise ValueError(f"{enc} data needs binary visible units: use encoding=continuous for GRBM/QGRBM")
        # Data-dependent initialisation happens here, before DDP wraps the model (rank 0's values
        # are then broadcast) and before a checkpoint is restored (which overwrites it).
        if stage == "fit" and self.hparams.init_visible_bias and dm is not None:
            self._init_visible_from_data(dm)

    @torch.no_grad()
    def _init_visible_from_data(self, dm, max_batches: int = 20) -> None:
        batches = []
        for i, b in enumerate(dm.train_dataloader()):
            batches.append(_as_visible(b))
            if i + 1 >= max_batches:
                break
        if not batches:
            return
        x = torch.cat(batches).to(torch.float64)
        m = self.model
        if m.gaussian_visible:
            m.visible_bias.copy_(x.mean(0))
            # each pixel's variance, floored at the mean pixel variance: near-constant pixels
            # (image borders) would otherwise start with precisions of ~100 and blow up the
            # first gradient steps (measured: NaN by step 4 on Fashion-MNIST at lr 1e-3)
            var = x.var(0)
            var = var.clamp_min(max(float(var.mean()), 1e-6)) * float(self.hparams.get("visible_variance_scale", 1.0))
            m.log_variance.copy_(torch.log(var))
        else:
            p = x.mean(0).clamp(1e-3, 1 - 1e-3)
            m.layer_bias(0).copy_(torch.log(p) - torch.log1p(-p))

    def on_fit_start(self) -> None:
        from qidbm.lightning.resume_checks import optimizer_settings

        # the optimizers as configured (before a checkpoint's optimizer state is restored onto them)
        self._optimizer_settings = optimizer_settings(self.trainer.optimizers) if self._trainer is not None else None
        if "configure_optimizers" in self.__dict__ and (self.hparams.get("lr_decay") or self.hparams.get("lr_cooldown_steps")):
            raise ValueError(
                "lr_decay and lr_cooldown_steps schedule the module's own SGD, which an optimizer: section (--optimizer) "
                "replaces: drop them, or give the schedule as an lr_scheduler: section (--lr_scheduler)"
            )
        self._first_batch_checked = False
        seed = self.hparams.chain_seed if self.hparams.chain_seed is not None else torch.initial_seed()
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(int(seed) + self.global_rank)
        if self._restored_generator_state is not None:
            self._generator.set_state(self._restored_generator_state)
            self._restored_generator_state = None
        if self._chains is not None:
            self._chains = [c.to(self.device, self.dtype) for c in self._chains]
        if self.hparams.get("centering", False):
            from qidbm.lightning.centering import initial_offsets

            if self._offsets is None:
                bias = self.model.layer_bias(0).detach()
                self._offsets = initial_offsets(self.model, torch.sigmoid(bias))  # the data mean after init
            self._offsets = [o.to(self.device, self.dtype) for o in self._offsets]

    def on_train_start(self) -> None:
        # after Lightning restored the optimizer state: a resume with changed settings (lr, momentum,
        # cd_steps, ...) applies the new values and says so (torch would silently keep the old lr)
        resume, self._resume = self._resume, None
        if resume is not None:
            from qidbm.lightning.resume_checks import apply_changed_settings_on_resume

            defaults = {k: p.default for k, p in inspect.signature(type(self).__init__).parameters.items()
                        if p.default is not inspect.Parameter.empty}
            apply_changed_settings_on_resume(self.trainer, resume, dict(self.hparams), self._optimizer_settings, defaults)

    @property
    def generator(self) -> torch.Generator | None:
        return self._generator

    # ------------------------------------------------------------------ phases
    @torch.no_grad()
    def positive_phase(self, v: Tensor) -> State:
        """x_C^+: the data, with non-summed classical hidden layers from the clamped chain."""
        m = self.model
        need = [l for l in range(1, m.num_layers) if l not in self.summed_layers]
        if not need:
            return [v] + [None] * (m.num_layers - 1)
        if self.hparams.positive == "mean_field":
            return m.mean_field(v)
        if self.hparams.positive == "local_mode":
            from qidbm.samplers.taniguchi import taniguchi_chain

            return taniguchi_chain(m, v, v.shape[0], self.kernel, self._generator)[0]
        # a short mean-field pass only initialises the clamped chain
        mf = m.mean_field(v, num_iters=2)
        state = [v] + [bernoulli(p, self._generator) for p in mf[1:]]
        return self.kernel.run(m, state, self.hparams.positive_steps, clamped=(0,), generator=self._generator)[0]

    @property
    def _reuses_free_energy_fields(self) -> bool:
        """``persistent_update="fused"`` PCD whose summed layers are exactly the odd layers, with a
        paper (or classical) quantum step: each step updates the even layers first and draws the
        odd layers last from the fields that the free energy of the negative rows computes anyway
        (the same alternating block Gibbs kernel, one hidden-layer product fewer per step).
        """
        m = self.model
        return (
            self.hparams.get("persistent_update", "sweep") == "fused"
            and self.hparams.negative_start == "persistent"
            and (isinstance(self.kernel, PaperStep) or not m.quantum_layers)
            and set(self.summed_layers) == set(range(1, m.num_layers, 2))
        )

    @torch.no_grad()
    def negative_phase(self, v: Tensor) -> State:
        """x_C^-: the negative chains after ``cd_steps`` sweeps.

        With :attr:`_reuses_free_energy_fields` the odd layers of the returned state are the
        previous ones (the loss sums them out); :meth:`doem_loss` draws their new values.
        """
        return self._negative_chains(v)[0]

    @torch.no_grad()
    def _negative_chains(self, v: Tensor) -> tuple[State, ChainStats]:
        """:meth:`negative_phase` and the statistics of the negative chains (the kernel's acceptance)."""
        m, g, start = self.model, self._generator, self.hparams.negative_start
        if start in ("persistent", "noise_and_persistent"):
            n = self.hparams.num_chains or v.shape[0]
            if self._chains is None or self._chains[0].shape[0] != n:
                self._chains = m.random_state(n, g)
            state = self._chains
            if self.hparams.get("persistent_betas"):
                return self._tempered_negative_chains(v)
            if start == "noise_and_persistent":
                state = [torch.cat([a, b]) for a, b in zip(self._noise_rows(v.shape[0]), state)]
            elif self._reuses_free_energy_fields:
                k = self.hparams.cd_steps
                return self.kernel.run_half_sweeps(m, state, [0] + [1, 0] * (k - 1), generator=g)
        elif start == "noise":
            state = self._noise_rows(v.shape[0])
            if self.hparams.get("noise_anneal", 1.0) != 1.0:
                from qidbm.samplers.tempering import annealed_run, annealing_betas

                betas = annealing_betas(self.hparams.noise_anneal, self.hparams.cd_steps)
                return annealed_run(m, self.kernel, state, betas, generator=g)
        elif start == "local_mode":
            from qidbm.samplers.taniguchi import taniguchi_chain

            return taniguchi_chain(m, None, v.shape[0], self.kernel, g)
        elif start == "data_local_mode":
            state = m.local_mode(v)
        else:
            # the first half-sweep redraws the odd layers: a short mean field only seeds the even ones
            state = [v] + [bernoulli(p, g) for p in m.mean_field(v, num_iters=1 if m.num_layers == 2 else 2)[1:]]
        state, stats = self.kernel.run(m, state, self.hparams.cd_steps, generator=g)
        if start == "persistent":
            self._chains = state
        elif start == "noise_and_persistent":  # the persistent chains are the last rows
            self._chains = [x[v.shape[0]:] for x in state]
        return state, stats

    def _noise_rows(self, n: int) -> State:
        """The starts of ``n`` noise-started negative chains (``noise_density``, if set)."""
        d = self.hparams.get("noise_density")
        return self.model.random_state(n, self._generator, visible_density=None if d is None else tuple(d))

    def _tempered_negative_chains(self, v: Tensor) -> tuple[State, ChainStats]:
        """The persistent chains advanced by replica exchange (``persistent_betas``), and, for
        ``noise_and_persistent``, noise-started rows before them."""
        from qidbm.samplers.tempering import ReplicaExchange

        m, g, k = self.model, self._generator, self.hparams.cd_steps
        # the ladder follows the parameters of this step
        if self._exchange is None:
            self._exchange = ReplicaExchange.temperatures(m, self.hparams.persistent_betas, self.kernel)
        else:
            self._exchange.refresh(m)
        rx = self._exchange
        n = self._chains[0].shape[0]
        if self._hot_chains is None or len(self._hot_chains) != len(rx.ladder) - 1 or self._hot_chains[0][0].shape[0] != n:
            self._hot_chains = [t.random_state(n, g) for t in rx.ladder[1:]]
        states, stats = rx.run([self._chains, *self._hot_chains], k, generator=g)
        self._chains, self._hot_chains = states[0], states[1:]
        if self.hparams.negative_start == "persistent":
            return self._chains, stats
        noise, s = self.kernel.run(m, self._noise_rows(v.shape[0]), k, generator=g)
        return [torch.cat([a, b]) for a, b in zip(noise, self._chains)], stats.merge(s)

    def doem_loss(self, v: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The DO-EM / CD loss and its terms for a batch of visible vectors: the two free-energy
        terms and, with the exact quantum step, the negative chains' acceptance per quantum layer
        (``acceptance/layer{l}``)."""
        with matmul_precision(self.hparams.get("matmul_precision", "float32")), \
                fused.fused_kernels(self.hparams.get("fused_kernels", False)):
            pos = self.positive_phase(v)
            neg, neg_stats = self._negative_chains(v)
            # one forward/backward over [positive; negative] rows: larger matrix products
            n_pos = pos[0].shape[0]
            both = [None if p is None else torch.cat([p, q.to(p.dtype)]) for p, q in zip(pos, neg)]
            f, fields = self.model.marginal_free_energy_and_fields(both, self.summed_layers)
        if self._reuses_free_energy_fields:  # the chains' last odd half-sweep, from F's own fields
            with torch.no_grad(), fused.fused_kernels(self.hparams.get("fused_kernels", False)):
                for l, (phi, gam) in fields.items():
                    # gamma is a [n_l] parameter unless coupled fields make it per row
                    if gam is None:
                        p = torch.sigmoid(phi[n_pos:])
                    else:
                        phi, gam = torch.broadcast_tensors(phi, gam)
                        p = qubit_draw_prob(phi[n_pos:], gam[n_pos:])
                    neg[l] = bernoulli(p, self._generator)
            self._chains = neg
        if self.hparams.get("centering", False):
            self._batch_means = self._positive_means(pos, fields, n_pos)
        f_pos, f_neg = f[:n_pos].mean(), self._negative_free_energy(f[n_pos:], n_pos)
        loss = f_pos - f_neg
        terms = {"free_energy_data": f_pos.detach(), "free_energy_model": f_neg.detach()}
        for l, a in neg_stats.acceptance().items():
            terms[f"acceptance/layer{l}"] = a.float()
        for k, a in neg_stats.swap_rates().items():
            terms[f"swap_rate/pair{k}"] = a.float()
        return loss, terms

    def _negative_free_energy(self, f_neg: Tensor, num_noise: int) -> Tensor:
        """The negative term: the mean over the negative rows, or with ``persistent_weight`` w,
        ``(1 - w) mean(noise rows) + w mean(persistent rows)`` (the noise rows come first)."""
        w = self.hparams.get("persistent_weight")
        if w is None:
            return f_neg.mean()
        return (1 - w) * f_neg[:num_noise].mean() + w * f_neg[num_noise:].mean()

    # ------------------------------------------------------------------ lightning hooks
    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        v = _as_visible(batch)
        if not self._first_batch_checked:
            # the first batch of each fit only: shape, dtype, finiteness, range/encoding (cheap)
            from qidbm.lightning.batch_checks import validate_batch_for_model

            validate_batch_for_model(v, self.model, self.data_info)
            self._first_batch_checked = True
        v = v.to(self.dtype)
        loss, terms = self.doem_loss(v)
        bs = v.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for k, t in terms.items():
            self.log(f"train/{k}", t, batch_size=bs)
        for l in self.model.quantum_layers:
            self.log(f"train/gamma_mean/layer{l}", self.model.transverse_parameter(l).detach().abs().mean(), batch_size=bs)
        if self._trainer is not None and batch_idx % max(self.trainer.log_every_n_steps, 1) == 0:
            self.log("train/reconstruction_error", self.reconstruction_error(v), batch_size=bs)
        opt = self.optimizers(use_pl_optimizer=False) if self._trainer is not None else None
        if opt is not None:
            self.log("train/lr", float(opt.param_groups[0]["lr"]), batch_size=bs)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        v = _as_visible(batch).to(self.dtype)
        self.log("val/reconstruction_error", self.reconstruction_error(v), batch_size=v.shape[0], sync_dist=True)

    @torch.no_grad()
    def reconstruction_error(self, v: Tensor) -> Tensor:
        """Mean squared error of one mean-field up-down pass, ``||v - E[v | E[h | v]]||^2 / n``."""
        mf = self.model.mean_field(v, num_iters=1)
        return ((self.model.conditional(0, mf)[0] - v) ** 2).mean()

    @torch.no_grad()
    def _positive_means(self, pos: State, fields: dict, n_pos: int) -> list[Tensor]:
        """Per-layer means of the positive phase (summed layers: their conditional means), for centering."""
        means = []
        for l in range(self.model.num_layers):
            if l in fields:
                phi, gam = fields[l]
                phi = phi[:n_pos]
                p = torch.sigmoid(phi) if gam is None else qubit_draw_prob(*torch.broadcast_tensors(phi, gam[:n_pos] if gam.dim() > 1 else gam))
                means.append(p.mean(0))
            elif l == 0 and self.model.gaussian_visible:
                means.append(torch.zeros_like(pos[0][0]))  # the visible offset of Gaussian units stays 0
            else:
                means.append(pos[l].mean(0))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            flat = torch.cat(means)
            torch.distributed.all_reduce(flat)  # every rank must transform the reduced gradient alike
            means = list((flat / torch.distributed.get_world_size()).split([m.numel() for m in means]))
        return means

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.hparams.get("centering", False) and self._offsets is not None:
            from qidbm.lightning.centering import centered_gradients, update_offsets

            centered_gradients(self.model, self._offsets)
            if self._batch_means is not None:
                update_offsets(self._offsets, self._batch_means, self.hparams.centering_rate)
                self._batch_means = None

    def configure_optimizers(self):
        opt = torch.optim.SGD(
            self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum, weight_decay=self.hparams.weight_decay
        )
        decay = float(self.hparams.get("lr_decay", 0.0))
        cooldown = int(self.hparams.get("lr_cooldown_steps", 0))
        if decay == 0.0 and cooldown == 0:
            return opt
        max_steps = self.trainer.max_steps if self._trainer is not None else None
        check_cooldown(cooldown, max_steps)
        # the factor of the next update, from the trainer's update count (a resume from a checkpoint
        # saved without this schedule then continues at the right point; the lambda's own count restarts)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda _: lr_factor(self.global_step, decay=decay, cooldown_steps=cooldown, max_steps=max_steps)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        chains = None if self._chains is None else [c.detach().cpu() for c in self._chains]
        gen = None if self._generator is None else self._generator.get_state()
        per_rank = [(chains, gen)]
        if self.trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            per_rank = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(per_rank, (chains, gen))
        checkpoint["qidbm"] = checkpoint_section(
            model=self.model,
            data_info=self.data_info,
            chains_per_rank=[c for c, _ in per_rank],
            generator_state_per_rank=[g for _, g in per_rank],
            optimizer_settings=self._optimizer_settings,
            centering_offsets=None if self._offsets is None else [o.detach().cpu() for o in self._offsets],
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from qidbm.lightning.resume_checks import check_resume_matches

        info = check_checkpoint(checkpoint, expected_class=type(self.model).__name__)
        # before Lightning loads the weights: other layer sizes or other data are clear errors
        check_resume_matches(info, self.model, self.data_info)
        # inside a fit's restore only (not BoltzmannModule.load_from_checkpoint)
        self._resume = None if self._trainer is None else {
            "hyper_parameters": dict(checkpoint.get("hyper_parameters") or {}),
            "optimizer_settings": info.get("optimizer_settings"),
            "global_step": checkpoint.get("global_step"),
            "default_optimizer": "configure_optimizers" not in self.__dict__,  # LightningCLI's optimizer: patches it
        }
        self.data_info = info.get("data_info")
        rank = self.global_rank if self._trainer is not None else 0
        chains, gens = info.get("chains_per_rank") or [None], info.get("generator_state_per_rank") or [None]
        if len(chains) > 1 and len(chains) != (self.trainer.world_size if self._trainer is not None else 1):
            raise ValueError(
                f"this checkpoint holds persistent chains for {len(chains)} DDP ranks but the job has "
                f"{self.trainer.world_size}; resume with the same number of devices"
            )
        self._chains = chains[min(rank, len(chains) - 1)]
        self._restored_generator_state = gens[min(rank, len(gens) - 1)]
        self._offsets = info.get("centering_offsets")


def _as_visible(batch: Any) -> Tensor:
    if isinstance(batch, (list, tuple)):
        batch = batch[0]
    if not isinstance(batch, Tensor):
        raise TypeError(f"expected a batch tensor [B, n_visible], got {type(batch).__name__}")
    if batch.dim() != 2:
        batch = batch.flatten(1)
    return batch
