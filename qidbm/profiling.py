"""Count the matrix products of a piece of code: their calls, shapes and FLOPs.

``torch.utils.flop_counter.FlopCounterMode`` gives the FLOPs per operator but not how many calls
made them, and a training update of Taniguchi et al.'s estimator is hundreds of products of very
different sizes (the local search's batch shrinks as its chains converge). :class:`ProductCounter`
runs torch's counter for the FLOPs and, beside it, a ``TorchDispatchMode`` that records every
``aten::mm``, ``addmm``, ``bmm`` and ``baddbmm`` with its shape, so the two can be checked against
each other (:attr:`ProductCounter.shape_flops` must equal the counter's matrix-product FLOPs).

Both are dispatch modes: code under them runs eagerly (``qidbm.fused`` kernels take their eager
forms), which changes no count, only the time, so a counted run is never a timed one.

    with ProductCounter() as pc:
        loss = module.loss(v)[0]; loss.backward()
    pc.calls, pc.flops, pc.products((600, 784, 498))
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["ProductCounter", "MATRIX_PRODUCT_OPS"]

_aten = torch.ops.aten
# operator -> positions of its two matrix operands in the call's arguments
MATRIX_PRODUCT_OPS = {
    _aten.mm.default: (0, 1),
    _aten.addmm.default: (1, 2),
    _aten.bmm.default: (0, 1),
    _aten.baddbmm.default: (1, 2),
}


def _layout(t) -> str:
    """N: contiguous; T: a transposed contiguous matrix (BLAS reads the two at different speeds); S: other."""
    if t.is_contiguous():
        return "N"
    return "T" if t.transpose(-2, -1).is_contiguous() else "S"


class _Recorder(TorchDispatchMode):
    """Every matrix product run under it, as ``(op, batch, m, k, n) -> calls`` and, for replaying them
    alone, ``(batch, m, k, n, layout_a, layout_b, dtype) -> calls``."""

    def __init__(self, shapes: Counter, layouts: Counter) -> None:
        super().__init__()
        self.shapes, self.layouts = shapes, layouts

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        pos = MATRIX_PRODUCT_OPS.get(func)
        if pos is not None:
            a, b = args[pos[0]], args[pos[1]]
            batch = a.shape[0] if a.dim() == 3 else 1
            m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
            self.shapes[(func.__name__.split(".")[0], batch, m, k, n)] += 1
            self.layouts[(batch, m, k, n, _layout(a), _layout(b), str(a.dtype).split(".")[-1])] += 1
        return func(*args, **(kwargs or {}))


class ProductCounter:
    """Context manager: the matrix products (``mm``, ``addmm``, ``bmm``, ``baddbmm``) run inside it.

    After the block: :attr:`shapes` (``(op, batch, m, k, n) -> calls``), :attr:`layouts` (``(batch, m, k,
    n, layout_a, layout_b, dtype) -> calls``), :attr:`calls` (their number),
    :attr:`flops` (torch's ``FlopCounterMode`` total, every operator it knows) and
    :attr:`product_flops` (its matrix-product part), :attr:`shape_flops` (``2 batch m k n`` summed
    over the recorded calls: equal to :attr:`product_flops`, a check of both counters).
    """

    def __init__(self) -> None:
        self.shapes: Counter = Counter()
        self.layouts: Counter = Counter()
        self.flops = 0
        self.product_flops = 0
        self._modes: list[Any] = []

    def __enter__(self) -> ProductCounter:
        self.shapes.clear()
        self.layouts.clear()
        self._modes = [FlopCounterMode(display=False), _Recorder(self.shapes, self.layouts)]
        for m in self._modes:
            m.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        flop_mode = self._modes[0]
        for m in reversed(self._modes):
            m.__exit__(*exc)
        counts = flop_mode.get_flop_counts().get("Global", {})
        self.flops = int(flop_mode.get_total_flops())
        self.product_flops = int(sum(v for op, v in counts.items() if op in MATRIX_PRODUCT_OPS or
                                     getattr(op, "default", None) in MATRIX_PRODUCT_OPS))
        self._modes = []

    @property
    def calls(self) -> int:
        return sum(self.shapes.values())

    @property
    def shape_flops(self) -> int:
        return sum(2 * b * m * k * n * c for (_, b, m, k, n), c in self.shapes.items())

    def products(self, unit: tuple[int, int, int]) -> float:
        """The recorded products' FLOPs in units of one ``m x k @ k x n`` product (``unit = (m, k, n)``)."""
        m, k, n = unit
        return self.shape_flops / (2 * m * k * n)
