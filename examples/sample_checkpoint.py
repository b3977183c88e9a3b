"""Sample a shipped checkpoint into a PNG grid.

    python examples/sample_checkpoint.py                                   # 64 binary MNIST digits of the DBM
    python examples/sample_checkpoint.py --ckpt checkpoints/grbm_mnist.ckpt --out grbm.png

``qidbm.sample`` draws the way ``qidbm sample`` does (same defaults, same seed: the same images):
the machine's trained protocol, here noise then the training's 20 Gibbs sweeps.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import qidbm
from qidbm.images import save_grid

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ckpt", default=str(REPO / "checkpoints" / "dbm_mnist_binary.ckpt"), help="checkpoint file")
    p.add_argument("--num-samples", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-steps", type=int, default=None, help="Gibbs sweeps (default: as the machine was trained)")
    p.add_argument("--out", default="samples.png", help="PNG file to write")
    a = p.parse_args(argv)

    loaded = qidbm.load(a.ckpt)  # the machine, its data info and its default sampling
    print(loaded)
    images = qidbm.sample(loaded, a.num_samples, seed=a.seed, num_steps=a.num_steps)  # [n, 1, 28, 28] in [0, 1]
    save_grid(images, a.out)
    print(f"wrote {a.out}: {len(images)} samples of {tuple(images.shape[1:])}")


if __name__ == "__main__":
    main()
