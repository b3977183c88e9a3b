"""Final checkpoint: ``last.ckpt`` at the step where a fit stops (its end, or SIGTERM)."""

from __future__ import annotations

import os
import sys

import lightning as L

__all__ = ["SIGTERM_EXIT_STATUS", "FinalCheckpoint"]


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
