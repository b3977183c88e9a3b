"""Lightning integration: the DO-EM/CD training module, callbacks, loggers and fault handling."""

from qidbm.lightning.callbacks import FIDCallback, SampleGrid, save_grid, visible_to_images
from qidbm.lightning.loggers import WandbLogger
from qidbm.lightning.module import BoltzmannModule, check_checkpoint
from qidbm.lightning.reliability import AtomicCheckpointIO, FaultGuard, MidEpochResume, NumericalFaultError

__all__ = [
    "AtomicCheckpointIO",
    "BoltzmannModule",
    "FIDCallback",
    "FaultGuard",
    "MidEpochResume",
    "NumericalFaultError",
    "SampleGrid",
    "WandbLogger",
    "check_checkpoint",
    "save_grid",
    "visible_to_images",
]
