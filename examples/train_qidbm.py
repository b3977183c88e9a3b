"""Train a small QiDBM on binarised MNIST the Lightning way, then save a grid of its samples.

    python examples/train_qidbm.py                      # 784-64-32 QiDBM, one epoch (a minute or two on a CPU)
    python examples/train_qidbm.py --max-steps 2        # a smoke run

The MNIST files are read from ``--data-root``, else ``$QIDBM_DATA_DIR``, else ``./data`` (downloaded
there if missing). Writes ``<out>/samples.png`` and ``<out>/qidbm.ckpt``, a checkpoint that
``qidbm.load``, ``qidbm sample --ckpt_path`` and ``qidbm evaluate --ckpt_path`` read.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path

import lightning as L
import torch

import qidbm
from qidbm.data import MNISTDataModule
from qidbm.images import save_grid
from qidbm.lightning import BoltzmannModule
from qidbm.models import QiDBM


def make_module(model: QiDBM, lr: float) -> BoltzmannModule:
    """The training module: the defaults (persistent chains, PCD-1, the paper's quantum step), plain SGD."""
    return BoltzmannModule(model, optimizer=functools.partial(torch.optim.SGD, lr=lr))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, nargs=2, default=[64, 32], metavar=("H1", "H2"), help="hidden layer sizes")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--max-epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many updates (-1: no limit)")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--data-root", default=None)
    p.add_argument("--out", default="runs/example_qidbm")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    L.seed_everything(a.seed)
    data = MNISTDataModule(root=a.data_root, encoding="binary", batch_size=a.batch_size)
    model = QiDBM([784, *a.hidden], quantum_layers=[1])  # quantum first hidden layer
    module = make_module(model, a.lr)
    trainer = L.Trainer(accelerator="cpu", max_epochs=a.max_epochs, max_steps=a.max_steps, logger=False,
                        enable_checkpointing=False, default_root_dir=a.out)
    trainer.fit(module, datamodule=data)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer.save_checkpoint(out / "qidbm.ckpt")
    images = qidbm.sample(module, a.num_samples, seed=a.seed)  # the module's default sampling, decoded
    save_grid(images, out / "samples.png")
    print(f"wrote {out / 'samples.png'} and {out / 'qidbm.ckpt'}")


if __name__ == "__main__":
    main()
