"""Mid-epoch resume: a resume from a mid-epoch checkpoint trains on the batches the stopped run had not.

Lightning restores the loop's batch index from a checkpoint saved mid-epoch, and the position of every
training loader that is stateful (``state_dict``/``load_state_dict``: its ``_Stateful`` protocol), but
restarts a plain ``DataLoader`` from its first batch. :class:`MidEpochResume` has the qidbm data modules
serve a :class:`qidbm.data.ResumableDataLoader`, whose position (epoch, batches handed out) Lightning's
fit loop saves in every checkpoint and gives back on a resume (to :class:`qidbm.data.IndexBatchSampler`).
``qidbm fit`` installs it by default.
"""

from __future__ import annotations

from typing import Any

import lightning as L

__all__ = ["MidEpochResume"]


class MidEpochResume(L.Callback):
    """Resume from a mid-epoch checkpoint on the batch where the checkpointed run was.

    Lightning restores the loop's batch index from a checkpoint saved mid-epoch (e.g. by
    ``ModelCheckpoint(every_n_train_steps=...)``) but a plain ``DataLoader`` (not
    ``state_dict``-aware) restarts from its first batch, so the resumed epoch would train on the
    epoch's first batches again and never see its last ones. At the start of a fit this callback
    sets the data module's ``resumable_train_loader``: a qidbm data module then serves a
    :class:`~qidbm.data.ResumableDataLoader`, and Lightning's fit loop saves its position with every
    checkpoint and restores it on a resume. With the qidbm data modules (permutation ``seed + epoch``)
    the resumed run sees the same batches in the same order as an uninterrupted one, so on CPU it
    reproduces it bit for bit. The data module records in the checkpoint that its loader was
    resumable, so a resume of such a checkpoint restores the position even without this callback. A
    checkpoint written before loaders were resumable (no loader state) gets its position from the
    loop's batch count. Needs a qidbm data module (other training data restarts its epoch, with a
    warning).
    """

    def __init__(self) -> None:
        self.skipped: int = 0  # batches of its epoch the restored checkpoint had trained on

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        dm = getattr(trainer, "datamodule", None)
        if stage == "fit" and dm is not None and hasattr(dm, "resumable_train_loader"):
            dm.resumable_train_loader = True

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
        if not getattr(dm, "resumable_train_loader", False):
            from lightning.pytorch.utilities import rank_zero_warn

            what = ("is not a LightningDataModule" if dm is None
                    else f"comes from {type(dm).__name__}, which does not serve a resumable loader")
            rank_zero_warn(
                f"MidEpochResume: the checkpoint was saved after {k} batches of its epoch but the training data "
                f"{what}, so its order cannot be restored; the resumed epoch restarts from its first batch"
            )
            return
        self.skipped = k
        state = loops.setdefault("state_dict", {})
        if isinstance(state, dict) and not state.get("combined_loader"):
            # an older checkpoint without the loader's state: the loop's batch count is its position
            state["combined_loader"] = [{"epoch": epoch, "batches_done": k}]
