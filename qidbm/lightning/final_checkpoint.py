"""Final checkpoint: ``last.ckpt`` at the step where a fit stops (its end, SIGTERM, or Ctrl-C)."""

from __future__ import annotations

import os
import signal
import sys
import threading

import lightning as L

__all__ = ["SIGINT_EXIT_STATUS", "SIGTERM_EXIT_STATUS", "FinalCheckpoint", "last_stop", "reset_last_stop"]


SIGTERM_EXIT_STATUS = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM
SIGINT_EXIT_STATUS = 130  # 128 + SIGINT, what a shell reports for a process ended by Ctrl-C

#: how the last fit in this process was stopped by a signal: ``signal`` ("SIGTERM", "SIGINT" or None)
#: and ``aborted`` (a second Ctrl-C: no checkpoint written); read by ``qidbm fit`` for its exit status
_LAST_STOP: dict = {"signal": None, "aborted": False}


def last_stop() -> dict:
    """How the last fit of this process was stopped: ``{"signal": "SIGTERM" | "SIGINT" | None, "aborted": bool}``."""
    return dict(_LAST_STOP)


def reset_last_stop() -> None:
    """Forget how the last fit was stopped (before a new one)."""
    _LAST_STOP.update(signal=None, aborted=False)


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
    * SIGINT (Ctrl-C), with ``handle_sigint`` (default): the same stop as SIGTERM (a line says it is
      coming), ``last.ckpt`` at that step, and ``qidbm fit`` exits with status 130. A second Ctrl-C
      aborts at once (Lightning's own shutdown, no checkpoint of this step; the files written before
      are complete). Lightning's own handling of Ctrl-C would end the fit at once without a checkpoint.
      The handler is in place while the fit runs (sanity check and training) and is then put back.

    ``qidbm fit`` installs it by default. ``saved`` lists the files written by the last stop.
    """

    def __init__(self, handle_sigint: bool = True) -> None:
        self.handle_sigint = handle_sigint
        self.saved: list[str] = []
        self.stopped_by_sigterm_at: int | None = None
        self._sigint_count = 0
        self._previous_sigint = None
        self._trainer = None

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

    # ---------------------------------------------------------------- Ctrl-C
    def _install_sigint(self, trainer: L.Trainer) -> None:
        if not self.handle_sigint or self._previous_sigint is not None:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._trainer = trainer
        self._sigint_count = 0
        self._previous_sigint = signal.signal(signal.SIGINT, self._on_sigint)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is None:
            return
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == self._on_sigint:
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None
        self._trainer = None

    def _on_sigint(self, signum, frame) -> None:
        self._sigint_count += 1
        trainer = self._trainer
        if self._sigint_count == 1 and trainer is not None:
            _LAST_STOP["signal"] = "SIGINT"
            # Lightning's SIGTERM flag: its loops stop at the end of the current batch (SIGTERMException)
            trainer._signal_connector.received_sigterm = True
            if trainer.is_global_zero:
                print("\nqidbm fit: Ctrl-C: stopping after this batch and writing last.ckpt "
                      "(press Ctrl-C again to abort without writing it)", file=sys.stderr, flush=True)
            return
        _LAST_STOP["aborted"] = True
        if trainer is None or trainer.is_global_zero:
            print("\nqidbm fit: second Ctrl-C: aborted without writing a checkpoint at this step; the checkpoints "
                  "written before are complete (resume with --ckpt_path last)", file=sys.stderr, flush=True)
        raise KeyboardInterrupt

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module) -> None:
        # from here on (Lightning has installed its SIGTERM handler and will restore every handler at its
        # teardown) until the fit ends
        if trainer.state.fn == "fit":
            reset_last_stop()
            self._install_sigint(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        if self._previous_sigint is None:
            reset_last_stop()
        self._install_sigint(trainer)

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self._restore_sigint()

    # ---------------------------------------------------------------- stops
    def on_train_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.fast_dev_run or trainer.global_step == 0:
            return
        self.saved = [p for cb in self._model_checkpoints(trainer) if (p := self._save_last(trainer, cb, always=False))]

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        sigint = self._sigint_count > 0
        self._restore_sigint()
        if not isinstance(exception, SIGTERMException) or trainer.fast_dev_run or trainer.state.fn != "fit":
            return
        if not sigint:
            _LAST_STOP["signal"] = "SIGTERM"
        name, status = ("SIGINT (Ctrl-C)", SIGINT_EXIT_STATUS) if sigint else ("SIGTERM", SIGTERM_EXIT_STATUS)
        if trainer.sanity_checking:
            if trainer.is_global_zero:
                print(f"qidbm fit: received {name} during the sanity check, before any training step; nothing to "
                      f"save. Exiting with status {status}", file=sys.stderr, flush=True)
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
            print(f"qidbm fit: received {name} at global step {trainer.global_step} (epoch {trainer.current_epoch}); "
                  f"{wrote}{'; ' + failure if failure else ''}. Exiting with status {status} (stopped, "
                  "not finished): resume with --ckpt_path last", file=sys.stderr, flush=True)
