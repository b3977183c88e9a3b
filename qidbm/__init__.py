"""qidbm: quantum-infused Boltzmann machines trained by DO-EM.

The Python API (:mod:`qidbm.api`, docs/api.md)::

    m = qidbm.load("checkpoints/dbm_mnist_binary.ckpt")  # the machine, its data info and default sampling
    images = qidbm.sample(m, 64, seed=0)                 # [64, 1, 28, 28] in [0, 1], as `qidbm sample`
    scores = qidbm.evaluate(m, preset="quick")           # FID, class coverage, AIS log-likelihood

Models (``qidbm.models``): RBM, QRBM, GRBM, QGRBM, DBM, QiDBM; closed forms in
``qidbm.quantum``; samplers in ``qidbm.samplers``; Lightning training in
``qidbm.lightning``; data modules in ``qidbm.data``.

The names below are imported on first use (PEP 562), so ``import qidbm.cli`` does not import
torch: the ``qidbm`` command sets up the allocator (:mod:`qidbm.allocator`) before torch loads.

The commands ``qidbm sample`` / ``qidbm evaluate`` live in :mod:`qidbm.commands`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time the names load on first use
    from qidbm.api import Loaded, evaluate, load, sample
    from qidbm.checkpoint import load_checkpoint
    from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM

__version__ = "0.1.0"
__all__ = ["RBM", "QRBM", "GRBM", "QGRBM", "DBM", "QiDBM", "load", "sample", "evaluate", "Loaded", "load_checkpoint",
           "__version__"]

_LAZY = {"load_checkpoint": "qidbm.checkpoint", **{name: "qidbm.models" for name in __all__[:6]},
         **{name: "qidbm.api" for name in ("load", "sample", "evaluate", "Loaded")}}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    try:  # a subpackage (``qidbm.models`` after a bare ``import qidbm``), as before the names were lazy
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as e:
        if e.name != f"{__name__}.{name}":
            raise
    raise AttributeError(f"module 'qidbm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

