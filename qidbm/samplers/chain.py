"""Chain statistics and the 0/1 draw every kernel uses.

A chain state is a :data:`qidbm.models.State` (one ``[B, n_l]`` tensor per layer). Kernels return
it together with a :class:`ChainStats` that covers exactly the chains of that call, so two chain
sets run by the same kernel (a clamped positive chain and the negative chains) never mix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor


def bernoulli(p: Tensor, generator: torch.Generator | None) -> Tensor:
    """0/1 draws with probabilities p (same dtype as p)."""
    return (torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype) < p).to(p.dtype)


@dataclass
class ChainStats:
    """Acceptance of the Metropolis step per quantum layer, and of replica swaps per pair, for one chain set.

    ``accept_sum[l]`` (a float64 device tensor: no host synchronisation while sampling) counts the
    accepted proposals whose weight involved quantum layer l, ``accept_count[l]`` the proposals.
    Kernels without a Metropolis step leave both empty.
    """

    accept_sum: dict[int, Tensor] = field(default_factory=dict)
    accept_count: dict[int, int] = field(default_factory=dict)
    #: replica exchange (:mod:`qidbm.samplers.tempering`): accepted and offered swaps per pair (k, k+1)
    swap_sum: dict[int, Tensor] = field(default_factory=dict)
    swap_count: dict[int, int] = field(default_factory=dict)

    def record(self, layers: Iterable[int], accepted: Tensor) -> None:
        """Add one Metropolis step's per-chain outcomes (``accepted``: bool ``[B]``) for ``layers``."""
        s = accepted.to(torch.float64).sum()
        for l in layers:
            self.accept_sum[l] = self.accept_sum.get(l, 0) + s
            self.accept_count[l] = self.accept_count.get(l, 0) + accepted.numel()

    def record_swaps(self, pair: int, accepted: Tensor) -> None:
        """Add one round of swap outcomes (bool ``[B]``) between replicas ``pair`` and ``pair + 1``."""
        self.swap_sum[pair] = self.swap_sum.get(pair, 0) + accepted.to(torch.float64).sum()
        self.swap_count[pair] = self.swap_count.get(pair, 0) + accepted.numel()

    def merge(self, other: ChainStats) -> ChainStats:
        """Add ``other``'s counts to these (in place) and return self."""
        for mine_sum, mine_count, theirs_sum, theirs_count in (
            (self.accept_sum, self.accept_count, other.accept_sum, other.accept_count),
            (self.swap_sum, self.swap_count, other.swap_sum, other.swap_count),
        ):
            for l, s in theirs_sum.items():
                mine_sum[l] = mine_sum.get(l, 0) + s
                mine_count[l] = mine_count.get(l, 0) + theirs_count[l]
        return self

    def acceptance(self) -> dict[int, Tensor]:
        """Mean acceptance rate per quantum layer (empty when no Metropolis step ran)."""
        return {l: self.accept_sum[l] / self.accept_count[l] for l in self.accept_sum}

    def swap_rates(self) -> dict[int, Tensor]:
        """Swap acceptance rate per replica pair (k, k+1) (empty without replica exchange)."""
        return {k: self.swap_sum[k] / self.swap_count[k] for k in sorted(self.swap_sum)}
