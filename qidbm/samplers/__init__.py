"""Samplers: separate objects with one interface, ``run(model, state, num_steps, clamped, generator)``."""

from qidbm.samplers.gibbs import GibbsSampler, bernoulli

__all__ = ["GibbsSampler", "bernoulli"]
