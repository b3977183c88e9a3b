"""The default optimizer's learning-rate schedule: a factor on ``lr`` per update (pure functions).

Two factors multiply: the inverse square root of Taniguchi et al. (``LRSchedule.decay``) and a linear cool-down
over the last updates of the run, or of its stage (``LRSchedule.cooldown_steps``, ``end_step``; the "decay"
phase of a warmup-stable-decay schedule). Both read the update count from the trainer (``global_step``), not from the scheduler's own
counter, so a run resumed from a checkpoint that had no schedule continues where it is.
"""

from __future__ import annotations

__all__ = ["LRSchedule", "check_cooldown", "lr_factor"]


def lr_factor(step: int, *, decay: float = 0.0, cooldown_steps: int = 0, max_steps: int | None = None,
              end_step: int | None = None) -> float:
    """The factor on ``lr`` for update ``step`` (0-based) of a run of ``max_steps`` updates.

    ``f(t) = (1 + decay * t)^(-1/2) * min(1, max(0, (T - t) / N))`` with ``N = cooldown_steps`` and ``T =
    end_step`` (the end of a stage that a :class:`~qidbm.lightning.next_stage.NextStage` ends), else
    ``max_steps``; the second factor is 1 when ``N = 0``. The rate is constant up to update ``T - N`` and
    falls linearly from there: update ``t = T - 1`` runs at ``lr / N``, and from ``T`` on at 0.
    """
    check_cooldown(cooldown_steps, max_steps, end_step)
    f = (1.0 + decay * step) ** -0.5 if decay else 1.0
    if cooldown_steps:
        end = max_steps if end_step is None else end_step
        f *= min(1.0, max(0.0, (end - step) / cooldown_steps))
    return f


def check_cooldown(cooldown_steps: int, max_steps: int | None, end_step: int | None = None) -> None:
    """Errors for a cool-down the trainer cannot run: no ``max_steps`` (nor ``end_step``), a cool-down longer
    than the run, or a stage end after the run's end."""
    if end_step is not None:
        if max_steps is not None and max_steps > 0 and end_step > max_steps:
            raise ValueError(
                f"the schedule's stage ends at update {end_step} (LRSchedule end_step), after the run "
                f"(trainer.max_steps={max_steps}); set end_step at most max_steps, or leave it unset to cool down "
                "at the end of the run")
        if cooldown_steps > end_step:
            raise ValueError(f"the cool-down (cooldown_steps={cooldown_steps}) is longer than the stage (end_step="
                             f"{end_step}); choose at most end_step")
        return
    if not cooldown_steps:
        return
    if max_steps is None or max_steps <= 0:
        raise ValueError(
            f"a cool-down over {cooldown_steps} updates (LRSchedule cooldown_steps) lowers the rate over the last updates of the run, so the run "
            "needs a length in updates: set trainer.max_steps (e.g. --trainer.max_steps 88000), or "
            "cooldown_steps 0 for a constant rate"
        )
    if cooldown_steps > max_steps:
        raise ValueError(
            f"the cool-down (cooldown_steps={cooldown_steps}) is longer than the run (trainer.max_steps={max_steps}); "
            "choose at most max_steps"
        )


class LRSchedule:
    """The factor :func:`lr_factor` as a Lightning scheduler of the module's optimizer: an inverse square
    root decay (``decay``, Taniguchi et al. use 1e-3) and a linear cool-down over the last
    ``cooldown_steps`` updates of ``trainer.max_steps`` (which must then be set), or of a first stage
    that ends at update ``end_step`` (where a :class:`~qidbm.lightning.next_stage.NextStage` takes over)."""

    def __init__(self, decay: float = 0.0, cooldown_steps: int = 0, end_step: int | None = None) -> None:
        if not decay >= 0:
            raise ValueError(f"LRSchedule: decay must be >= 0 (0: no decay), got {decay}")
        if isinstance(cooldown_steps, bool) or not isinstance(cooldown_steps, int) or cooldown_steps < 0:
            raise ValueError(f"LRSchedule: cooldown_steps must be an integer >= 0 (0: no cool-down), got {cooldown_steps!r}")
        if end_step is not None and (isinstance(end_step, bool) or not isinstance(end_step, int) or end_step <= 0):
            raise ValueError(f"LRSchedule: end_step must be a positive integer (an update count) or unset, got {end_step!r}")
        self.decay, self.cooldown_steps, self.end_step = float(decay), cooldown_steps, end_step

    def __repr__(self) -> str:
        end = "" if self.end_step is None else f", end_step={self.end_step}"
        return f"LRSchedule(decay={self.decay}, cooldown_steps={self.cooldown_steps}{end})"

    def factor(self, step: int, max_steps: int | None) -> float:
        """:func:`lr_factor` of update ``step`` under this schedule, in a run of ``max_steps`` updates."""
        return lr_factor(step, decay=self.decay, cooldown_steps=self.cooldown_steps, max_steps=max_steps,
                         end_step=self.end_step)

    def scheduler(self, optimizer, updates_done, max_steps: int | None) -> dict:
        """The ``lr_scheduler`` entry of ``configure_optimizers``, stepped every update. ``updates_done()``
        returns the trainer's update count (``global_step``), not the scheduler's own, so a resume from a
        checkpoint saved without this schedule continues at the right point."""
        import torch

        check_cooldown(self.cooldown_steps, max_steps, self.end_step)
        sched = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: self.factor(updates_done(), max_steps))
        return {"scheduler": sched, "interval": "step"}
