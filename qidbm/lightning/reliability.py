"""Reliability: atomic checkpoints, numerical-fault guard, first-batch input checks.

* :class:`AtomicCheckpointIO` -- a Lightning ``CheckpointIO`` plugin that writes every
  checkpoint to a temporary file in the target folder, fsyncs it and ``os.replace``-s it onto the
  target, so a job killed during a save leaves the previous ``last.ckpt`` intact (POSIX rename is
  atomic within one file system). ``qidbm fit`` installs it by default.
* :class:`FaultGuard` -- a callback that checks the loss, every parameter and the persistent
  chains for NaN/Inf after each optimizer step and, at the step where a fault first appears,
  either raises :class:`NumericalFaultError` naming the tensor and the step (``on_fault="raise"``)
  or restores the last good state (parameters, optimizer state, chains, sampling generator) and
  goes on (``on_fault="restore"``). ``qidbm fit`` installs ``FaultGuard()`` by default.
* :class:`MidEpochResume` -- a callback that makes a resume from a mid-epoch checkpoint see the
  same batches as the uninterrupted run (Lightning restores the batch index but restarts a plain
  ``DataLoader`` from its first batch). ``qidbm fit`` installs it by default.
* :func:`validate_batch_for_model` -- the cheap check the training module runs on the first batch
  of a fit: shape, dtype, finiteness and range/encoding against the model's visible units.
* :class:`FinalCheckpoint` -- writes ``last.ckpt`` at the step where a fit stops: at its end when the
  last periodic save was earlier (``max_steps``, ``max_time``, early stopping), and on SIGTERM (what
  schedulers and ``timeout`` send), after which ``qidbm fit`` exits with status 143. ``qidbm fit``
  installs it by default.
* :class:`RunLock` -- one ``qidbm fit`` at a time per run folder (log folder, checkpoint and sample
  folders): a second run into the same folders stops with :class:`RunFolderInUseError` before it
  writes anything. ``qidbm fit`` installs it by default.
* :func:`check_module_arguments`, :func:`check_resume_matches`,
  :func:`apply_changed_settings_on_resume` -- the training module's checks of its arguments and of a
  resume (other layer sizes or data are errors; a changed learning rate is applied and reported).
"""

from __future__ import annotations

import errno
import itertools
import json
import math
import os
import socket
import sys
import tempfile
import time
from typing import Any, Callable, Literal, Optional

try:  # POSIX advisory locks (RunLock); elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor

__all__ = [
    "AtomicCheckpointIO",
    "FaultGuard",
    "FinalCheckpoint",
    "MidEpochResume",
    "NumericalFaultError",
    "RunFolderInUseError",
    "RunLock",
    "apply_changed_settings_on_resume",
    "atomic_torch_save",
    "check_module_arguments",
    "check_resume_matches",
    "optimizer_settings",
    "validate_batch_for_model",
]


# --------------------------------------------------------------------------- atomic checkpoints
def _fsync_dir(folder: str) -> None:
    # the rename itself must reach the disk, or a power cut could bring the old name back
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``.

    Writes ``<folder>/.<name>.<random>.tmp``, flushes and fsyncs it, then ``os.replace``-s it onto
    ``path`` and fsyncs the folder. On any error (including a ``KeyboardInterrupt``) the temporary
    file is removed and the previous ``path`` (if any) is untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        # mkstemp makes the file 0600: give it the mode a plain open() would (or the old file's)
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        cause = _save_failure_cause(e)
        if isinstance(cause, OSError):
            # say what failed and that nothing was lost, with the OS's reason first (disk full, quota, ...)
            raise OSError(cause.errno, f"{cause.strerror or cause} while writing checkpoint {path}; the previous "
                          f"file there (if any) is kept unchanged. Free space (or fix the folder) and resume with "
                          "--ckpt_path last") from cause
        if cause is not e:
            raise cause.with_traceback(cause.__traceback__) from None
        raise
    _fsync_dir(folder)


def _save_failure_cause(e: BaseException) -> BaseException:
    """The real reason a ``torch.save`` failed.

    When a write inside ``torch.save`` fails (``OSError: No space left on device``, or a
    ``KeyboardInterrupt`` from SIGINT), torch's zip writer then fails to close the archive and raises
    its own ``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos``, which hides
    the first error in the chained traceback. Return the first error instead.
    """
    seen = 0
    while isinstance(e, RuntimeError) and e.__context__ is not None and seen < 5 and (
        "inline_container" in str(e) or "unexpected pos" in str(e) or "PytorchStreamWriter" in str(e)
    ):
        e = e.__context__
        seen += 1
    return e


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O with atomic local writes and clear load errors.

    Saving: :func:`atomic_torch_save` (temporary file in the same folder, fsync, ``os.replace``).
    Remote URLs (``s3://`` ...) fall back to Lightning's own writer. Loading: a truncated or
    foreign file raises ``ValueError`` naming the file and the likely cause.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        p = os.fspath(path)
        if "://" in p and not p.startswith("file://"):
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, p.removeprefix("file://"))

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        p = os.fspath(path)
        if "://" not in p and not os.path.isfile(p):
            raise FileNotFoundError(f"checkpoint not found: {p}; pass --ckpt_path last (the newest) or an existing .ckpt")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as e:
            from qidbm.checkpoint import CheckpointError, unreadable_checkpoint_message

            if "://" in p:
                raise CheckpointError(f"could not read checkpoint {p} ({type(e).__name__}: {e})") from e
            raise CheckpointError(unreadable_checkpoint_message(p, e)) from e


# --------------------------------------------------------------------------- numerical faults
class NumericalFaultError(FloatingPointError):
    """A NaN/Inf appeared in training: ``.tensor`` names it, ``.step`` is the global step."""

    def __init__(self, message: str, tensor: str, step: int) -> None:
        super().__init__(message)
        self.tensor = tensor
        self.step = step


def _chains_of(pl_module) -> list[tuple[str, Tensor]]:
    chains = getattr(pl_module, "_chains", None)
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
        gen = getattr(pl_module, "_generator", None)
        self._snapshot = {
            "step": before_step,  # the state that enters this global step
            "params": [p.detach().clone() for p in pl_module.parameters()],
            "buffers": [b.detach().clone() for b in pl_module.buffers()],
            "optimizers": [_clone_state(opt.state_dict()) for opt in trainer.optimizers],
            "chains": None if getattr(pl_module, "_chains", None) is None
            else [None if c is None else c.detach().clone() for c in pl_module._chains],
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
            pl_module._chains = [None if c is None else c.clone() for c in s["chains"]]
        if s["generator"] is not None and getattr(pl_module, "_generator", None) is not None:
            pl_module._generator.set_state(s["generator"])

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
            "Lower the learning rate (model.init_args.lr or the optimizer's lr), clip gradients "
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


# --------------------------------------------------------------------------- mid-epoch resume
def skip_first_batches(loader, k: int) -> bool:
    """Make the next iteration of ``loader`` start at its ``k``-th batch (one shot).

    The skip acts on the index sampler (``loader.batch_sampler``, or ``loader.sampler`` for
    samplers that yield whole batches), lazily at the first ``next``: no skipped batch is loaded,
    and a sampler that reshuffles with ``set_epoch`` (called by Lightning after the iterator is
    created) draws the permutation of the right epoch first. Returns ``False`` if the loader has
    no index sampler to act on.
    """
    s = getattr(loader, "batch_sampler", None) or getattr(loader, "sampler", None)
    if s is None or k <= 0:
        return False
    base = type(s)

    def __iter__(self):
        # A DataLoader may create sampler iterators it never advances (a worker loader calls
        # iter() in __init__ and again in _reset): the skip goes to the first one that is read.
        def batches():
            skip = 0
            if type(self) is not base:
                self.__class__ = base  # one shot: later iterations are complete epochs
                skip = k
            yield from itertools.islice(base.__iter__(self), skip, None)

        return batches()

    s.__class__ = type(base.__name__, (base,), {"__iter__": __iter__, "__module__": base.__module__})
    return True


class MidEpochResume(L.Callback):
    """Resume from a mid-epoch checkpoint on the batch where the checkpointed run was.

    Lightning restores the loop's batch index from a checkpoint saved mid-epoch (e.g. by
    ``ModelCheckpoint(every_n_train_steps=...)``) but a plain ``DataLoader`` (not
    ``state_dict``-aware) restarts from its first batch, so the resumed epoch would train on the
    epoch's first batches again and never see its last ones. This callback reads the number of
    batches the checkpointed run had processed in its epoch and makes the data module's next
    training loader skip exactly those (:func:`skip_first_batches`). With the qidbm data modules
    (permutation ``seed + epoch``) the resumed run then sees the same batches in the same order
    as an uninterrupted one, so on CPU it reproduces it bit for bit. Needs a data module (a loader
    passed straight to ``Trainer.fit`` is left alone, with a warning).
    """

    def __init__(self) -> None:
        self.skipped: int = 0

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        try:
            loops = checkpoint["loops"]["fit_loop"]
            k = int(loops["epoch_loop.batch_progress"]["current"]["processed"])
            epoch = int(loops["epoch_progress"]["current"]["processed"])
        except (KeyError, TypeError, ValueError):
            return
        if k <= 0 or trainer.state.fn != "fit":
            return
        dm = getattr(trainer, "datamodule", None)
        if dm is None:
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(
                f"MidEpochResume: the checkpoint was saved after {k} batches of its epoch but the training data "
                "is not a LightningDataModule, so its order cannot be restored; the resumed epoch restarts "
                "from its first batch"
            )
            return
        import warnings

        # Lightning warns that a plain DataLoader cannot resume mid-epoch; here it does
        warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended before the epoch ended")
        original = dm.train_dataloader
        cb = self

        def train_dataloader():
            del dm.train_dataloader  # one shot: back to the class's method
            loader = original()
            try:
                n = len(loader)
            except TypeError:
                n = None
            # a checkpoint taken after the last batch of an epoch resumes at the next epoch
            if n is None or k < n:
                # Lightning creates the first iterator before it calls set_epoch; a loader with
                # workers draws its first indices right then, so set the resumed epoch first
                for s in (getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None)):
                    if hasattr(s, "set_epoch"):
                        s.set_epoch(epoch)
                if skip_first_batches(loader, k):
                    cb.skipped = k
            return loader

        dm.train_dataloader = train_dataloader


# --------------------------------------------------------------------------- input checks
def validate_batch_for_model(x: Tensor, model, data_info: dict | None = None, name: str = "the first training batch") -> None:
    """Check a training batch against the model before training on it (raises ``ValueError``).

    With the data module's ``data_info`` the full :func:`qidbm.data.validate` runs (shape, dtype,
    finiteness, {0, 1} for ``binary``/``bitplanes``). Without it (a plain ``DataLoader``): shape
    [B, n_visible], a floating dtype, finite values and, for binary visible units, values in
    [0, 1] (mean-field data in (0, 1) is accepted; 8-bit pixels are not).
    """
    if data_info is not None and data_info.get("encoding") is not None and data_info.get("image_shape") is not None:
        from qidbm.data import validate

        validate(x, data_info, name=name)
    nv = int(model.n_visible)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor [B, {nv}], got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != nv:
        raise ValueError(
            f"{name} has shape {list(x.shape)} but the model takes [B, n_visible={nv}]: encode the data for "
            f"this model (qidbm.data.encode) or set the model's first layer size to {x.shape[-1] if x.ndim else '?'}"
        )
    if not x.is_floating_point():
        hi = float(x.max()) if x.numel() else 0.0
        hint = " (8-bit pixels: divide by 255 and encode them)" if hi > 1 else ""
        raise ValueError(f"{name} has integer dtype {x.dtype}{hint}; batches must be float tensors")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains {int(torch.isnan(x).sum())} NaN and {int(torch.isinf(x).sum())} inf values; "
            "fix the data pipeline (and the normalisation for Gaussian visibles)"
        )
    if not model.gaussian_visible and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            eight_bit = hi > 1 and lo >= 0 and hi <= 255 and bool((x == x.round()).all())
            cause = ("8-bit pixel values in [0, 255]: divide by 255 and binarise (encoding='binary')" if eight_bit
                     else "normalised or continuous data: binary units take values in [0, 1]; use encoding='binary' "
                          "or a model with Gaussian visibles (GRBM/QGRBM) with encoding='continuous'")
            raise ValueError(f"{name} has values in [{lo:g}, {hi:g}] for a model with binary visible units ({cause})")


# --------------------------------------------------------------------------- stopping: end of fit, SIGTERM
SIGTERM_EXIT_STATUS = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


class FinalCheckpoint(L.Callback):
    """Write ``last.ckpt`` at the step where a fit stops.

    * End of fit (``on_train_end``): ``ModelCheckpoint(save_last=True, every_n_train_steps=k)`` saves
      only every k steps, so a run that stops in between (``max_steps``, ``max_time``, early stopping)
      would leave ``last.ckpt`` at an earlier step. This saves it at the final step, through each
      ``ModelCheckpoint`` with ``save_last`` (nothing is written twice for the same step).
    * SIGTERM (``on_exception`` with Lightning's ``SIGTERMException``): Lightning's signal handler
      sets ``trainer.received_sigterm`` and its loops stop at the end of the current batch, so the
      state is consistent; this writes ``last.ckpt`` at that step into each ``ModelCheckpoint``'s
      folder (where ``--ckpt_path last`` looks) and prints what it wrote. ``qidbm fit`` then exits
      with status 143, so a scheduler does not read the stop as a finished job. On SLURM, Lightning's
      ``SLURMEnvironment(auto_requeue=True)`` still handles the requeue signal (an HPC checkpoint and
      ``scontrol requeue``).

    ``qidbm fit`` installs it by default. ``saved`` lists the files written by the last stop.
    """

    def __init__(self) -> None:
        self.saved: list[str] = []
        self.stopped_by_sigterm_at: int | None = None

    @staticmethod
    def _model_checkpoints(trainer: L.Trainer) -> list:
        from lightning.pytorch.callbacks import ModelCheckpoint

        out, seen = [], set()
        for cb in trainer.checkpoint_callbacks:
            if isinstance(cb, ModelCheckpoint) and cb.dirpath is not None and cb.dirpath not in seen:
                seen.add(cb.dirpath)
                out.append(cb)
        return out

    @staticmethod
    def _save_last(trainer: L.Trainer, cb, always: bool) -> str | None:
        """Save ``cb``'s last checkpoint at this step (with ModelCheckpoint's own naming and
        bookkeeping when it keeps one, else ``<dirpath>/last.ckpt`` if ``always``)."""
        if cb.save_last is True:
            if getattr(cb, "_last_global_step_saved", None) != trainer.global_step or not cb.last_model_path:
                cb._save_last_checkpoint(trainer, cb._monitor_candidates(trainer))
            return cb.last_model_path
        if always:
            path = os.path.join(cb.dirpath, cb.CHECKPOINT_NAME_LAST + cb.FILE_EXTENSION)
            trainer.save_checkpoint(path)
            return path
        return None

    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.fast_dev_run or trainer.global_step == 0:
            return
        self.saved = [p for cb in self._model_checkpoints(trainer) if (p := self._save_last(trainer, cb, always=False))]

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if not isinstance(exception, SIGTERMException) or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if trainer.state.fn != "fit":
            return
        self.stopped_by_sigterm_at = trainer.global_step
        self.saved, failure = [], None
        for cb in self._model_checkpoints(trainer):
            try:
                path = self._save_last(trainer, cb, always=True)
            except Exception as e:  # report it, and still exit as stopped (the older last.ckpt is intact)
                failure = f"writing the checkpoint in {cb.dirpath} failed ({type(e).__name__}: {e}); the previous one is kept"
                continue
            if path:
                self.saved.append(path)
        if trainer.is_global_zero:
            wrote = (f"wrote {', '.join(self.saved)} at this step" if self.saved
                     else "no checkpoint written (this run has no ModelCheckpoint)")
            print(f"qidbm fit: received SIGTERM at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
                  f"{wrote}{'; ' + failure if failure else ''}. Exiting with status {SIGTERM_EXIT_STATUS} (stopped, "
                  "not finished): resume with --ckpt_path last", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- one fit per run folder
class RunFolderInUseError(RuntimeError):
    """Another ``qidbm fit`` holds the lock of a folder this run would write to."""


class RunLock(L.Callback):
    """One ``qidbm fit`` at a time per run folder.

    Before the fit starts, global rank 0 takes an exclusive, non-blocking ``flock`` on each folder this
    run writes to: the trainer's log folder (``config.yaml``, ``hparams.yaml``, ``metrics.csv``), the
    folders of CSV and TensorBoard loggers, and the ``dirpath`` of every callback that has one
    (``ModelCheckpoint``, ``SampleGrid``, ``FIDCallback``), and creates the folders. The lock file sits
    next to the folder (``<parent>/.<folder>.qidbm-lock``) and names the holder. A second run into a
    locked folder stops with :class:`RunFolderInUseError` naming the folder and the run holding it,
    before it writes anything. The kernel drops the lock when the holder exits, even on SIGKILL, so a
    killed run never leaves a stale lock. Runs whose loggers choose their version folder themselves
    get separate folders as before (the first run's version folder exists from its start); the lock
    catches the folders they share: a fixed checkpoint ``dirpath``, the same logger version, the same
    ``default_root_dir`` without a logger. Not on Windows (no ``fcntl``).

    ``qidbm fit`` calls :meth:`lock_before_fit` before ``trainer.fit``: a CSV logger of the second run
    would otherwise delete the first run's ``metrics.csv`` when the fit sets its loggers up, before any
    callback hook. Used with a plain ``Trainer``, the lock is taken at the callback's ``setup`` (all DDP
    ranks stop together), which is after that point.
    """

    SUFFIX = ".qidbm-lock"

    def __init__(self) -> None:
        self._held: list = []
        self._checked = False

    @staticmethod
    def run_folders(trainer: L.Trainer) -> list[str]:
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        out: list[str] = []

        def add(d) -> None:
            if not isinstance(d, (str, os.PathLike)):
                return
            d = os.fspath(d)
            if d and "://" not in d:
                d = os.path.abspath(d)
                if d not in out:
                    out.append(d)

        add(trainer.log_dir)
        for lg in trainer.loggers:
            if isinstance(lg, (CSVLogger, TensorBoardLogger)):
                add(lg.log_dir)
        for cb in trainer.callbacks:
            if cb is not None and not isinstance(cb, RunLock):
                add(getattr(cb, "dirpath", None))
        return out

    def lock_path(self, folder: str) -> str:
        parent, name = os.path.split(os.path.abspath(folder).rstrip(os.sep))
        return os.path.join(parent, "." + name + self.SUFFIX) if name else os.path.join(folder, self.SUFFIX)

    def acquire(self, folders: list[str]) -> str | None:
        """Lock (and create) every folder; on a conflict release them all and return the error message."""
        if fcntl is None:
            return None
        for d in folders:
            path = self.lock_path(d)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                f = open(path, "a+")
            except OSError:  # a read-only place: the run fails there anyway, with the OS's own error
                continue
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    f.close()  # a file system without locks: go on unlocked
                    continue
                f.seek(0)
                holder = f.read().strip() or "a process that did not say who it is"
                f.close()
                self.release()
                return (
                    f"another `qidbm fit` is writing to {d} (lock {path}, held by {holder}). Two runs in one folder "
                    "would mix their metrics.csv, config.yaml, hparams.yaml and checkpoints. Wait for that run to "
                    "finish (or stop it), or give this run its own folder: another trainer.default_root_dir, logger "
                    "save_dir/name/version, or ModelCheckpoint dirpath"
                )
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                    f"{' '.join(sys.argv)[:300]}\n")
            f.flush()
            self._held.append(f)
            try:  # the folder exists from now on, so a run started later picks another logger version
                os.makedirs(d, exist_ok=True)
            except OSError:
                pass
        return None

    def release(self) -> None:
        held, self._held = self._held, []
        for f in held:
            try:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            except OSError:
                pass
            f.close()

    def lock_before_fit(self, trainer: L.Trainer) -> None:
        """Take the locks (global rank 0) before ``trainer.fit``; call it on every rank."""
        self._checked = True
        if trainer.is_global_zero:
            error = self.acquire(self.run_folders(trainer))
            if error is not None:
                self._checked = False
                raise RunFolderInUseError(error)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self._checked:
            return
        folders = self.run_folders(trainer)  # on every rank: trainer.log_dir is a collective (a broadcast)
        error = self.acquire(folders) if trainer.is_global_zero else None
        if trainer.world_size > 1:
            error = trainer.strategy.broadcast(error)
        if error is not None:
            self.release()
            raise RunFolderInUseError(error)

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self.release()
        self._checked = False

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        # Lightning calls no teardown hooks after an exception: free the folders now (in-process reruns)
        self.release()
        self._checked = False


# --------------------------------------------------------------------------- module arguments and resumes
def check_module_arguments(*, num_chains: Any, positive_steps: Any, lr: Any, momentum: Any, weight_decay: Any,
                           langevin_steps: Any, langevin_step_size: Any) -> None:
    """``BoltzmannModule``'s numeric arguments, checked at construction (``ValueError`` saying what to use)."""

    def is_int(x) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    def is_num(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if num_chains is not None and not (is_int(num_chains) and num_chains >= 1):
        raise ValueError(
            f"num_chains must be a positive integer (the number of persistent chains, e.g. 500), or null to use "
            f"one chain per batch row; got {num_chains!r}"
        )
    if not (is_int(positive_steps) and positive_steps >= 1):
        raise ValueError(
            f"positive_steps must be an integer >= 1 (Gibbs sweeps of the clamped chain in the E-step, e.g. 5; "
            f"positive: mean_field uses the mean-field fixed point instead); got {positive_steps!r}"
        )
    if not (is_num(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number (the SGD learning rate, e.g. 0.01); got {lr!r}")
    if not (is_num(momentum) and momentum >= 0):
        raise ValueError(f"momentum must be a finite number >= 0 (0 for plain SGD, e.g. 0.5 or 0.9); got {momentum!r}")
    if not (is_num(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0 (0 for none, e.g. 1e-4); got {weight_decay!r}")
    if not (is_int(langevin_steps) and langevin_steps >= 1):
        raise ValueError(f"langevin_steps must be an integer >= 1 (e.g. 10); got {langevin_steps!r}")
    if not (is_num(langevin_step_size) and langevin_step_size > 0):
        raise ValueError(f"langevin_step_size must be a positive finite number (e.g. 0.1); got {langevin_step_size!r}")


def _plain(x: Any) -> Any:
    """JSON-like copy (tuples become lists) so that configs compare by value."""
    try:
        return json.loads(json.dumps(x))
    except (TypeError, ValueError):
        return x


# model settings that only set the initial values, which a resume replaces by the checkpoint's
_INIT_ONLY_MODEL_KEYS = frozenset({"weight_std", "transverse_field_init"})


def check_resume_matches(info: dict, model, data_info: dict | None) -> None:
    """A checkpoint's model and data against this run's, before Lightning loads the weights.

    Other layer sizes, quantum layers or field coupling: ``ValueError`` naming each difference
    (instead of torch's ``size mismatch`` from ``load_state_dict``). Other data (data set, encoding,
    image shape, preprocessing): ``ValueError`` too, since ``qidbm sample``/``evaluate`` read the
    checkpoint's data info and a resume would silently train on something else. Lightning looks a data
    module's state up by its class name, so ``ImageDataModule.load_state_dict`` never sees a checkpoint
    of another data module class: this check does not depend on it.
    """
    saved, now = _plain(info.get("model_config") or {}), _plain(model.config())
    diffs = [k for k in saved if k in now and k not in _INIT_ONLY_MODEL_KEYS and saved[k] != now[k]]
    if diffs:
        what = "; ".join(f"{k}: {saved[k]} in the checkpoint, {now[k]} in this run" for k in diffs)
        raise ValueError(
            f"this checkpoint's {info.get('model_class')} does not match this run's model ({what}). Resume with the "
            f"checkpoint's model settings (model.init_args.model.init_args.{diffs[0]}: {saved[diffs[0]]}), or start a "
            "new run without --ckpt_path"
        )
    saved_d = info.get("data_info")
    if not saved_d or not data_info:
        return
    diffs = []
    for k in ("dataset", "encoding", "image_shape", "n_visible", "preprocessing"):
        a, b = _plain(saved_d.get(k)), _plain(data_info.get(k))
        if a != b and not (a is None and k == "preprocessing"):
            diffs.append(f"{k}: {a} in the checkpoint, {b} in this run")
    kind_a = (saved_d.get("normalization") or {}).get("kind")
    kind_b = (data_info.get("normalization") or {}).get("kind")
    if kind_a != kind_b:
        diffs.append(f"normalization: {kind_a} in the checkpoint, {kind_b} in this run")
    if diffs:
        module = (saved_d.get("datamodule") or {}).get("class_path", saved_d.get("dataset"))
        raise ValueError(
            f"this checkpoint was trained on other data ({'; '.join(diffs)}). Resuming would train on the new data "
            "while the checkpoint's data info (used by `qidbm sample` and `qidbm evaluate`) keeps the old. Resume "
            f"with the checkpoint's data settings (data: class_path {module}, encoding {saved_d.get('encoding')}), "
            "or start a new run without --ckpt_path"
        )


_OPTIMIZER_KEYS = ("lr", "momentum", "dampening", "weight_decay", "nesterov", "betas", "eps", "alpha", "rho",
                   "amsgrad", "centered", "lr_decay", "initial_accumulator_value", "maximize")


def optimizer_settings(optimizers) -> list[list[dict[str, Any]]]:
    """The plain settings (lr, momentum, weight_decay, betas, ...) of every parameter group."""
    out = []
    for opt in optimizers or []:
        groups = []
        for g in getattr(opt, "param_groups", []):
            d: dict[str, Any] = {}
            for k in _OPTIMIZER_KEYS:
                v = g.get(k)
                if isinstance(v, Tensor) and v.numel() == 1:
                    v = float(v)
                if isinstance(v, tuple):
                    v = list(v)
                if isinstance(v, (bool, int, float)) or (
                        isinstance(v, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)):
                    d[k] = v
            groups.append(d)
        out.append(groups)
    return out


# module settings that a resume cannot change, and why
_RESUME_NOTES = {
    "chain_seed": "not used: the sampling generator continues from the checkpoint's state",
    "init_visible_bias": "not used: the parameters come from the checkpoint",
    "num_chains": "applied: new persistent chains are drawn",
}


def apply_changed_settings_on_resume(trainer: L.Trainer, resume: dict, hparams: dict,
                                     configured: list | None) -> list[str]:
    """After Lightning restored a checkpoint's optimizer state: apply the settings this run changed.

    ``torch.optim.Optimizer.load_state_dict`` restores the checkpoint's learning rate (and momentum,
    weight decay, ...), so ``--model.init_args.lr 0.001 --ckpt_path last`` would train at the old rate
    while ``config.yaml`` records the new one. Every optimizer setting that differs between the
    checkpoint's configuration (``optimizer_settings``, recorded at the start of its fit) and this run's
    is set to this run's value; a learning rate that a scheduler or ``FaultGuard`` had already scaled
    keeps that factor (and a scheduler's ``base_lrs`` follow). Other module settings (``cd_steps``, ...)
    are read every step and apply anyway. A warning lists every change. Returns the listed changes.
    """
    lines: list[str] = []
    saved = resume.get("optimizer_settings")
    old_hp = resume.get("hyper_parameters") or {}
    if saved is None and resume.get("default_optimizer"):
        # a checkpoint from before optimizer settings were recorded: the module's own SGD settings
        saved = [[{k: old_hp[k] for k in ("lr", "momentum", "weight_decay") if k in old_hp} for _ in opt.param_groups]
                 for opt in trainer.optimizers]
    opts = list(trainer.optimizers)
    if saved is not None and configured is not None and len(saved) == len(configured) == len(opts):
        single = len(opts) == 1 and len(opts[0].param_groups) == 1
        for i, (opt, old_groups, new_groups) in enumerate(zip(opts, saved, configured)):
            if not (len(old_groups) == len(new_groups) == len(opt.param_groups)):
                continue
            for j, (group, old, new) in enumerate(zip(opt.param_groups, old_groups, new_groups)):
                for k in [k for k in new if k in old and old[k] != new[k]]:
                    where = "" if single else f" (optimizer {i}, group {j})"
                    note = ""
                    if k == "lr":
                        restored = group["lr"]
                        if restored == old[k] or not old[k]:
                            group["lr"] = new[k]
                        else:  # a scheduler or a FaultGuard restore scaled it: keep that factor
                            group["lr"] = restored * new[k] / old[k]
                            note = f" (the restored rate {restored:g} is scaled alike, to {group['lr']:g})"
                        if "initial_lr" in group:
                            group["initial_lr"] = new[k]
                        for cfg in getattr(trainer, "lr_scheduler_configs", []) or []:
                            sch = cfg.scheduler
                            if getattr(sch, "optimizer", None) is opt and isinstance(getattr(sch, "base_lrs", None), list):
                                sch.base_lrs[j] = new[k]
                    else:
                        group[k] = tuple(new[k]) if isinstance(group.get(k), tuple) else new[k]
                    lines.append(f"{k}{where} {old[k]} -> {new[k]} (applied{note})")
    for k in sorted(set(old_hp) & set(hparams)):
        if k.startswith("_") or k in ("lr", "momentum", "weight_decay") or _plain(old_hp[k]) == _plain(hparams[k]):
            continue  # the optimizer's settings are compared above (the CLI's optimizer: section sets them there)
        lines.append(f"{k} {old_hp[k]!r} -> {hparams[k]!r} ({_RESUME_NOTES.get(k, 'applied')})")
    if lines:
        from lightning.pytorch.utilities import rank_zero_warn

        rank_zero_warn(
            f"resuming from global step {resume.get('global_step')} with settings that differ from the checkpoint's: "
            + "; ".join(lines) + ". To keep the checkpoint's value of a setting, pass that value again (in the "
            "config or on the command line)"
        )
    return lines
