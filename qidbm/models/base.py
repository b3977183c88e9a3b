"""The layered Boltzmann machine every model here is a case of (docs/maths.md, 'Conventions' to 'Marginal free energy').

A model is a chain of layers x_0 (visible), x_1, ..., x_L with weights W_k between
x_k and x_{k+1} and a bias per layer. Hidden layers listed in ``quantum_layers``
are qubits: their value h_j is replaced by the number operator n_j and a
transverse field -Gamma_j X_j is added. No two quantum layers are adjacent and
the visible layer is classical, so the Hamiltonian is block diagonal in the
classical configuration and each quantum unit is one qubit in a field with the
closed forms of :mod:`qidbm.quantum`.

The visible layer is binary ({0, 1}) or Gaussian (Liao et al. 2022 convention:
``E = sum (v - mu)^2 / 2 s^2 - (v / s^2)^T W h - b.h``).

Chain states are lists of tensors, one ``[B, n_l]`` tensor per layer; a quantum
layer's entry is its last Z-basis outcome (0/1).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from qidbm.precision import layer_product
from qidbm.quantum import qubit_draw_prob, qubit_log_partition, qubit_prob_one, qubit_x_expectation, softplus

State = list[Tensor]


def check_quantum_layers(num_layers: int, quantum_layers: Iterable[int]) -> tuple[int, ...]:
    """Validate quantum layer indices: hidden (1..L), distinct and never adjacent."""
    q = tuple(sorted(set(int(l) for l in quantum_layers)))
    for l in q:
        if l == 0:
            raise ValueError(
                "quantum_layers contains 0, the visible layer: visible units are always classical "
                "(docs/maths.md, 'Conventions'). Use hidden-layer indices 1..L."
            )
        if not 1 <= l < num_layers:
            raise ValueError(
                f"quantum_layers contains {l}, but hidden layers are numbered 1..{num_layers - 1} "
                f"for {num_layers} layers (layer 0 is visible)."
            )
    for a, b in zip(q, q[1:]):
        if b == a + 1:
            raise ValueError(
                f"quantum layers {a} and {b} are adjacent: two quantum layers must be separated by a "
                "classical layer, otherwise the model has no closed form (docs/maths.md, 'Conventions'). "
                f"Make one of them classical, e.g. quantum_layers={[x for x in q if x != b]}."
            )
    return q


def check_density_range(density) -> tuple[float, float]:
    """``(lo, hi)`` with ``0 <= lo <= hi <= 1`` (the range of a noise start's density), or a ValueError."""
    try:
        lo, hi = (float(x) for x in density)
    except (TypeError, ValueError):
        raise ValueError(f"a start density range is two numbers lo, hi with 0 <= lo <= hi <= 1, got {density!r}") from None
    if not 0 <= lo <= hi <= 1:
        raise ValueError(f"a start density range needs 0 <= lo <= hi <= 1, got ({lo}, {hi})")
    return lo, hi


class BoltzmannMachine(nn.Module):
    """Base class: generic layer-wise maths shared by RBM, QRBM, GRBM, QGRBM, DBM and QiDBM.

    Subclasses register their parameters and implement :meth:`layer_weight`,
    :meth:`layer_bias` and :meth:`field` (the signed transverse field of a
    quantum layer, possibly coupled to the neighbours).
    """

    layer_sizes: tuple[int, ...]
    quantum_layers: tuple[int, ...] = ()
    gaussian_visible: bool = False

    # ------------------------------------------------------------------ structure
    @property
    def num_layers(self) -> int:
        return len(self.layer_sizes)

    @property
    def n_visible(self) -> int:
        return self.layer_sizes[0]

    @property
    def is_quantum(self) -> bool:
        return len(self.quantum_layers) > 0

    def layer_weight(self, k: int) -> Tensor:  # W_k: [n_k, n_{k+1}]
        raise NotImplementedError

    def layer_bias(self, l: int) -> Tensor:  # c_l: [n_l]
        raise NotImplementedError

    def transverse_parameter(self, l: int) -> Tensor:  # gamma_l: [n_l], Gamma = |gamma + coupling|
        raise NotImplementedError

    def transverse_coupling(self, l: int, neighbour: int) -> Tensor | None:  # U: [n_neighbour, n_l]
        return None

    def config(self) -> dict:
        """Constructor arguments, so that ``type(model)(**model.config())`` rebuilds it."""
        raise NotImplementedError

    def default_summed_layers(self) -> tuple[int, ...]:
        """Hidden layers summed out analytically in the training loss (Rao-Blackwellisation).

        Always contains the quantum layers; for a DBM with only odd (or only even)
        quantum layers it is that whole parity class, so a QiDBM and its classical
        twin use the same estimator.
        """
        L = self.num_layers
        q = set(self.quantum_layers)
        odd, even = set(range(1, L, 2)), set(range(2, L, 2))
        for cls in (odd, even):
            if cls and q <= cls:
                return tuple(sorted(cls))
        return tuple(sorted(q))

    # ------------------------------------------------------------------ pre-activations
    def visible_input(self, v: Tensor) -> Tensor:
        """What the visible layer sends through W_0: v, or v / s^2 for Gaussian units."""
        if self.gaussian_visible:
            return v * torch.exp(-self.log_variance)
        return v

    def _send(self, k: int, x: Tensor) -> Tensor:
        return self.visible_input(x) if k == 0 else x

    def input_from_below(self, l: int, states: State) -> Tensor:
        return layer_product(self._send(l - 1, states[l - 1]), self.layer_weight(l - 1))

    def input_from_above(self, l: int, states: State) -> Tensor:
        return layer_product(states[l + 1], self.layer_weight(l), transpose=True)

    def preactivation(self, l: int, states: State) -> Tensor:
        """phi_l = c_l + (input from x_{l-1}) + (input from x_{l+1}); for a Gaussian visible
        layer this is the conditional mean mu + W x_1."""
        phi = self.layer_bias(l)
        if l > 0:
            phi = phi + self.input_from_below(l, states)
        if l + 1 < self.num_layers:
            phi = phi + self.input_from_above(l, states)
        return phi

    def field(self, l: int, states: State) -> Tensor:
        """Signed transverse field of quantum layer l: gamma_l + sum over both neighbours of U x.

        The physical field is its absolute value; every closed form depends on Gamma^2 only.
        """
        g = self.transverse_parameter(l)
        for nb in (l - 1, l + 1):
            if 0 <= nb < self.num_layers:
                U = self.transverse_coupling(l, nb)
                if U is not None:
                    g = g + layer_product(self._send(nb, states[nb]), U)
        return g

    # ------------------------------------------------------------------ conditionals
    def conditional(self, l: int, states: State) -> tuple[Tensor, Tensor | None]:
        """Conditional of layer l given its neighbours' states.

        Returns ``(p, gamma)``: for a classical binary layer ``p = sigmoid(phi)`` and gamma None;
        for a quantum layer ``p = P(n = 1)`` (Z basis, closed form to the absolute accuracy of
        :func:`~qidbm.quantum.qubit_draw_prob`, what draws and mean-field updates need) and its signed field;
        for the Gaussian visible layer the conditional mean and None.
        """
        phi = self.preactivation(l, states)
        if l == 0 and self.gaussian_visible:
            return phi, None
        if l in self.quantum_layers:
            g = self.field(l, states)
            return qubit_draw_prob(phi, g), g
        return torch.sigmoid(phi), None

    def quantum_statistics(self, l: int, states: State) -> dict[str, Tensor]:
        """Exact single-qubit statistics of quantum layer l given its neighbours:
        ``<n>`` (= P(n=1), Z basis), ``<X>`` and ``P(X=+1)`` (X basis), the field."""
        phi = self.preactivation(l, states)
        g = self.field(l, states)
        x = qubit_x_expectation(phi, g)
        return {"n": qubit_prob_one(phi, g), "x": x, "p_x_plus": 0.5 * (1 + x), "gamma": g.abs(), "phi": phi}

    @property
    def visible_std(self) -> Tensor:
        return torch.exp(0.5 * self.log_variance)

    # ------------------------------------------------------------------ energies
    def marginal_free_energy(self, states: State, summed: Sequence[int] | None = None) -> Tensor:
        """F_C of docs/maths.md, 'Marginal free energy': the energy of the classical layers not in ``summed`` with
        the layers in ``summed`` traced out exactly (softplus for classical layers, the qubit
        closed form for quantum ones). ``p(x_C)`` is proportional to ``exp(-F_C(x_C))``.

        ``summed`` must contain every quantum layer, no visible layer and no two adjacent
        layers; entries of ``states`` for summed layers are ignored. Returns ``[B]``.
        """
        summed = tuple(self.default_summed_layers() if summed is None else sorted(set(summed)))
        self._check_summed(summed)
        return self._free_energy(states, set(summed))

    def marginal_free_energy_and_fields(
        self, states: State, summed: Sequence[int] | None = None
    ) -> tuple[Tensor, dict[int, tuple[Tensor, Tensor | None]]]:
        """:meth:`marginal_free_energy` and, for every summed layer l, the ``(phi_l, gamma_l)``
        it traced out (gamma None for classical layers), on the same autograd graph.

        ``sigmoid(phi_l)`` / ``P(n = 1 | phi_l, gamma_l)`` is then layer l's conditional given
        ``states``: training reuses it to draw the next state of the persistent chains.
        """
        summed = tuple(self.default_summed_layers() if summed is None else sorted(set(summed)))
        self._check_summed(summed)
        fields: dict[int, tuple[Tensor, Tensor | None]] = {}
        return self._free_energy(states, set(summed), fields), fields

    def _free_energy(self, states: State, s: set[int], fields: dict | None = None) -> Tensor:
        v = states[0]
        if self.gaussian_visible:
            var = torch.exp(self.log_variance)
            f = ((v - self.layer_bias(0)) ** 2 / (2 * var)).sum(-1)
        else:
            f = -(v @ self.layer_bias(0))
        for l in range(1, self.num_layers):
            if l in s:
                phi = self.preactivation(l, states)
                g = self.field(l, states) if l in self.quantum_layers else None
                if fields is not None:
                    fields[l] = (phi, g)
                if g is not None:
                    f = f - qubit_log_partition(phi, g).sum(-1)
                else:
                    f = f - softplus(phi).sum(-1)
            else:
                f = f - states[l] @ self.layer_bias(l)
        for k in range(self.num_layers - 1):
            if k not in s and k + 1 not in s:
                f = f - (layer_product(self._send(k, states[k]), self.layer_weight(k)) * states[k + 1]).sum(-1)
        return f

    def _check_summed(self, summed: Sequence[int]) -> None:
        s = set(summed)
        missing = set(self.quantum_layers) - s
        if missing:
            raise ValueError(f"quantum layers {sorted(missing)} must be summed out (they have no classical value)")
        if 0 in s:
            raise ValueError("the visible layer cannot be summed out")
        for l in s:
            if l + 1 in s:
                raise ValueError(f"cannot sum out adjacent layers {l} and {l + 1} analytically")

    def energy(self, states: State) -> Tensor:
        """Classical energy E(x) of full configurations (quantum layers at their Z value, the
        transverse term left out: the classical twin's energy). ``[B]``."""
        return self._free_energy(states, set())

    # ------------------------------------------------------------------ sampling conveniences
    def random_state(self, batch_size: int, generator: torch.Generator | None = None,
                     visible_density: tuple[float, float] | None = None) -> State:
        """Uniform random binary layers (standard normal around mu for a Gaussian visible layer).

        ``visible_density=(lo, hi)``: binary visible units start ``Bernoulli(q)`` with one
        ``q ~ U(lo, hi)`` per chain instead of ``q = 1/2``, so the starts' ink varies across chains
        (a short chain keeps some memory of its start's density: sparse starts reach thin digits).
        """
        p = self.layer_bias(0)
        dev, dt = p.device, p.dtype
        if visible_density is not None:
            check_density_range(visible_density)
            if self.gaussian_visible:
                raise ValueError("visible_density sets the start density of binary visible units; "
                                 f"{type(self).__name__} has Gaussian visible units (leave it unset)")
        out = []
        for l, n in enumerate(self.layer_sizes):
            if l == 0 and self.gaussian_visible:
                z = torch.randn(batch_size, n, generator=generator, device=dev, dtype=dt)
                out.append(self.layer_bias(0).detach() + z * self.visible_std.detach())
            elif l == 0 and visible_density is not None:
                lo, hi = visible_density
                # one density for all chains needs no draw (so (0.5, 0.5) is the default stream exactly)
                q = lo if lo == hi else lo + (hi - lo) * torch.rand(batch_size, 1, generator=generator, device=dev, dtype=dt)
                out.append((torch.rand(batch_size, n, generator=generator, device=dev, dtype=dt) < q).to(dt))
            else:
                out.append((torch.rand(batch_size, n, generator=generator, device=dev, dtype=dt) < 0.5).to(dt))
        return out

    @torch.no_grad()
    def mean_field(self, v: Tensor, num_iters: int = 10, clamp_visible: bool = True) -> State:
        """Mean-field fixed point of the hidden layers given v (damped-free block iteration).

        Quantum layers use their exact <n>; returns means (floats in [0, 1]) per layer.
        """
        states: State = [v] + [
            torch.full((v.shape[0], n), 0.5, device=v.device, dtype=v.dtype) for n in self.layer_sizes[1:]
        ]
        for _ in range(num_iters):
            for parity in (1, 0):
                for l in range(parity, self.num_layers, 2):
                    if l == 0 and clamp_visible:
                        continue
                    states[l] = self.conditional(l, states)[0]
        return states

    @torch.no_grad()
    def local_mode(self, v: Tensor, num_iters: int = 50, clamp_visible: bool = False) -> State:
        """A local mode of the joint distribution reached from the data (Taniguchi et al. 2023).

        Starts from the mean-field fixed point given v, then iterates deterministic block
        coordinate ascent x_l <- 1[p(x_l = 1 | neighbours) > 1/2] (the conditional mean for
        Gaussian visibles) until no unit changes or ``num_iters`` is reached.
        """
        states = [x.round() if l > 0 else x for l, x in enumerate(self.mean_field(v, num_iters=5))]
        if not self.gaussian_visible:
            states[0] = v.clone()
        # Past a fixed point the iteration changes nothing, so checking for one only every few
        # iterations gives the same state: on an accelerator every check is a host sync
        # (at most num_iters / 5 per call instead of num_iters); on the CPU checks are free.
        check_every = 1 if v.device.type == "cpu" else 5
        changed = torch.zeros((), dtype=torch.bool, device=v.device)
        for it in range(num_iters):
            for parity in (1, 0):
                for l in range(parity, self.num_layers, 2):
                    if l == 0 and clamp_visible:
                        continue
                    p = self.conditional(l, states)[0]
                    new = p if (l == 0 and self.gaussian_visible) else (p > 0.5).to(v.dtype)
                    changed |= (new != states[l]).any()
                    states[l] = new
            if (it + 1) % check_every == 0 or it + 1 == num_iters:
                if not bool(changed):
                    break
                changed = torch.zeros((), dtype=torch.bool, device=v.device)
        return states

    def extra_repr(self) -> str:
        q = f", quantum_layers={list(self.quantum_layers)}" if self.quantum_layers else ""
        g = ", gaussian_visible=True" if self.gaussian_visible else ""
        return f"layer_sizes={list(self.layer_sizes)}{q}{g}"
