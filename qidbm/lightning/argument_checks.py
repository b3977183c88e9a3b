"""``BoltzmannModule``'s numeric arguments, checked at construction."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_module_arguments"]


def check_module_arguments(*, num_chains: Any, positive_steps: Any, lr: Any, momentum: Any, weight_decay: Any,
                           langevin_steps: Any, langevin_step_size: Any) -> None:
    """``BoltzmannModule``'s numeric arguments, checked at construction (``ValueError`` saying what to use)."""

    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def is_num(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if num_chains is not None and not (is_int(num_chains) and num_chains >= 1):
        raise ValueError(
            f"num_chains must be a positive integer (the number of persistent chains, e.g. 500), or null to use "
            f"one chain per batch row; got {num_chains!r}"
        )
    if not (is_int(positive_steps) and positive_steps >= 1):
        raise ValueError(
            f"positive_steps must be an integer >= 1 (Gibbs sweeps of the clamped chain in the E-step, e.g. 5; "
            f"positive: mean_field uses the mean-field fixed point instead); got {positive_steps!r}"
        )
    if not (is_num(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number (the SGD learning rate, e.g. 0.01); got {lr!r}")
    if not (is_num(momentum) and momentum >= 0):
        raise ValueError(f"momentum must be a finite number >= 0 (0 for plain SGD, e.g. 0.5 or 0.9); got {momentum!r}")
    if not (is_num(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0 (0 for none, e.g. 1e-4); got {weight_decay!r}")
    if not (is_int(langevin_steps) and langevin_steps >= 1):
        raise ValueError(f"langevin_steps must be an integer >= 1 (e.g. 10); got {langevin_steps!r}")
    if not (is_num(langevin_step_size) and langevin_step_size > 0):
        raise ValueError(f"langevin_step_size must be a positive finite number (e.g. 0.1); got {langevin_step_size!r}")
