"""Estimators of the DO-EM / CD gradient's two phases, composed by :class:`qidbm.lightning.BoltzmannModule`.

Positive phases (:mod:`qidbm.estimators.positive`): :class:`ClampedGibbs`, :class:`MeanField`,
:class:`ClampedLocalMode`. Negative phases (:mod:`qidbm.estimators.negative`): :class:`FromData`,
:class:`FromNoise`, :class:`Persistent`, :class:`TemperedPersistent`, :class:`Mixture`,
:class:`TaniguchiChains`. A new estimator subclasses :class:`NegativePhase` or :class:`PositivePhase`
(:mod:`qidbm.estimators.base`) in a file of its own; nothing else changes (docs/architecture.md).
"""

from qidbm.estimators.base import NegativePhase, PositivePhase, build, to_config
from qidbm.estimators.negative import FromData, FromNoise, Mixture, Persistent, TaniguchiChains, TemperedPersistent
from qidbm.estimators.positive import ClampedGibbs, ClampedLocalMode, MeanField

__all__ = [
    "ClampedGibbs", "ClampedLocalMode", "FromData", "FromNoise", "MeanField", "Mixture", "NegativePhase",
    "Persistent", "PositivePhase", "TaniguchiChains", "TemperedPersistent", "build", "to_config",
]
