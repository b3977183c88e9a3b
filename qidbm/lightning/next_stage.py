"""A second training stage inside one fit: at a given update, switch the negative phase, the learning
rate and its schedule, and the sweeps that sampling uses.

A recipe of two stages used to be two commands (train, then resume the last checkpoint with other
settings). :class:`NextStage` does the second inside the same ``qidbm fit``, exactly as that resume does
it: the optimizer keeps its momentum, the chains' generator and the centering offsets continue, the
new rate replaces the old one as the schedule's base, and persistent chains of the new estimator start
afresh. The module's hyperparameters follow the switch, so every checkpoint written after it records
the stage it was trained in (``qidbm sample`` then draws with the new ``sample_steps``). A run resumed
from a checkpoint written after the switch is switched again before its first update.
"""

from __future__ import annotations

import lightning as L

from qidbm.estimators import NegativePhase, build, to_config
from qidbm.lightning.lr_schedule import LRSchedule
from qidbm.samplers.drawing import check_sample_steps

__all__ = ["NextStage"]


class NextStage(L.Callback):
    """From update ``at_step`` on, train with other settings (each left at None stays as it is).

    Args:
        at_step: the update (``trainer.global_step``) at which the stage starts; the first stage's
            ``LRSchedule(end_step=at_step)`` cools down to it.
        negative: the new negative phase (:mod:`qidbm.estimators`).
        lr: the new learning rate of every parameter group (the base that ``lr_schedule`` scales).
        lr_schedule: the new :class:`~qidbm.lightning.lr_schedule.LRSchedule` (its cool-down ends at
            ``trainer.max_steps`` unless it sets ``end_step``); None keeps the module's.
        sample_steps: the sweeps with which ``qidbm sample`` and ``qidbm evaluate`` draw the machine
            trained in this stage (``BoltzmannModule(sample_steps)``).
    """

    def __init__(self, at_step: int, negative: NegativePhase | None = None, lr: float | None = None,
                 lr_schedule: LRSchedule | None = None, sample_steps: int | None = None) -> None:
        if isinstance(at_step, bool) or not isinstance(at_step, int) or at_step < 1:
            raise ValueError(f"NextStage: at_step must be an update count >= 1, got {at_step!r}")
        if lr is not None and not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
            raise ValueError(f"NextStage: lr must be a positive number (or unset to keep the rate), got {lr!r}")
        check_sample_steps(sample_steps)
        self.at_step, self.lr, self.sample_steps = at_step, lr, sample_steps
        self.negative = build(negative, NegativePhase)
        self.lr_schedule = build(lr_schedule, LRSchedule)
        self._applied = False

    def __repr__(self) -> str:
        return (f"NextStage(at_step={self.at_step}, negative={self.negative!r}, lr={self.lr}, "
                f"lr_schedule={self.lr_schedule!r}, sample_steps={self.sample_steps})")

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        max_steps = trainer.max_steps
        if max_steps is None or max_steps < 0 or self.at_step >= max_steps:
            raise ValueError(
                f"NextStage starts at update {self.at_step}, so the run needs more updates than that: set "
                f"trainer.max_steps above {self.at_step} (now {max_steps})")
        if self.negative is not None:
            self.negative.check(pl_module.model, pl_module.kernel)
        if self.lr_schedule is not None:
            from qidbm.lightning.lr_schedule import check_cooldown

            check_cooldown(self.lr_schedule.cooldown_steps, max_steps, self.lr_schedule.end_step)
        first = getattr(pl_module, "lr_schedule", None)
        if first is not None and first.cooldown_steps and first.end_step != self.at_step:
            end = max_steps if first.end_step is None else first.end_step
            raise ValueError(
                f"the first stage's cool-down ends at update {end} (LRSchedule end_step"
                f"{'' if first.end_step is not None else ' unset: trainer.max_steps'}) but the next stage starts "
                f"at {self.at_step} (NextStage at_step): set end_step to {self.at_step}")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # a run resumed after the switch: switch again before its first update (before the module's
        # own on_train_start compares the checkpoint's settings with this run's)
        self._applied = False
        if trainer.global_step >= self.at_step:
            self._apply(trainer, pl_module)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if not self._applied and trainer.global_step >= self.at_step:
            self._apply(trainer, pl_module)

    def switch(self, pl_module: L.LightningModule) -> None:
        """Put the module into this stage: its negative phase, learning-rate schedule and ``sample_steps``
        (and their hyperparameters). The optimizer's rates are the trainer's part (done when the stage
        starts in a fit); a module switched outside a fit (benchmarks) trains as the stage does otherwise."""
        hp = pl_module.hparams
        if self.negative is not None:
            # a fresh copy per fit: its persistent chains belong to this run
            negative = build(to_config(self.negative), NegativePhase)
            pending = getattr(pl_module, "_pending_chains", None)
            if pending is not None:  # chains a resumed checkpoint holds for this estimator
                try:
                    negative.chains = pending
                except ValueError:
                    pass
                pl_module._pending_chains = None
            pl_module.negative = negative
            pl_module.summed_layers = negative.summed_layers(pl_module.model)
            hp["negative"] = to_config(negative)
        if self.sample_steps is not None:
            hp["sample_steps"] = self.sample_steps
        if self.lr_schedule is not None:
            pl_module.lr_schedule = self.lr_schedule
            hp["lr_schedule"] = to_config(self.lr_schedule)

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._applied = True
        self.switch(pl_module)
        if self.lr is None and self.lr_schedule is None:
            return
        for opt in trainer.optimizers:
            for group in opt.param_groups:
                if self.lr is not None:
                    group["lr"] = group["initial_lr"] = float(self.lr)
        schedule, configs = pl_module.lr_schedule, trainer.strategy.lr_scheduler_configs
        if schedule is not None:  # the schedule, on the new base rate, from this update on
            from lightning.pytorch.utilities.types import LRSchedulerConfig

            made = [schedule.scheduler(opt, lambda: pl_module.global_step, trainer.max_steps)["scheduler"]
                    for opt in trainer.optimizers]
            configs[:] = [LRSchedulerConfig(scheduler=s, interval="step") for s in made]
        else:
            for config in configs:
                if self.lr is not None and hasattr(config.scheduler, "base_lrs"):
                    config.scheduler.base_lrs = [float(self.lr)] * len(config.scheduler.base_lrs)
