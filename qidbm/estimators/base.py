"""The two interfaces of a DO-EM / CD training step, and how an estimator is written down.

A training step needs two sets of states (docs/maths.md, 'DO-EM loss and gradient'):

* x_C^+ from a :class:`PositivePhase`: the data, with the classical hidden layers that the loss does
  not sum out drawn given the data (the E-step);
* x_C^- from a :class:`NegativePhase`: states the machine itself produces. A negative phase owns
  its chains (persistent ones live in the object and are saved in checkpoints) and knows how a
  machine trained with it is sampled (:meth:`NegativePhase.sampling`).

Both receive the transition kernel (:mod:`qidbm.samplers.kernels`) and the module's generator; the
module only adds the two free-energy terms. :func:`to_config` writes any estimator as the
``{class_path, init_args}`` dictionary that configs use and checkpoints store; :func:`build` reads it
back (only classes of this package: a checkpoint's text never imports other code).
"""

from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine, State
from qidbm.samplers.chain import ChainStats
from qidbm.samplers.kernels import BlockGibbsKernel

__all__ = ["NegativePhase", "PositivePhase", "build", "to_config"]


class _Configurable:
    """Objects whose constructor arguments are kept as attributes of the same names (so that
    :func:`to_config` can write them down); ``repr`` shows them."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in _init_args(self).items())
        return f"{type(self).__name__}({args})"


class PositivePhase(_Configurable):
    """The E-step: the data ``v`` with every classical hidden layer filled in.

    Layers that the loss sums out (:meth:`NegativePhase.summed_layers`) are ignored by the loss, so an
    estimator may fill them or not.
    """

    def __call__(self, model: BoltzmannMachine, v: Tensor, kernel: BlockGibbsKernel,
                 generator: torch.Generator | None) -> State:
        raise NotImplementedError


class NegativePhase(_Configurable):
    """The negative statistics of a training step: :meth:`sample` returns the states whose free
    energy the loss subtracts, and the statistics of their chains.

    Subclasses override :meth:`sample` and, where they differ from the defaults,
    :meth:`summed_layers` (which layers the loss sums out), :meth:`free_energy` (how the rows are
    averaged), :meth:`sampling` (how a machine trained with this estimator is sampled),
    :attr:`chains` (persistent chain state, saved in checkpoints) and :meth:`after_loss`.
    """

    def sample(self, model: BoltzmannMachine, v: Tensor, kernel: BlockGibbsKernel,
               generator: torch.Generator | None) -> tuple[State, ChainStats]:
        """The negative states for a batch ``v`` (its size sets the number of fresh chains)."""
        raise NotImplementedError

    def check(self, model: BoltzmannMachine, kernel: BlockGibbsKernel) -> None:
        """A clear error, at construction, when this estimator cannot serve ``model`` with ``kernel``."""

    def summed_layers(self, model: BoltzmannMachine) -> tuple[int, ...]:
        """Layers the loss sums out in closed form (default: the model's Rao-Blackwellised choice)."""
        return tuple(model.default_summed_layers())

    def free_energy(self, f: Tensor, batch_size: int) -> Tensor:
        """The negative term from the free energies ``f`` of the negative rows: their mean."""
        return f.mean()

    def after_loss(self, model: BoltzmannMachine, state: State, fields: dict, num_positive: int,
                   generator: torch.Generator | None) -> None:
        """Called with the free energy's fields after the loss is computed (default: nothing)."""

    def sampling(self, gaussian_visible: bool):
        """The :class:`~qidbm.samplers.drawing.SamplingSpec` a machine trained this way is drawn
        with, or None (no protocol of its own: the global defaults)."""
        return None

    @property
    def chains(self) -> State | None:
        """Persistent chain state (saved in checkpoints), or None for estimators without one."""
        return None

    @chains.setter
    def chains(self, state: State | None) -> None:
        if state is not None:
            raise ValueError(f"{type(self).__name__} keeps no persistent chains, but a checkpoint holds some")


def _init_args(obj: Any) -> dict[str, Any]:
    params = inspect.signature(type(obj).__init__).parameters
    return {k: getattr(obj, k) for k in params if k != "self" and hasattr(obj, k)}


def to_config(obj: Any) -> Any:
    """``obj`` as plain data: an estimator (or other package object with its arguments as attributes)
    becomes ``{"class_path": ..., "init_args": {...}}``, recursively; plain values stay as they are."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [to_config(x) for x in obj]
    if isinstance(obj, dict):
        return {k: to_config(v) for k, v in obj.items()}
    if isinstance(obj, type):
        return {"class_path": f"{obj.__module__}.{obj.__qualname__}"}
    if isinstance(obj, functools.partial) and isinstance(obj.func, type) and not obj.args:  # e.g. an optimizer
        return {"class_path": f"{obj.func.__module__}.{obj.func.__qualname__}", "init_args": to_config(obj.keywords)}
    cls = type(obj)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": {k: to_config(v) for k, v in _init_args(obj).items()}}


_ALLOWED_PREFIXES = ("qidbm.", "torch.optim.")


def build(config: Any, base: type | None = None) -> Any:
    """The object a :func:`to_config` dictionary describes (objects pass through unchanged).

    Only classes under ``qidbm.`` and ``torch.optim.`` are built, so a checkpoint's hyperparameters
    never import other code. ``base``: the class the result must be an instance (or subclass) of.
    """
    if not (isinstance(config, dict) and "class_path" in config):
        if base is not None and config is not None and not isinstance(config, base):
            raise TypeError(f"expected a {base.__name__} (or its {{class_path, init_args}}), got {config!r}")
        return config
    path = str(config["class_path"])
    if not path.startswith(_ALLOWED_PREFIXES):
        raise ValueError(f"refusing to build {path!r}: only classes of qidbm and torch.optim are built from "
                         "a configuration stored with a model")
    module, _, name = path.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    args = {k: build(v) for k, v in (config.get("init_args") or {}).items()}
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        return functools.partial(cls, **args)  # an optimizer is built later, on the parameters
    obj = cls(**args)  # no init_args (a class path alone, as configs write it): the defaults
    if base is not None and not (isinstance(obj, base) or (isinstance(obj, type) and issubclass(obj, base))):
        raise TypeError(f"{path} is not a {base.__name__}")
    return obj
