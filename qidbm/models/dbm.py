"""Deep Boltzmann machines: DBM and QiDBM (docs/maths.md, 'Models')."""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

from qidbm.models.base import BoltzmannMachine, check_quantum_layers


class DBM(BoltzmannMachine):
    """Binary DBM ``E(x) = -sum_l c_l.x_l - sum_l x_l^T W_l x_{l+1}``; layer 0 is visible.

    Parameters: ``weights[k]`` [layer_sizes[k], layer_sizes[k+1]], ``biases[l]`` [layer_sizes[l]].
    Initial weights: ``weight_init="normal"``, i.i.d. N(0, weight_std^2); ``"orthogonal"``, a random
    matrix with orthonormal columns (rows if it is wider than tall), ``W^T W = I``, as Taniguchi et
    al. 2023 start their DBMs (``weight_std`` is then unused); biases 0.
    """

    def __init__(
        self, layer_sizes: Sequence[int], weight_std: float = 0.01, weight_init: Literal["normal", "orthogonal"] = "normal"
    ) -> None:
        super().__init__()
        sizes = tuple(int(n) for n in layer_sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise ValueError(f"layer_sizes needs a visible and at least one hidden layer of positive size, got {list(layer_sizes)}")
        if weight_init not in ("normal", "orthogonal"):
            raise ValueError(f"weight_init must be 'normal' or 'orthogonal', got {weight_init!r}")
        self.layer_sizes = sizes
        self._init_args: dict = {"layer_sizes": list(sizes), "weight_std": float(weight_std)}
        if weight_init != "normal":  # older checkpoints have no key: they were all "normal"
            self._init_args["weight_init"] = weight_init
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(a, b) * weight_std) for a, b in zip(sizes, sizes[1:])]
        )
        if weight_init == "orthogonal":
            for w in self.weights:
                nn.init.orthogonal_(w)
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(n)) for n in sizes])

    def layer_weight(self, k: int) -> Tensor:
        return self.weights[k]

    def layer_bias(self, l: int) -> Tensor:
        return self.biases[l]

    def config(self) -> dict:
        return dict(self._init_args)


class QiDBM(DBM):
    """Quantum-interleaved DBM: the hidden layers in ``quantum_layers`` are qubits with a
    transverse field ``Gamma = |transverse_fields[str(l)]|`` (plus, with ``coupled_field``,
    ``sum_nb x_nb^T transverse_weights[f"{l}_{nb}"]`` over both neighbour layers).

    No two quantum layers may be adjacent and the visible layer is classical.
    """

    def __init__(
        self,
        layer_sizes: Sequence[int],
        quantum_layers: Sequence[int] = (1,),
        weight_std: float = 0.01,
        transverse_field_init: float = 1.0,
        coupled_field: bool = False,
        weight_init: Literal["normal", "orthogonal"] = "normal",
    ) -> None:
        super().__init__(layer_sizes, weight_std, weight_init)
        q = check_quantum_layers(len(self.layer_sizes), quantum_layers)
        if not q:
            raise ValueError("QiDBM needs at least one quantum layer; use DBM for a classical model")
        self.quantum_layers = q
        self._init_args.update(
            quantum_layers=list(q), transverse_field_init=float(transverse_field_init), coupled_field=bool(coupled_field)
        )
        self.transverse_fields = nn.ParameterDict(
            {str(l): nn.Parameter(torch.full((self.layer_sizes[l],), float(transverse_field_init))) for l in q}
        )
        if coupled_field:
            self.transverse_weights = nn.ParameterDict(
                {
                    f"{l}_{nb}": nn.Parameter(torch.zeros(self.layer_sizes[nb], self.layer_sizes[l]))
                    for l in q
                    for nb in (l - 1, l + 1)
                    if nb < len(self.layer_sizes)
                }
            )

    def transverse_parameter(self, l: int) -> Tensor:
        return self.transverse_fields[str(l)]

    def transverse_coupling(self, l: int, neighbour: int) -> Tensor | None:
        tw = getattr(self, "transverse_weights", None)
        return None if tw is None else tw[f"{l}_{neighbour}"]
