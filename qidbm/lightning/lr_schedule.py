"""The default optimizer's learning-rate schedule: a factor on ``lr`` per update (pure functions).

Two factors multiply: the inverse square root of Taniguchi et al. (``lr_decay``) and a linear cool-down
over the last updates of the run (``lr_cooldown_steps``, the "decay" phase of a warmup-stable-decay
schedule). Both read the update count from the trainer (``global_step``), not from the scheduler's own
counter, so a run resumed from a checkpoint that had no schedule continues where it is.
"""

from __future__ import annotations

__all__ = ["check_cooldown", "lr_factor"]


def lr_factor(step: int, *, decay: float = 0.0, cooldown_steps: int = 0, max_steps: int | None = None) -> float:
    """The factor on ``lr`` for update ``step`` (0-based) of a run of ``max_steps`` updates.

    ``f(t) = (1 + decay * t)^(-1/2) * min(1, (T - t) / N)`` with ``T = max_steps``, ``N = cooldown_steps``;
    the second factor is 1 when ``N = 0``. The rate is constant up to update ``T - N`` and falls
    linearly from there: the last update, ``t = T - 1``, runs at ``lr / N``.
    """
    check_cooldown(cooldown_steps, max_steps)
    f = (1.0 + decay * step) ** -0.5 if decay else 1.0
    if cooldown_steps:
        f *= min(1.0, max(0.0, (max_steps - step) / cooldown_steps))
    return f


def check_cooldown(cooldown_steps: int, max_steps: int | None) -> None:
    """Errors for a cool-down the trainer cannot run: no ``max_steps``, or a cool-down longer than the run."""
    if not cooldown_steps:
        return
    if max_steps is None or max_steps <= 0:
        raise ValueError(
            f"lr_cooldown_steps={cooldown_steps} lowers the rate over the last updates of the run, so the run "
            "needs a length in updates: set trainer.max_steps (e.g. --trainer.max_steps 88000), or "
            "lr_cooldown_steps 0 for a constant rate"
        )
    if cooldown_steps > max_steps:
        raise ValueError(
            f"lr_cooldown_steps={cooldown_steps} is longer than the run (trainer.max_steps={max_steps}); "
            "choose at most max_steps"
        )
