"""Single-hidden-layer models: RBM, QRBM, GRBM, QGRBM (docs/maths.md, 'Models')."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from qidbm.models.base import BoltzmannMachine


class _OneHiddenLayer(BoltzmannMachine):
    """Visible layer (binary or Gaussian) and one hidden layer (classical or quantum)."""

    _quantum = False

    def __init__(
        self,
        n_visible: int,
        n_hidden: int,
        weight_std: float = 0.01,
        transverse_field_init: float = 1.0,
        coupled_field: bool = False,
        learn_variance: bool = True,
    ) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"n_visible and n_hidden must be positive, got {n_visible} and {n_hidden}")
        self.layer_sizes = (int(n_visible), int(n_hidden))
        self.quantum_layers = (1,) if self._quantum else ()
        self._init_args = {"n_visible": int(n_visible), "n_hidden": int(n_hidden), "weight_std": float(weight_std)}
        self.weight = nn.Parameter(torch.randn(n_visible, n_hidden) * weight_std)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))
        if self.gaussian_visible:
            self.log_variance = nn.Parameter(torch.zeros(n_visible))
            if not learn_variance:
                # fixed s^2 (set from the data at the start of a fit): no gradient, no optimizer step
                self.log_variance.requires_grad_(False)
                self._init_args["learn_variance"] = False
        elif not learn_variance:
            raise ValueError("learn_variance=False needs Gaussian visible units: use GRBM or QGRBM")
        if self._quantum:
            self._init_args.update(transverse_field_init=float(transverse_field_init), coupled_field=bool(coupled_field))
            # Gamma = |transverse_field| (+ coupling): unconstrained, so every optimizer step is valid.
            self.transverse_field = nn.Parameter(torch.full((n_hidden,), float(transverse_field_init)))
            if coupled_field:
                # zero coupling: starts exactly as the uncoupled model
                self.transverse_weight = nn.Parameter(torch.zeros(n_visible, n_hidden))
        elif coupled_field:
            raise ValueError("coupled_field needs quantum hidden units: use QRBM or QGRBM")

    @property
    def n_hidden(self) -> int:
        return self.layer_sizes[1]

    def layer_weight(self, k: int) -> Tensor:
        return self.weight

    def layer_bias(self, l: int) -> Tensor:
        return self.visible_bias if l == 0 else self.hidden_bias

    def transverse_parameter(self, l: int) -> Tensor:
        return self.transverse_field

    def transverse_coupling(self, l: int, neighbour: int) -> Tensor | None:
        return getattr(self, "transverse_weight", None) if neighbour == 0 else None

    def config(self) -> dict:
        return dict(self._init_args)

    def free_energy(self, v: Tensor) -> Tensor:
        """Exact free energy, p(v) proportional to exp(-F(v)), for a batch [B, n_visible] -> [B].

        Binary visibles: ``F(v) = -a.v - sum_j L_j(phi_j)``; Gaussian visibles:
        ``F(v) = sum_i (v_i - mu_i)^2 / 2 s_i^2 - sum_j L_j(phi_j)``, where
        ``phi = b + W^T v`` (``W^T (v / s^2)`` for Gaussian units) and ``L_j`` is
        ``softplus`` for a classical hidden unit and ``u + log 2cosh r`` for a quantum one.
        """
        return self.marginal_free_energy([v, None], summed=(1,))

    def hidden_statistics(self, v: Tensor) -> dict[str, Tensor]:
        """Exact hidden statistics given v: ``<h>`` (P(h=1|v) or <n>) and, when quantum, ``<X>``."""
        if self.quantum_layers:
            return self.quantum_statistics(1, [v, None])
        return {"n": self.conditional(1, [v, None])[0]}


class RBM(_OneHiddenLayer):
    """Binary RBM: ``E(v, h) = -a.v - b.h - v^T W h``."""

    def __init__(self, n_visible: int, n_hidden: int, weight_std: float = 0.01) -> None:
        super().__init__(n_visible, n_hidden, weight_std)


class QRBM(_OneHiddenLayer):
    """RBM with quantum hidden units: ``H = -a.v - b.n - v^T W n - sum_j Gamma_j X_j``.

    ``Gamma_j = |transverse_field_j|`` (``|transverse_field_j + (v^T U)_j|`` with
    ``coupled_field=True``, U = ``transverse_weight`` [n_visible, n_hidden], initialised to 0).
    """

    _quantum = True


class GRBM(_OneHiddenLayer):
    """Gaussian-Bernoulli RBM (Liao et al. 2022): ``E = sum (v-mu)^2/2s^2 - (v/s^2)^T W h - b.h``,
    ``mu = visible_bias``, ``s^2 = exp(log_variance)`` (learned, or fixed with ``learn_variance=False``)."""

    gaussian_visible = True

    def __init__(self, n_visible: int, n_hidden: int, weight_std: float = 0.01, learn_variance: bool = True) -> None:
        super().__init__(n_visible, n_hidden, weight_std, learn_variance=learn_variance)


class QGRBM(_OneHiddenLayer):
    """Gaussian-Bernoulli RBM with quantum hidden units (transverse field as in :class:`QRBM`)."""

    gaussian_visible = True
    _quantum = True
