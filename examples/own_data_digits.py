"""Train an RBM on your own data: scikit-learn's 8x8 digits, an array [1797, 64] of grey levels.

    python examples/own_data_digits.py                  # 30 epochs, seconds on a CPU
    python examples/own_data_digits.py --max-steps 2    # a smoke run

``ArrayDataModule.from_arrays`` serves the rows of any array of values in [0, 1] (here binarised at
0.5); ``image_shape`` says how a row is drawn. Writes ``<out>/samples.png``.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import lightning as L
import torch
from sklearn.datasets import load_digits

import qidbm
from qidbm.data import ArrayDataModule
from qidbm.images import save_grid
from qidbm.lightning import BoltzmannModule
from qidbm.models import RBM


def make_module(model: RBM, lr: float) -> BoltzmannModule:
    """The training module: the defaults (persistent chains, PCD-1), plain SGD."""
    return BoltzmannModule(model, optimizer=functools.partial(torch.optim.SGD, lr=lr))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many updates (-1: no limit)")
    p.add_argument("--num-samples", type=int, default=100)
    p.add_argument("--out", default="runs/example_digits")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    L.seed_everything(a.seed)
    pixels = load_digits().data / 16.0  # [1797, 64], grey levels 0..16 scaled to [0, 1]
    data = ArrayDataModule.from_arrays(pixels, image_shape=[8, 8], encoding="binary", batch_size=a.batch_size,
                                       val_fraction=0.1)
    module = make_module(RBM(64, a.hidden), a.lr)
    trainer = L.Trainer(accelerator="cpu", max_epochs=a.max_epochs, max_steps=a.max_steps, logger=False,
                        enable_checkpointing=False, default_root_dir=a.out)
    trainer.fit(module, datamodule=data)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    images = qidbm.sample(module, a.num_samples, seed=a.seed)  # [n, 1, 8, 8] in [0, 1]
    save_grid(images, out / "samples.png")
    print(f"wrote {out / 'samples.png'} ({len(images)} samples of {tuple(images.shape[1:])})")


if __name__ == "__main__":
    main()
