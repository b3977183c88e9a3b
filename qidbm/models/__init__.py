"""Boltzmann machines as plain ``torch.nn.Module``s (docs/maths.md, 'Models')."""

from qidbm.models.base import BoltzmannMachine, State, check_quantum_layers
from qidbm.models.dbm import DBM, QiDBM
from qidbm.models.rbm import GRBM, QGRBM, QRBM, RBM

MODEL_CLASSES = {c.__name__: c for c in (RBM, QRBM, GRBM, QGRBM, DBM, QiDBM)}


def build_model(name: str, config: dict) -> BoltzmannMachine:
    """Rebuild a model from its class name and :meth:`BoltzmannMachine.config`."""
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model class {name!r}; known: {sorted(MODEL_CLASSES)}")
    return MODEL_CLASSES[name](**config)


__all__ = ["BoltzmannMachine", "State", "RBM", "QRBM", "GRBM", "QGRBM", "DBM", "QiDBM", "MODEL_CLASSES", "build_model", "check_quantum_layers"]
