"""How the PCD update order changes training: ``Persistent(update="sweep")`` against ``update="fused"``.

Trains a 784-498-498 DBM on binarised MNIST (batch 100, SGD lr 0.02, 500 persistent chains, 2
clamped Gibbs sweeps in the positive phase) for ``--steps`` updates with each order, one
``module.fit_step`` per batch (bench/harness.py), and prints every 100 updates the mean loss of
those 100 updates (``F(data) - F(chains)`` as each update measured it), the mean free energy of the
chains under the current weights and the norm of W_0. Both orders are valid PCD kernels at fixed
parameters (tests/lightning/test_module.py); this shows whether their training dynamics differ at this learning
rate. The table is headed by the command, date, commit and hardware.

    python scripts/pcd_order.py --seeds 0 1 --steps 300
    python scripts/pcd_order.py --steps 3 --hidden 16 --every 1       # a check that it runs
"""

from __future__ import annotations

import argparse
import functools
import itertools
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))  # bench/harness.py

from harness import batches_of, header, header_lines, make_module, optimizer_of, set_threads, start_fit  # noqa: E402

import lightning as L  # noqa: E402
import torch  # noqa: E402

from qidbm.data import MNISTDataModule  # noqa: E402
from qidbm.estimators import ClampedGibbs, Persistent  # noqa: E402
from qidbm.models import DBM  # noqa: E402


def run(order: str, seed: int, steps: int, hidden: int, every: int, root: str | None) -> list[tuple[int, float, float, float]]:
    """``(updates, mean loss of the last `every`, mean F(chains), norm W_0)`` every ``every`` updates."""
    L.seed_everything(seed, verbose=False)
    dm = MNISTDataModule(root=root, encoding="binary", batch_size=100, download=False)
    module = make_module(DBM([784, hidden, hidden]), chain_seed=seed,
                         negative=Persistent(num_chains=500, update=order), positive=ClampedGibbs(2),
                         optimizer=functools.partial(torch.optim.SGD, lr=0.02))
    start_fit(module, batches_of(dm, 20))  # visible biases from the first batches, as a fit's DataInit does
    opt = optimizer_of(module)
    model, out, losses = module.model, [], []
    for i, v in enumerate(itertools.islice(dm.train_dataloader(), steps), 1):
        losses.append(float(module.fit_step(v, opt)))
        if i % every == 0:
            with torch.no_grad():  # reads the chains and weights only: the run's random stream is untouched
                f_chains = float(model.marginal_free_energy(module.chains, module.summed_layers).mean())
            out.append((i, statistics.fmean(losses[-every:]), f_chains, float(model.layer_weight(0).detach().norm())))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=100, help="report every this many updates")
    p.add_argument("--hidden", type=int, default=498, help="units per hidden layer")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data-root", default=None, help="default $QIDBM_DATA_DIR")
    a = p.parse_args(argv)
    set_threads(a.threads)
    print("\n".join(header_lines(header(__file__, argv))) + "\n")
    print("| order | seed | updates | mean loss | F(chains) | norm W_0 |")
    print("|---|---:|---:|---:|---:|---:|")
    for seed in a.seeds:
        for order in ("sweep", "fused"):
            for step, loss, fc, wn in run(order, seed, a.steps, a.hidden, a.every, a.data_root):
                print(f"| {order} | {seed} | {step} | {loss:.2f} | {fc:.1f} | {wn:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
