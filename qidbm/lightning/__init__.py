"""Lightning integration: the DO-EM/CD training module and callbacks."""

from qidbm.lightning.callbacks import FIDCallback, SampleGrid, save_grid, visible_to_images
from qidbm.lightning.loggers import WandbLogger
from qidbm.lightning.module import BoltzmannModule, check_checkpoint

__all__ = ["BoltzmannModule", "FIDCallback", "SampleGrid", "check_checkpoint", "save_grid", "visible_to_images", "WandbLogger"]
