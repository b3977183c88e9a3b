"""Lightning integration: the DO-EM/CD training module, callbacks, loggers and fault handling."""

from qidbm.checkpoint import check_checkpoint
from qidbm.images import save_grid, visible_to_images
from qidbm.lightning.callbacks import FIDCallback, SampleGrid
from qidbm.lightning.checkpoint_io import AtomicCheckpointIO
from qidbm.lightning.fault_guard import FaultGuard, NumericalFaultError
from qidbm.lightning.final_checkpoint import FinalCheckpoint
from qidbm.lightning.loggers import WandbLogger
from qidbm.lightning.mid_epoch_resume import MidEpochResume
from qidbm.lightning.module import BoltzmannModule
from qidbm.lightning.next_stage import NextStage
from qidbm.lightning.run_lock import RunFolderInUseError, RunLock
from qidbm.lightning.transverse_field import TransverseField

__all__ = [
    "AtomicCheckpointIO",
    "BoltzmannModule",
    "FIDCallback",
    "FaultGuard",
    "FinalCheckpoint",
    "MidEpochResume",
    "NextStage",
    "NumericalFaultError",
    "RunFolderInUseError",
    "RunLock",
    "SampleGrid",
    "TransverseField",
    "WandbLogger",
    "check_checkpoint",
    "save_grid",
    "visible_to_images",
]
