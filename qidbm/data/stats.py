"""Data report: sizes, mean pixel, loader speed and the effect of the continuous std floor.

Run ``python -m qidbm.data.stats [--root DIR] [--datasets MNIST FashionMNIST]``. Prints the
command, the hardware and ``torch.__version__`` with every number, as the project requires.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from .datamodules import DATAMODULES
from .encodings import Encoder, compute_normalization, make_info


def _hardware() -> str:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()}-core CPU ({platform.machine()}), {gpu}, torch {torch.__version__}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qidbm.data.stats", description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help="data root (default $QIDBM_DATA_DIR or ./data)")
    p.add_argument("--cache-dir", default=None, help="cache root (default $QIDBM_CACHE_DIR or ~/.cache/qidbm/data)")
    p.add_argument("--datasets", nargs="+", default=["MNIST", "FashionMNIST"], choices=["MNIST", "FashionMNIST"])
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    p.add_argument("--repeats", type=int, default=3, help="epochs timed per encoding; the fastest is shown")
    p.add_argument("--floors", nargs="+", type=float, default=[1e-3, 1e-2, 5e-2, 0.1, 0.2])
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    print(f"command: python -m qidbm.data.stats {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(f"hardware: {_hardware()}")
    for name in a.datasets:
        cls = DATAMODULES[name]
        t0 = time.perf_counter()
        dm = cls(root=a.root, cache_dir=a.cache_dir, download=False)
        dm.setup()
        train, test = dm.split_pixels("train"), dm.split_pixels("test")
        print(f"\n{name}: setup {time.perf_counter() - t0:.2f} s; train {tuple(train.shape)}, test {tuple(test.shape)}")
        print(f"  mean pixel (0..255): train {train.double().mean():.2f}, test {test.double().mean():.2f}")
        for enc in ("binary", "bitplanes", "continuous"):
            dm = cls(root=a.root, cache_dir=a.cache_dir, download=False, encoding=enc)
            dm.setup()
            loader = dm.train_dataloader()
            dt = dc = float("inf")
            for _ in range(a.repeats):
                t0, c0 = time.perf_counter(), time.process_time()
                n = sum(b.shape[0] for b in loader)
                dt, dc = min(dt, time.perf_counter() - t0), min(dc, time.process_time() - c0)
            # CPU time is reported too: on a shared machine the wall time mostly measures the neighbours.
            print(
                f"  {enc:10s} n_visible {dm.n_visible:5d}: one epoch {n} rows in {len(loader)} batches of "
                f"{dm.batch_size} (best of {a.repeats}): wall {dt:.2f} s ({1e3 * dt / len(loader):.1f} ms/batch), "
                f"CPU {dc:.2f} s ({1e3 * dc / len(loader):.1f} ms/batch, torch threads {torch.get_num_threads()})"
            )
        print("  continuous, per-pixel normalisation: std floor -> pixels floored, max |v|, fraction |v| > 10")
        for floor in a.floors:
            norm = compute_normalization(train, "pixel", floor)
            v = Encoder(make_info(name, "continuous", [1, 28, 28], norm)).encode_uint8(train)
            floored = sum(s <= floor for s in norm["std"])
            print(f"    {floor:<6g} {floored:4d}  {v.abs().max():8.2f}  {(v.abs() > 10).double().mean():.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
