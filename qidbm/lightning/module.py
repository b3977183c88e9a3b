"""DO-EM under contrastive divergence as a LightningModule (docs/maths.md, 'DO-EM loss and gradient').

The loss ``mean_batch F_C(x_C^+) - mean_batch F_C(x_C^-)`` has as its autograd gradient the CD estimate of
the log-likelihood gradient, every summed-out layer (the quantum ones included) Rao-Blackwellised. x_C^+
comes from the positive-phase estimator (the E-step: for CQ models the Petz recovery map reduces to the
model's own conditional), x_C^- from the negative-phase estimator (:mod:`qidbm.estimators`). One optimizer
step on it is one M-step of DO-EM (Algorithm 2 of the DO-EM paper), so any torch optimizer, gradient
clipping, precision plugin and DDP work unchanged. The module composes objects; it interprets no strings.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor

from qidbm import fused
from qidbm.estimators import ClampedGibbs, NegativePhase, Persistent, PositivePhase, build, to_config
from qidbm.lightning.centering import Centering
from qidbm.lightning.data_init import DataInit, as_visible
from qidbm.lightning.lr_schedule import LRSchedule
from qidbm.lightning.transverse_field import TransverseField
from qidbm.models import BoltzmannMachine
from qidbm.models.base import State
from qidbm.precision import MATMUL_PRECISIONS, matmul_precision
from qidbm.samplers.drawing import Output, check_sample_output, check_sample_steps
from qidbm.samplers.kernels import BlockGibbsKernel, PaperStep

_OBJECTS = ("negative", "positive", "kernel", "optimizer", "lr_schedule", "centering", "init_visible", "transverse_field")


class BoltzmannModule(L.LightningModule):
    """Train any :class:`~qidbm.models.BoltzmannMachine` by DO-EM / CD.

    Args:
        model: the machine (``RBM``, ``QRBM``, ``GRBM``, ``QGRBM``, ``DBM``, ``QiDBM``).
        negative: where the negative states come from (:mod:`qidbm.estimators`: ``FromData``,
            ``FromNoise``, ``Persistent``, ``TemperedPersistent``, ``Mixture``, ``TaniguchiChains``);
            default ``Persistent()`` (PCD-1, one chain per batch row).
        positive: the E-step for classical hidden layers the loss does not sum out (DBMs):
            ``ClampedGibbs(steps)`` (default, 5 steps), ``MeanField()`` or ``ClampedLocalMode()``.
        kernel: the transition rule of every chain (:mod:`qidbm.samplers.kernels`): ``PaperStep()``
            (default, the DO-EM paper's Z-basis step) or ``ExactStep()`` (Metropolis-corrected); a
            Gaussian visible layer moves by the kernel's ``visible`` (``LangevinVisible`` for Liao et al.'s
            Gibbs-Langevin). The exact step's acceptance is logged as ``train/acceptance/layer{l}``.
        optimizer: a callable making the optimizer from the parameters (default ``torch.optim.SGD``,
            lr 1e-3); in a config ``{class_path: torch.optim.SGD, init_args: {lr: 0.005, momentum: 0.9}}``.
        lr_schedule: :class:`~qidbm.lightning.lr_schedule.LRSchedule` (decay, cool-down) or None.
        centering: :class:`~qidbm.lightning.centering.Centering` (Melchior et al. 2016) or None.
        init_visible: :class:`~qidbm.lightning.data_init.DataInit` (default) sets the visible
            parameters from the training data at the start of a new fit; None keeps the model's.
        matmul_precision: ``"float32"`` or ``"bfloat16"`` for every matrix product of a step
            (:mod:`qidbm.precision`); parameters and elementwise closed forms stay float32.
        fused_kernels: run the elementwise closed forms as ``torch.compile``d kernels (:mod:`qidbm.fused`).
        sample_output: how ``qidbm sample``, ``qidbm evaluate`` and the callbacks read samples of this
            machine out (a :class:`~qidbm.samplers.drawing.SamplingSpec` output); changes nothing in training.
        chain_seed: seed of the chains' generator (default: torch's initial seed); DDP rank r uses seed + r.
        transverse_field: :class:`~qidbm.lightning.transverse_field.TransverseField` (fixed, annealed or
            floored fields of the quantum layers) or None (learned, as every other parameter).
        sample_steps: the Gibbs sweeps per chain with which ``qidbm sample`` and ``qidbm evaluate`` draw
            this machine's samples (the callbacks take their own ``num_steps``); None: as many as the
            negative estimator's chains from noise make (``FromNoise(sweeps)``). Changes nothing in training.
    """

    def __init__(
        self,
        model: BoltzmannMachine,
        negative: NegativePhase | None = None,
        positive: PositivePhase | None = None,
        kernel: BlockGibbsKernel | None = None,
        optimizer: OptimizerCallable = torch.optim.SGD,
        lr_schedule: LRSchedule | None = None,
        centering: Centering | None = None,
        init_visible: DataInit | None = DataInit(),
        matmul_precision: Literal["float32", "bfloat16"] = "float32",
        fused_kernels: bool = False,
        sample_output: Output | None = None,
        chain_seed: int | None = None,
        transverse_field: TransverseField | None = None,
        sample_steps: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(model, BoltzmannMachine):
            raise TypeError(f"model must be a qidbm BoltzmannMachine (RBM, QRBM, ...), got {type(model).__name__}")
        if matmul_precision not in MATMUL_PRECISIONS:
            raise ValueError(f"matmul_precision must be one of {list(MATMUL_PRECISIONS)}, got {matmul_precision!r}")
        if not isinstance(fused_kernels, bool):
            raise TypeError(f"fused_kernels must be true or false, got {fused_kernels!r}")
        check_sample_output(sample_output)
        check_sample_steps(sample_steps)
        self.model = model
        # objects, or their {class_path, init_args} (a module rebuilt from a checkpoint's hyperparameters)
        self.negative = build(negative, NegativePhase) or Persistent()
        self.positive = build(positive, PositivePhase) or ClampedGibbs()
        self.kernel = build(kernel, BlockGibbsKernel) or PaperStep()
        self.optimizer_factory = build(optimizer)
        self.lr_schedule = build(lr_schedule, LRSchedule)
        self.centering = build(centering, Centering)
        self.init_visible = build(init_visible, DataInit)
        self.transverse_field = build(transverse_field, TransverseField)
        if self.transverse_field is not None:
            self.transverse_field.check(model)
        self.negative.check(model, self.kernel)
        if self.init_visible is not None:
            self.init_visible.check(model)
        self.save_hyperparameters(ignore=["model"])
        for k in _OBJECTS:  # checkpoints hold plain data: each object as {class_path, init_args}
            value = getattr(self, "optimizer_factory" if k == "optimizer" else k)
            self.hparams[k] = self.hparams[k] if isinstance(self.hparams.get(k), dict) else to_config(value)
        opt = self.hparams["optimizer"]
        if isinstance(opt, dict) and str(opt.get("class_path", "")).startswith("torch.optim."):
            # the same optimizer as a plain partial: LightningCLI's callable holds its parser (and so sys.stdout),
            # which a deep copy of the module (Lightning's EMAWeightAveraging) or pickling cannot take
            self.optimizer_factory = build(opt)
        self.summed_layers = self.negative.summed_layers(model)
        self.data_info: dict | None = None
        self._generator: torch.Generator | None = None
        self._restored_generator_state: Tensor | None = None
        self._first_batch_checked = False
        self._resume: dict | None = None  # the checkpoint's settings, compared once training starts
        self._optimizer_settings: list | None = None
        self._pending_chains: State | None = None  # a resumed checkpoint's chains of another estimator

    def setup(self, stage: str) -> None:
        from qidbm.lightning.batch_checks import check_data_matches_model

        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and hasattr(dm, "data_info"):
            self.data_info = dm.data_info()
            check_data_matches_model(self.data_info, self.model)
        # before DDP wraps the model (rank 0's values are broadcast) and before a checkpoint is restored
        if stage == "fit" and self.init_visible is not None and dm is not None:
            self.init_visible(self.model, dm.train_dataloader())

    def on_fit_start(self) -> None:
        from qidbm.lightning.resume_checks import optimizer_settings

        self._optimizer_settings = optimizer_settings(self.trainer.optimizers)
        if "configure_optimizers" in self.__dict__ and self.lr_schedule is not None:
            raise ValueError("lr_schedule schedules the module's own optimizer, which an optimizer: section "
                             "(--optimizer) replaces: drop it, or give the schedule as an lr_scheduler: section")
        self._first_batch_checked = False
        self._generator = None  # made on this fit's device, seeded (or restored) on first use
        if self.centering is not None:
            self.centering.start(self.model)
        if self.transverse_field is not None:
            self.transverse_field.start(self.model, self.trainer.estimated_stepping_batches, self.global_step)

    def on_train_start(self) -> None:
        # after Lightning restored the optimizer state: settings a resume changed are applied and reported
        resume, self._resume = self._resume, None
        if resume is not None:
            from qidbm.lightning.resume_checks import apply_changed_settings_on_resume

            defaults = {k: to_config(p.default) for k, p in inspect.signature(type(self).__init__).parameters.items()
                        if p.default is not inspect.Parameter.empty}
            apply_changed_settings_on_resume(self.trainer, resume, dict(self.hparams), self._optimizer_settings, defaults)
            if self.lr_schedule is not None:  # the first resumed update at this schedule's rate, not the restored one
                for config in self.trainer.lr_scheduler_configs:
                    sched = config.scheduler
                    for group, base in zip(sched.optimizer.param_groups, getattr(sched, "base_lrs", [])):
                        group["lr"] = base * self.lr_schedule.factor(self.global_step, self.trainer.max_steps)

    @property
    def generator(self) -> torch.Generator:
        """The chains' generator, seeded by ``chain_seed`` (else torch's initial seed) plus the DDP rank."""
        if self._generator is None:
            seed = self.hparams.chain_seed if self.hparams.chain_seed is not None else torch.initial_seed()
            self._generator = torch.Generator(device=self.device)
            self._generator.manual_seed(int(seed) + self.global_rank)
            if self._restored_generator_state is not None:  # a checkpoint's stream continues
                self._generator.set_state(self._restored_generator_state)
                self._restored_generator_state = None
        return self._generator

    @property
    def chains(self) -> State | None:
        """The negative estimator's persistent chains (None if it keeps none)."""
        return self.negative.chains

    def sampling(self):
        """How samples of this machine are drawn by default (:func:`~qidbm.samplers.drawing.trained_sampling`)."""
        from qidbm.samplers.drawing import trained_sampling

        return trained_sampling(dict(self.hparams), self.model.gaussian_visible)

    def positive_phase(self, v: Tensor) -> State:
        """x_C^+: the data, with the classical hidden layers the loss does not sum out filled in."""
        m = self.model
        if all(l in self.summed_layers for l in range(1, m.num_layers)):
            return [v] + [None] * (m.num_layers - 1)
        return self.positive(m, v, self.kernel, self.generator)

    def loss(self, v: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The DO-EM / CD loss for a batch of visible vectors and its logged terms: the two free-energy
        terms, and the negative chains' exact-step acceptance and swap rates."""
        with matmul_precision(self.hparams.matmul_precision), fused.fused_kernels(self.hparams.fused_kernels):
            pos = self.positive_phase(v)
            neg, stats = self.negative.sample(self.model, v, self.kernel, self.generator)
            # one forward/backward over [positive; negative] rows: larger matrix products
            n_pos = pos[0].shape[0]
            both = [None if p is None else torch.cat([p, q.to(p.dtype)]) for p, q in zip(pos, neg)]
            f, fields = self.model.marginal_free_energy_and_fields(both, self.summed_layers)
            with torch.no_grad():
                self.negative.after_loss(self.model, neg, fields, n_pos, self.generator)
        if self.centering is not None:
            self.centering.record(self.model, pos, fields, n_pos)
        f_pos, f_neg = f[:n_pos].mean(), self.negative.free_energy(f[n_pos:], n_pos)
        terms = {"free_energy_data": f_pos.detach(), "free_energy_model": f_neg.detach()}
        terms.update({f"acceptance/layer{l}": a.float() for l, a in stats.acceptance().items()})
        terms.update({f"swap_rate/pair{k}": a.float() for k, a in stats.swap_rates().items()})
        return f_pos - f_neg, terms

    def fit_step(self, batch: Any, optimizer: torch.optim.Optimizer) -> Tensor:
        """One training update outside a Trainer (benchmarks, notebooks): the loss, its gradient, the
        centering transform and the optimizer step, as ``training_step`` under Lightning does."""
        if self.transverse_field is not None:
            self.transverse_field.before_update(self.model, self.global_step)
        optimizer.zero_grad(set_to_none=True)
        loss, _ = self.loss(as_visible(batch).to(self.dtype))
        loss.backward()
        self.on_before_optimizer_step(optimizer)
        optimizer.step()
        if self.transverse_field is not None:
            self.transverse_field.after_update(self.model, self.global_step)
        return loss.detach()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        if self.transverse_field is not None:
            self.transverse_field.before_update(self.model, self.global_step)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.transverse_field is not None:
            self.transverse_field.after_update(self.model, self.global_step)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        v = as_visible(batch)
        if not self._first_batch_checked:  # shape, dtype, finiteness, range/encoding of the first batch
            from qidbm.lightning.batch_checks import validate_batch_for_model

            validate_batch_for_model(v, self.model, self.data_info)
            self._first_batch_checked = True
        v = v.to(self.dtype)
        loss, terms = self.loss(v)
        bs = v.shape[0]
        self.log("train/loss", loss.detach(), prog_bar=True, batch_size=bs)
        for k, t in terms.items():
            self.log(f"train/{k}", t, batch_size=bs)
        for l in self.model.quantum_layers:
            self.log(f"train/gamma_mean/layer{l}", self.model.transverse_parameter(l).detach().abs().mean(), batch_size=bs)
        if self._trainer is not None:
            if batch_idx % max(self.trainer.log_every_n_steps, 1) == 0:
                self.log("train/reconstruction_error", self.reconstruction_error(v), batch_size=bs)
            self.log("train/lr", float(self.optimizers(use_pl_optimizer=False).param_groups[0]["lr"]), batch_size=bs)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        v = as_visible(batch).to(self.dtype)
        self.log("val/reconstruction_error", self.reconstruction_error(v), batch_size=v.shape[0], sync_dist=True)

    @torch.no_grad()
    def reconstruction_error(self, v: Tensor) -> Tensor:
        """Mean squared error of one mean-field up-down pass, ``||v - E[v | E[h | v]]||^2 / n``."""
        mf = self.model.mean_field(v, num_iters=1)
        return ((self.model.conditional(0, mf)[0] - v) ** 2).mean()

    def on_before_optimizer_step(self, optimizer) -> None:
        if self.centering is not None:
            self.centering.transform(self.model)

    def configure_optimizers(self):
        opt = self.optimizer_factory(self.parameters())
        if self.lr_schedule is None:
            return opt
        max_steps = self.trainer.max_steps if self._trainer is not None else None
        return {"optimizer": opt, "lr_scheduler": self.lr_schedule.scheduler(opt, lambda: self.global_step, max_steps)}

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, *args, **kwargs):
        """Lightning's ``load_from_checkpoint``; a checkpoint of the flat options of qidbm 0.1 is upgraded first."""
        from qidbm.lightning.module_state import upgraded_checkpoint

        return super().load_from_checkpoint(upgraded_checkpoint(checkpoint_path), *args, **kwargs)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        from qidbm.lightning.module_state import save_state

        save_state(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        from qidbm.lightning.module_state import restore_state

        restore_state(self, checkpoint)
