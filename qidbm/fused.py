"""Fused elementwise kernels: the closed forms of :mod:`qidbm.quantum` compiled into one loop each.

Eagerly, every closed form (the qubit's log-partition with its two derivatives, the softplus of a
classical unit, the qubit's draw probability) is 7 to 25 passes over a ``[batch, units]`` tensor,
each reading and writing memory. At the CPU recipes' sizes those passes, not the matrix products,
are what a quantum layer adds to a step (docs/performance.md). ``torch.compile`` (TorchInductor)
turns each of them into one vectorised loop that reads the inputs once and writes every output once;
the arithmetic is the same, so values agree with the eager forms to a few float eps.

Inside ``with fused_kernels(True):`` the functions decorated with :func:`kernel` run compiled; outside
(the default) they run eagerly. The first call of each kernel per dtype and layout compiles it
(seconds to a minute on a CPU, cached by Inductor on disk); a machine without a working C++ compiler
(CPU) or Triton (GPU) falls back to the eager form with one warning. Calls under autograd recording,
inside ``torch.compile``, under torch.func transforms or under a dispatch mode (``FlopCounterMode``)
always run eagerly: the kernels are forward passes whose derivatives their callers form themselves.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from typing import Callable, Iterator, TypeVar

import torch
from torch.utils._python_dispatch import is_in_torch_dispatch_mode

__all__ = ["fused_kernels", "fused_kernels_enabled", "kernel"]

F = TypeVar("F", bound=Callable)

_local = threading.local()
_failed: list[str] = []  # the first compile error, once compilation has failed in this process


def fused_kernels_enabled() -> bool:
    """Whether :func:`kernel`-decorated functions run compiled now (False outside any context)."""
    return getattr(_local, "enabled", False) and not _failed


@contextlib.contextmanager
def fused_kernels(enabled: bool = True) -> Iterator[None]:
    """Run the enclosed closed forms as compiled, fused kernels (``enabled=True``) or eagerly."""
    if not isinstance(enabled, bool):
        raise TypeError(f"fused_kernels takes True or False, got {enabled!r}")
    before = getattr(_local, "enabled", False)
    _local.enabled = enabled
    try:
        yield
    finally:
        _local.enabled = before


def _eager_only(args: tuple) -> bool:
    """Calls the compiled form must not take: recorded by autograd, traced, under a transform, or seen
    by a dispatch mode (FLOP counters, operator recorders: Dynamo does not trace under those)."""
    if torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active() or is_in_torch_dispatch_mode():
        return True
    return torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)


def kernel(fn: F) -> F:
    """Decorator: call ``fn`` eagerly, or its ``torch.compile`` form inside :func:`fused_kernels`.

    ``fn`` must be a pure elementwise function of tensors (Python scalars and flags are fine: the
    compiled form specialises on them).
    """
    compiled: list[Callable] = []

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if not fused_kernels_enabled() or _eager_only(args):
            return fn(*args, **kwargs)
        if not compiled:
            compiled.append(torch.compile(fn, dynamic=True, fullgraph=True))
        try:
            return compiled[0](*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any backend failure: no compiler, no Triton, ...
            if not _failed:
                _failed.append(f"{type(err).__name__}: {err}".split("\n")[0])
                warnings.warn(
                    f"fused kernels could not be compiled ({_failed[0]}); running the eager closed forms "
                    "instead (same values, slower). Install a C++ compiler (CPU) or Triton (GPU) for "
                    "torch.compile, or set fused_kernels: false to silence this.",
                    RuntimeWarning, stacklevel=2)
            return fn(*args, **kwargs)

    call.compiled_forms = compiled  # type: ignore[attr-defined]  # what tests look at
    return call  # type: ignore[return-value]
