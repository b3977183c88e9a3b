"""The transverse fields during training: learned (the default), fixed, annealed, or learned above a floor.

Learned by DO-EM, the fields of a quantum hidden layer tend to collapse towards 0 (the classical
machine; docs/quantum.md). ``BoltzmannModule(transverse_field=...)`` asks what the field does when it is
kept (the setting is stored with the checkpoint's hyperparameters):

* ``TransverseField(fixed=g)``: every unit's ``Gamma = g``, not learned;
* ``TransverseField(anneal_from=g0, anneal_to=g1, anneal_steps=n)``: not learned,
  ``Gamma_t = g0 + (g1 - g0) min(1, t / n)`` at update ``t`` (``n`` defaults to the run's updates);
* ``TransverseField(floor=f)``: learned, but ``|gamma| >= f`` after every update (the sign kept).

Machines with transverse couplings (``coupled_field``) are refused: their Gamma is not one parameter.
"""

from __future__ import annotations

import torch

from qidbm.models import BoltzmannMachine


class TransverseField:
    """Fix, anneal or floor the transverse fields of every quantum layer of a machine in training."""

    def __init__(self, fixed: float | None = None, anneal_from: float | None = None, anneal_to: float = 0.0,
                 anneal_steps: int | None = None, floor: float = 0.0) -> None:
        chosen = [name for name, on in (("fixed", fixed is not None), ("anneal_from", anneal_from is not None),
                                        ("floor", floor > 0)) if on]
        if len(chosen) != 1:
            raise ValueError("TransverseField takes one of fixed=G, anneal_from=G0 (with anneal_to, anneal_steps) "
                             f"or floor=F > 0; got {chosen or 'none'}")
        for name, x in (("fixed", fixed), ("anneal_from", anneal_from), ("anneal_to", anneal_to), ("floor", floor)):
            if x is not None and not (float(x) >= 0 and float(x) < float("inf")):
                raise ValueError(f"TransverseField {name} must be a finite field >= 0, got {x}")
        if anneal_steps is not None and anneal_steps < 1:
            raise ValueError(f"anneal_steps must be a positive number of updates, got {anneal_steps}")
        self.fixed, self.anneal_from, self.anneal_to = fixed, anneal_from, float(anneal_to)
        self.anneal_steps, self.floor = anneal_steps, float(floor)
        self._steps = anneal_steps

    def value_at(self, step: int) -> float | None:
        """The field every unit has at update ``step`` (None when the field is learned)."""
        if self.fixed is not None:
            return float(self.fixed)
        if self.anneal_from is not None:
            frac = min(1.0, step / max(1, self._steps or 1))
            return self.anneal_from + (self.anneal_to - self.anneal_from) * frac
        return None

    @staticmethod
    def check(model: BoltzmannMachine) -> list[torch.Tensor]:
        """The transverse parameters this object controls; a ``ValueError`` if ``model`` has none or couples them."""
        if not model.quantum_layers:
            raise ValueError(f"transverse_field acts on quantum layers; {type(model).__name__} has none "
                             "(leave it unset, or train a QRBM, QGRBM or QiDBM)")
        for l in model.quantum_layers:
            if any(model.transverse_coupling(l, nb) is not None for nb in (l - 1, l + 1) if 0 <= nb < model.num_layers):
                raise ValueError("transverse_field does not control coupled fields (coupled_field=True): their Gamma "
                                 "depends on the neighbouring units; train with coupled_field=False")
        return [model.transverse_parameter(l) for l in model.quantum_layers]

    @torch.no_grad()
    def _apply(self, model: BoltzmannMachine, step: int) -> None:
        value = self.value_at(step)
        for gamma in self.check(model):
            if value is not None:
                gamma.fill_(value)
            elif self.floor > 0:
                big = gamma.abs().clamp_min(self.floor)
                gamma.copy_(torch.where(gamma < 0, -big, big))

    def start(self, model: BoltzmannMachine, total_steps: int, step: int = 0) -> None:
        """At the start of a fit of ``total_steps`` updates (resumed at ``step``): a fixed or annealed field
        stops being learned and takes its value."""
        if self.anneal_from is not None and self.anneal_steps is None:
            self._steps = int(total_steps)
        learned = self.value_at(0) is None
        for gamma in self.check(model):
            gamma.requires_grad_(learned)
        self._apply(model, step)

    def before_update(self, model: BoltzmannMachine, step: int) -> None:
        """Before update ``step``: the fixed or annealed value."""
        if self.value_at(0) is not None:
            self._apply(model, step)

    def after_update(self, model: BoltzmannMachine, step: int) -> None:
        """After an update: the floor."""
        if self.floor > 0:
            self._apply(model, step)
