"""Lightning callbacks: sample grids (PNG on disk and in every logger)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from qidbm.sampling import SamplingSpec, draw_samples


def visible_to_images(x: Tensor, data_info: dict | None) -> Tensor:
    """Decode visible vectors to images [N, C, H, W] in [0, 1] with the recorded encoding.

    Without data information (a model trained outside ``qidbm fit``), a square single-channel
    image is assumed for binary units.
    """
    if data_info is not None:
        from qidbm.data.encodings import decode

        return decode(x.detach().float().cpu(), data_info)
    n = x.shape[1]
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"cannot lay out {n} visible units as an image without data_info")
    return x.detach().float().cpu().clamp(0, 1).view(-1, 1, side, side)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save images [N, C, H, W] in [0, 1] as one PNG grid (written atomically)."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.sqrt(images.shape[0])))
    tmp = path.with_name(path.name + ".tmp.png")
    save_image(images, tmp, nrow=nrow, padding=2, pad_value=0.5)
    tmp.replace(path)
    return path


def log_image_to_loggers(trainer: L.Trainer, key: str, grid: Tensor, step: int) -> None:
    """Send a [C, H, W] image grid to every logger that can show images (TensorBoard, W&B)."""
    for logger in trainer.loggers:
        name = type(logger).__name__
        try:
            if name == "TensorBoardLogger":
                logger.experiment.add_image(key, grid, global_step=step)
            elif name == "WandbLogger":
                logger.log_image(key=key, images=[grid], step=step)
        except Exception as e:  # a logger failing must not stop training
            from lightning.pytorch.utilities import rank_zero_warn

            rank_zero_warn(f"could not log image {key!r} to {name}: {e}")


class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` epochs (and at the end of fit), draw ``num_samples`` samples,
    save them as ``samples/epoch=NNN.png`` and ``samples/last.png`` under ``dirpath``
    (default: the logger's directory) and log the grid to every logger.

    Sampling uses its own generator (seeded by ``seed``) so that it never perturbs the
    training chains' random stream.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 64,
        num_steps: int = 200,
        start: Literal["noise", "data", "local_mode"] = "noise",
        output: Literal["sample", "mean", "local_mode"] = "mean",
        quantum_step: Literal["paper", "exact"] = "paper",
        dirpath: str | None = None,
        seed: int = 0,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.spec = SamplingSpec(num_steps=num_steps, start=start, output=output, quantum_step=quantum_step)
        self.dirpath = dirpath
        self.seed = seed
        self.last_path: Path | None = None

    def _dir(self, trainer: L.Trainer) -> Path:
        if self.dirpath:
            return Path(self.dirpath)
        base = trainer.log_dir or trainer.default_root_dir
        return Path(base) / "samples"

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.every_n_epochs > 0 and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.make_grid(trainer, pl_module)

    @rank_zero_only
    def make_grid(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        data = None
        if self.spec.start != "noise":
            dm = trainer.datamodule
            data = next(iter(dm.train_dataloader()))
            data = data[0] if isinstance(data, (list, tuple)) else data
        g = torch.Generator(device=pl_module.device)
        g.manual_seed(self.seed)
        was_training = pl_module.training
        pl_module.eval()
        x = draw_samples(pl_module.model, self.num_samples, self.spec, data=data, generator=g)
        pl_module.train(was_training)
        images = visible_to_images(x, getattr(pl_module, "data_info", None))
        d = self._dir(trainer)
        save_grid(images, d / f"epoch={trainer.current_epoch:03d}.png")
        self.last_path = save_grid(images, d / "last.png")
        from torchvision.utils import make_grid

        log_image_to_loggers(trainer, "samples", make_grid(images, nrow=int(math.sqrt(len(images)))), trainer.global_step)
        return self.last_path
