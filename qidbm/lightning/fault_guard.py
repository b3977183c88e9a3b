"""Numerical-fault guard: NaN/Inf in the loss, the parameters or the chains stops or rolls back a fit.

:class:`FaultGuard` checks the loss, every parameter and the persistent chains for NaN/Inf after each
optimizer step and, at the step where a fault first appears, either raises :class:`NumericalFaultError`
naming the tensor and the step (``on_fault="raise"``) or restores the last good state (parameters,
optimizer state, chains, sampling generator) and goes on (``on_fault="restore"``). ``qidbm fit`` installs
``FaultGuard()`` by default.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Optional

import lightning as L
import torch
from torch import Tensor

__all__ = ["FaultGuard", "NumericalFaultError"]


class NumericalFaultError(FloatingPointError):
    """A NaN/Inf appeared in training: ``.tensor`` names it, ``.step`` is the global step."""

    def __init__(self, message: str, tensor: str, step: int) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.step = step


def _negative_of(pl_module):
    """The negative estimator of a :class:`~qidbm.lightning.BoltzmannModule` (it owns the persistent
    chains), or None for other modules."""
    from qidbm.estimators import NegativePhase

    negative = getattr(pl_module, "negative", None)
    return negative if isinstance(negative, NegativePhase) else None


def _generator_of(pl_module) -> torch.Generator | None:
    """The module's chain generator (a BoltzmannModule makes it on first use), or None."""
    if _negative_of(pl_module) is None:
        return None
    gen = getattr(pl_module, "generator", None)
    return gen if isinstance(gen, torch.Generator) else None


def _chains_of(pl_module) -> list[tuple[str, Tensor]]:
    negative = _negative_of(pl_module)
    chains = None if negative is None else negative.chains
    if not chains:
        return []
    return [(f"persistent chains (layer {l})", c) for l, c in enumerate(chains) if isinstance(c, Tensor)]


class FaultGuard(L.Callback):
    """Detect NaN/Inf in the loss, the parameters and the persistent chains.

    After every optimizer step (``on_train_batch_end``) the guard reduces each watched tensor to
    one "all finite" flag. Where the first non-finite tensor appears it either raises
    :class:`NumericalFaultError` naming the tensor and the global step of the batch that produced
    it (``on_fault="raise"``, the default) or (``on_fault="restore"``) copies back the last good
    state -- parameters, optimizer state, persistent chains and the sampling generator -- optionally
    scales the learning rates by ``restore_lr_factor``, and goes on; after ``max_restores``
    restores it raises instead (a run that keeps diverging needs a smaller learning rate).

    Host synchronisation: a Python ``bool`` of a device tensor waits for the device. On CPU that
    is free, so ``check_every_n_steps`` defaults to 1 there. On an accelerator the default is 50:
    the flags of the steps in between are folded on the device into ``first_bad_step`` (the
    global step at which a tensor first became non-finite) and ``first_bad_index`` (which tensor),
    so the report still names the exact step, and only one ``.item()`` per interval reaches the
    host. With ``on_fault="restore"`` on an accelerator the good-state snapshot is taken at the
    checks, so a restore goes back at most ``check_every_n_steps`` steps. In DDP the flag is
    all-reduced at each check so that every rank raises or restores together.

    Args:
        on_fault: ``"raise"`` or ``"restore"``.
        check_every_n_steps: host-sync interval (``None``: 1 on CPU, 50 on accelerators).
        check_parameters, check_chains: which tensors to watch (the loss always is).
        max_restores: restores allowed per fit before raising.
        restore_lr_factor: multiply every learning rate by this after a restore (1.0 keeps it).
    """

    def __init__(
        self,
        on_fault: Literal["raise", "restore"] = "raise",
        check_every_n_steps: Optional[int] = None,
        check_parameters: bool = True,
        check_chains: bool = True,
        max_restores: int = 3,
        restore_lr_factor: float = 1.0,
    ) -> None:
        if on_fault not in ("raise", "restore"):
            raise ValueError(f"on_fault must be 'raise' or 'restore', got {on_fault!r}")
        if check_every_n_steps is not None and check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1 (or null for the device default), got {check_every_n_steps}")
        if max_restores < 0:
            raise ValueError(f"max_restores must be >= 0, got {max_restores}")
        if not (restore_lr_factor > 0 and math.isfinite(restore_lr_factor)):
            raise ValueError(f"restore_lr_factor must be a positive number, got {restore_lr_factor}")
        self.on_fault = on_fault
        self.check_every_n_steps = check_every_n_steps
        self.check_parameters = check_parameters
        self.check_chains = check_chains
        self.max_restores = max_restores
        self.restore_lr_factor = restore_lr_factor
        self.restores: list[dict[str, Any]] = []  # one record per restore: step, tensor
        self._names: list[str] | None = None
        self._first_bad_step: Tensor | None = None
        self._first_bad_index: Tensor | None = None
        self._step = 0
        self._snapshot: dict[str, Any] | None = None
        self._interval = 1

    # ---------------------------------------------------------------- helpers
    def _watched(self, pl_module, loss: Tensor | None) -> list[tuple[str, Tensor]]:
        out: list[tuple[str, Tensor]] = []
        if loss is not None:
            out.append(("loss", loss.detach()))
        if self.check_parameters:
            out += [(f"parameter {n!r}", p.detach()) for n, p in pl_module.named_parameters()]
        if self.check_chains:
            out += _chains_of(pl_module)
        return out

    def _reset_flags(self, device) -> None:
        self._first_bad_step = torch.full((), -1, dtype=torch.long, device=device)
        self._first_bad_index = torch.full((), -1, dtype=torch.long, device=device)

    @torch.no_grad()
    def _take_snapshot(self, trainer: L.Trainer, pl_module, before_step: int) -> None:
        # clones stay on the device: the copy is a device memcpy, no host round trip
        gen = _generator_of(pl_module)
        negative = _negative_of(pl_module)
        chains = None if negative is None else negative.chains
        self._snapshot = {
            "step": before_step,  # the state that enters this global step
            "params": [p.detach().clone() for p in pl_module.parameters()],
            "buffers": [b.detach().clone() for b in pl_module.buffers()],
            "optimizers": [_clone_state(opt.state_dict()) for opt in trainer.optimizers],
            "chains": None if chains is None else [None if c is None else c.detach().clone() for c in chains],
            "generator": None if gen is None else gen.get_state(),
        }

    @torch.no_grad()
    def _restore(self, trainer: L.Trainer, pl_module) -> None:
        s = self._snapshot
        for p, q in zip(pl_module.parameters(), s["params"]):
            p.copy_(q)
        for b, q in zip(pl_module.buffers(), s["buffers"]):
            b.copy_(q)
        for opt, st in zip(trainer.optimizers, s["optimizers"]):
            opt.load_state_dict(_clone_state(st))
            if self.restore_lr_factor != 1.0:
                for g in opt.param_groups:
                    g["lr"] = g["lr"] * self.restore_lr_factor
        if s["chains"] is not None:
            _negative_of(pl_module).chains = [None if c is None else c.clone() for c in s["chains"]]
        gen = _generator_of(pl_module)
        if s["generator"] is not None and gen is not None:
            gen.set_state(s["generator"])

    # ---------------------------------------------------------------- hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        n = self.check_every_n_steps
        self._interval = n if n is not None else (1 if pl_module.device.type == "cpu" else 50)
        self._reset_flags(pl_module.device)
        self._snapshot = None
        self._names = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step
        if self.on_fault == "restore" and self._snapshot is None:
            # the state before the first step of this fit (fresh or resumed) is the first good one
            self._take_snapshot(trainer, pl_module, before_step=self._step)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs if isinstance(outputs, Tensor) else None
        watched = self._watched(pl_module, loss)
        if not watched:
            return
        self._names = [n for n, _ in watched]
        # one fused reduction per tensor, stacked: no host sync here
        ok = torch.stack([torch.isfinite(t).all() for _, t in watched])
        bad_any = ~ok.all()
        first_idx = torch.argmin(ok.to(torch.int8))  # the first False (0 when all finite; masked below)
        new = bad_any & (self._first_bad_step < 0)
        self._first_bad_step = torch.where(new, torch.full_like(self._first_bad_step, self._step), self._first_bad_step)
        self._first_bad_index = torch.where(new, first_idx.to(torch.long), self._first_bad_index)
        if (self._step + 1) % self._interval != 0:
            return
        self._check(trainer, pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        # flush the last partial interval before epoch-end callbacks (checkpoints, FID) run
        if self._first_bad_step is not None:
            self._check(trainer, pl_module)

    @torch.no_grad()
    def on_save_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        # a checkpoint may be written between two checks (check_every_n_steps > 1): check now so
        # that a non-finite state is never written (as last.ckpt or as a "best" model)
        if self._first_bad_step is None or not trainer.training:
            return
        restores = len(self.restores)
        self._check(trainer, pl_module)
        if len(self.restores) > restores:
            # restored in the middle of the save: put the restored state into the checkpoint
            checkpoint["state_dict"] = trainer.strategy.lightning_module_state_dict()
            if "optimizer_states" in checkpoint:
                checkpoint["optimizer_states"] = [trainer.strategy.optimizer_state(o) for o in trainer.optimizers]

    def _check(self, trainer: L.Trainer, pl_module) -> None:
        local_bad = self._first_bad_step >= 0
        bad = bool(local_bad)  # the one host sync per interval
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            if self.on_fault == "restore":
                self._take_snapshot(trainer, pl_module, before_step=self._step + 1)
            return
        step = int(self._first_bad_step) if bool(local_bad) else -1
        idx = int(self._first_bad_index) if bool(local_bad) else -1
        names = self._names or []
        what = names[idx] if 0 <= idx < len(names) else "a tensor on another DDP rank"
        where = f"at global step {step}" if step >= 0 else f"by global step {self._step}"
        if self.on_fault == "restore" and self._snapshot is not None and len(self.restores) < self.max_restores:
            self.restores.append({"step": step, "tensor": what, "restored_to_step": self._snapshot["step"]})
            self._restore(trainer, pl_module)
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"FaultGuard: {what} became NaN/Inf {where}; restored the state from before global step "
                f"{self._snapshot['step']} (parameters, optimizer, chains, generator) and going on "
                f"({len(self.restores)}/{self.max_restores} restores)"
            )
            self._reset_flags(pl_module.device)
            return
        extra = ""
        if self.on_fault == "restore":
            extra = f" after {len(self.restores)} restores (max_restores={self.max_restores})"
        raise NumericalFaultError(
            f"numerical fault: {what} became NaN/Inf {where} (epoch {trainer.current_epoch}){extra}. "
            "Lower the learning rate (model.init_args.optimizer.init_args.lr), clip gradients "
            "(trainer.gradient_clip_val), check the data, or train with FaultGuard(on_fault='restore') "
            "to roll back to the last good state and go on; resume from the last good checkpoint with "
            "--ckpt_path last",
            tensor=what,
            step=step,
        )

    def state_dict(self) -> dict[str, Any]:
        return {"restores": list(self.restores)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.restores = list(state_dict.get("restores", []))


def _clone_state(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: _clone_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_clone_state(v) for v in obj)
    return obj
