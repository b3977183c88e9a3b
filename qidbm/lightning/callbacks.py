"""Lightning callbacks: sample grids (PNG on disk and in every logger) and FID during training."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor

from qidbm.images import save_grid, visible_to_images
from qidbm.samplers.drawing import Output, SamplingSpec


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


def draw_eval_samples(trainer: L.Trainer, pl_module: L.LightningModule, num: int, spec: SamplingSpec, seed: int,
                      follow_training_anneal: bool = False, follow_sample_output: bool = False,
                      follow_sample_steps: bool = False) -> Tensor:
    """:func:`qidbm.samplers.drawing.draw` for a module in training: ``pl_module.model`` sampled with
    ``spec`` and a generator of its own (seeded by ``seed``), so that evaluation never perturbs the
    training chains' random stream; the module is put in eval mode meanwhile.

    ``follow_training_anneal``: a noise start anneals as the module's noise-started training chains
    do (``FromNoise(anneal_from=...)``), as ``qidbm sample`` does (``spec.anneal_from`` is then ignored).
    ``follow_sample_output``: the samples are read out as the module's ``sample_output`` says, as
    ``qidbm sample`` does, when it is set (``spec.output`` otherwise). ``follow_sample_steps``: the
    chains run as many sweeps as ``qidbm sample`` runs on this module now (its ``sample_steps``, else its
    noise-started training chains' sweeps), so a grid follows a :class:`~qidbm.lightning.NextStage`."""
    from qidbm.samplers.drawing import draw

    trained = pl_module.sampling() if hasattr(pl_module, "sampling") else None
    if follow_training_anneal and spec.start == "noise":
        beta = trained.anneal_from if trained is not None and trained.start == "noise" else 1.0
        if beta != spec.anneal_from:
            spec = dataclasses.replace(spec, anneal_from=beta)
    if follow_sample_steps and trained is not None and trained.num_steps != spec.num_steps:
        spec = dataclasses.replace(spec, num_steps=trained.num_steps)
    readout = getattr(pl_module, "hparams", {}).get("sample_output")
    if follow_sample_output and readout:
        spec = dataclasses.replace(spec, output=readout)

    data = None
    if spec.start != "noise":
        data = torch.cat([b[0] if isinstance(b, (list, tuple)) else b for b in trainer.datamodule.train_dataloader()])
    g = torch.Generator(device=pl_module.device)
    g.manual_seed(seed)
    was_training = pl_module.training
    pl_module.eval()
    try:
        return draw(pl_module.model, num, spec, data=data, generator=g)[0]
    finally:
        pl_module.train(was_training)


class SampleGrid(L.Callback):
    """Every ``every_n_epochs`` epochs (and at the end of fit), draw ``num_samples`` samples,
    save them as ``samples/epoch=NNN.png`` and ``samples/last.png`` under ``dirpath``
    (default: the logger's directory) and log the grid to every logger.

    Sampling uses its own generator (seeded by ``seed``) so that it never perturbs the
    training chains' random stream. ``num_steps`` None: as many sweeps as ``qidbm sample`` runs on the
    module at that point (its ``sample_steps``, which a :class:`~qidbm.lightning.NextStage` may change).
    ``noise_density``: the noise start's density range, and
    ``anneal_from``: the first sweep's inverse temperature of an annealed chain
    (:class:`~qidbm.samplers.drawing.SamplingSpec`); left at None, a noise start anneals as the
    module's noise-started training chains do (``FromNoise(anneal_from=...)``), which is what ``qidbm sample`` draws;
    ``output`` left at None reads the samples out as the module's ``sample_output`` says (the
    conditional mean ``"mean"`` if it is unset).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 64,
        num_steps: int | None = 200,
        start: Literal["noise", "data", "local_mode"] = "noise",
        output: Output | None = None,
        quantum_step: Literal["paper", "exact"] = "paper",
        dirpath: str | None = None,
        seed: int = 0,
        noise_density: list[float] | None = None,
        anneal_from: float | None = None,
    ) -> None:
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.follow_sample_steps = num_steps is None
        self.spec = SamplingSpec(num_steps=200 if num_steps is None else num_steps, start=start, output=output or "mean", quantum_step=quantum_step,
                                 noise_density=noise_density, anneal_from=1.0 if anneal_from is None else anneal_from)
        self.follow_training_anneal = anneal_from is None
        self.follow_sample_output = output is None
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
        x = draw_eval_samples(trainer, pl_module, self.num_samples, self.spec, self.seed, self.follow_training_anneal,
                              self.follow_sample_output, self.follow_sample_steps)
        images = visible_to_images(x, getattr(pl_module, "data_info", None))
        d = self._dir(trainer)
        save_grid(images, d / f"epoch={trainer.current_epoch:03d}.png")
        self.last_path = save_grid(images, d / "last.png")
        from torchvision.utils import make_grid

        log_image_to_loggers(trainer, "samples", make_grid(images, nrow=int(math.sqrt(len(images)))), trainer.global_step)
        return self.last_path


class FIDCallback(L.Callback):
    """FID every ``every_n_epochs`` epochs on ``num_samples`` samples (docs/maths.md, 'FID protocol').

    Samples are drawn with the evaluation sampling options (``num_steps``: None runs as many sweeps as
    ``qidbm sample`` runs on the module then, as :class:`SampleGrid`; ``start``,
    ``output``: None follows the module's ``sample_output``, else ``"mean"``; ``quantum_step``,
    ``noise_density``, ``anneal_from``: None follows the module's training chains, as :class:`SampleGrid`) and compared with the data module's test images
    (encoded then decoded like the training data), whose Inception statistics are cached on
    disk keyed by dataset, split and encoding. ``reference="train"`` (its first 10,000 images
    unless ``reference_size``) or ``"val"`` (the held-out images) compares with those instead, so
    that ``best_fid.ckpt`` is chosen without looking at the test images. The score is logged as ``fid`` (to every
    logger) and, with ``save_best``, the model with the lowest finite FID so far is saved to
    ``dirpath/best_fid.ckpt`` (a NaN or infinite score is never "best"). A grid of the
    first 100 samples is saved as ``dirpath/fid_samples/epoch=NNN.png`` and logged as an image.

    Use a cheap setting for feedback during training (e.g. ``num_samples=1000``) and the
    full protocol (10,000 samples, ``qidbm evaluate``) for final numbers.
    """

    def __init__(
        self,
        every_n_epochs: int = 5,
        num_samples: int = 1000,
        num_steps: int | None = 1000,
        start: Literal["noise", "data", "local_mode"] = "noise",
        output: Output | None = None,
        quantum_step: Literal["paper", "exact"] = "paper",
        batch_size: int = 1000,
        fid_weights: str | None = None,
        fid_batch_size: int = 100,
        dirpath: str | None = None,
        save_best: bool = True,
        seed: int = 0,
        noise_density: list[float] | None = None,
        anneal_from: float | None = None,
        reference: Literal["test", "train", "val"] = "test",
        reference_size: int | None = None,
    ) -> None:
        from qidbm.metrics.fid_reference import REFERENCE_SPLITS

        if every_n_epochs < 1 or num_samples < 2:
            raise ValueError("FIDCallback needs every_n_epochs >= 1 and num_samples >= 2")
        if reference not in REFERENCE_SPLITS or (reference_size is not None and reference_size < 2):
            raise ValueError(f"FIDCallback reference must be one of {list(REFERENCE_SPLITS)} with reference_size None "
                             f"or >= 2, got {reference!r}, {reference_size}")
        self.reference, self.reference_size = reference, reference_size
        self.every_n_epochs = every_n_epochs
        self.num_samples = num_samples
        self.follow_sample_steps = num_steps is None
        self.spec = SamplingSpec(num_steps=1000 if num_steps is None else num_steps, start=start,
                                 output=output or "mean", quantum_step=quantum_step, batch_size=batch_size, noise_density=noise_density,
                                 anneal_from=1.0 if anneal_from is None else anneal_from)
        self.follow_training_anneal = anneal_from is None
        self.follow_sample_output = output is None
        self.fid_weights = fid_weights
        self.fid_batch_size = fid_batch_size
        self.dirpath = dirpath
        self.save_best = save_best
        self.seed = seed
        self.best_fid = float("inf")
        self.history: list[tuple[int, float]] = []
        self._acc = None

    def state_dict(self) -> dict:
        return {"best_fid": self.best_fid, "history": list(self.history)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best_fid = float(state_dict.get("best_fid", float("inf")))
        self.history = [tuple(h) for h in state_dict.get("history", [])]

    def _dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath) if self.dirpath else Path(trainer.log_dir or trainer.default_root_dir)

    def _accumulator(self, device):
        from qidbm.metrics.fid import FIDAccumulator

        if self._acc is None:
            self._acc = FIDAccumulator(self.fid_weights, batch_size=self.fid_batch_size, device=device, fuse_bn=True)
        return self._acc

    def compute(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float:
        """Draw samples and return their FID against the cached statistics of the reference split."""
        from qidbm.metrics import data_reference_key, frechet_distance, reference_size, reference_stats

        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "reference_images"):
            raise ValueError("FIDCallback needs a qidbm data module (with reference_images()) in the trainer")
        info = pl_module.data_info or dm.data_info()
        acc = self._accumulator(pl_module.device)
        split = self.reference
        n = reference_size(split, self.reference_size, dm.split_pixels(split).shape[0])
        mu_r, sigma_r = reference_stats(data_reference_key(info, split, n), lambda: dm.reference_images(split, n),
                                        accumulator=acc)
        x = draw_eval_samples(trainer, pl_module, self.num_samples, self.spec, self.seed, self.follow_training_anneal,
                              self.follow_sample_output, self.follow_sample_steps)
        images = visible_to_images(x, info)
        if not torch.isfinite(images).all():
            return float("nan")
        acc.reset()
        acc.update(images)
        mu, sigma = acc.compute_stats()
        acc.reset()
        self._last_images = images[:100]
        return float(frechet_distance(mu, sigma, mu_r, sigma_r, method="eigh"))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        fid = float("nan")
        if trainer.is_global_zero:
            fid = self.compute(trainer, pl_module)
            d = self._dir(trainer)
            save_grid(self._last_images, d / "fid_samples" / f"epoch={trainer.current_epoch:03d}.png")
            from torchvision.utils import make_grid

            log_image_to_loggers(trainer, "fid_samples", make_grid(self._last_images, nrow=10), trainer.global_step)
        fid = trainer.strategy.broadcast(fid, src=0)
        self.history.append((trainer.current_epoch, fid))
        pl_module.log("fid", fid, rank_zero_only=True)
        finite = math.isfinite(fid)
        if self.save_best and finite and fid < self.best_fid:
            self.best_fid = fid
            trainer.save_checkpoint(str(self._dir(trainer) / "best_fid.ckpt"))
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(
            f"epoch {trainer.current_epoch}: FID {fid:.3f} on {self.num_samples} samples "
            f"({self.spec.describe()}); best {self.best_fid:.3f}"
        )
