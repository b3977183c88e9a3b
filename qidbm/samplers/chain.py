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
    """Acceptance of the Metropolis step per quantum layer, for one chain set.

    ``accept_sum[l]`` (a float64 device tensor: no host synchronisation while sampling) counts the
    accepted proposals whose weight involved quantum layer l, ``accept_count[l]`` the proposals.
    Kernels without a Metropolis step leave both empty.
    """

    accept_sum: dict[int, Tensor] = field(default_factory=dict)
    accept_count: dict[int, int] = field(default_factory=dict)

    def record(self, layers: Iterable[int], accepted: Tensor) -> None:
        """Add one Metropolis step's per-chain outcomes (``accepted``: bool ``[B]``) for ``layers``."""
        s = accepted.to(torch.float64).sum()
        for l in layers:
            self.accept_sum[l] = self.accept_sum.get(l, 0) + s
            self.accept_count[l] = self.accept_count.get(l, 0) + accepted.numel()

    def merge(self, other: ChainStats) -> ChainStats:
        """Add ``other``'s counts to these (in place) and return self."""
        for l, s in other.accept_sum.items():
            self.accept_sum[l] = self.accept_sum.get(l, 0) + s
            self.accept_count[l] = self.accept_count.get(l, 0) + other.accept_count[l]
        return self

    def acceptance(self) -> dict[int, Tensor]:
        """Mean acceptance rate per quantum layer (empty when no Metropolis step ran)."""
        return {l: self.accept_sum[l] / self.accept_count[l] for l in self.accept_sum}
