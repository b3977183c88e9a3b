"""Wall-clock ratios that survive a noisy machine: each pair of workloads timed interleaved.

A ratio of two timings taken minutes apart on a shared 2-core machine mostly measures the load.
Here each pair (A, B) is timed in rounds: every round runs ``--steps`` calls of A and of B back to
back (the order alternates between rounds), and gives one ratio ``t_B / t_A`` of their median
call times. A pair reports the median of its round ratios and their spread (interquartile range /
median), the median call times (wall and process CPU time), and the 1-minute load average before
and after. A pair whose spread exceeds ``--max-spread`` is measured again (``--retries`` times) and
flagged ``noisy`` if it still does; the figures of a flagged pair are not to be published.

Pairs (``--pairs``, default all):

* ``qidbm/dbm``, ``qrbm/rbm``, ``qgrbm/grbm``: a quantum model against its classical twin, one training
  update (``module.fit_step``: loss, backward, centering transform, optimizer step; bench/harness.py)
  and one block Gibbs sweep;
* ``bf16/fp32``: ``matmul_precision="bfloat16"`` against float32, same updates and sweeps;
* ``fused/eager``: ``fused_kernels=True`` (the closed forms compiled, :mod:`qidbm.fused`) against the
  eager update (``--fused`` instead turns them on for both sides of every pair);
* ``sklearn/rbm``: scikit-learn's ``BernoulliRBM`` PCD-1 update (``partial_fit`` on a batch of 600)
  against the RBM 784-500 PCD-1 update at batch 600 (float32, fused float32, fused bfloat16): the
  ratio is the RBM's speed-up;
* ``lightning/bare``: the update inside ``Trainer.fit`` (CSV logging every 50 updates, no
  checkpoints) against the bare update.

Workloads: ``recipe`` = the CPU recipes' training settings, read from their configs (float32
products unless the pair sets otherwise): DBM/QiDBM 784-498-498 ``configs/cpu/mnist_binary``
(batch 100, noise start, 20 sweeps, mean-field positive phase, centering), GRBM/QGRBM 784-500
``configs/cpu/grbm`` (batch 100, noise start, 20 sweeps), RBM/QRBM 784-500 (no recipe of their
own) the binary recipe without centering; ``pcd1`` = batch 600, ``Persistent()`` (PCD-1), SGD lr
1e-3; ``sweep`` = one block Gibbs sweep of 600 chains (paper step). Weights start at a standard
deviation of 0.05, like a trained machine's. Data: real MNIST batches from ``$QIDBM_DATA_DIR``.

Usage::

    python bench/paired.py --threads 1,2              # every pair (~10 min on 2 idle cores)
    python bench/paired.py --pairs qidbm/dbm --threads 1 --rounds 5 --steps 5   # a quick look

Writes ``bench/results/paired.json`` and ``.md`` (``--tag`` changes the stem), headed by the command,
date, commit and hardware.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (REPO, MatmulLimit, Timings, header, header_lines, make_module, mnist_batches,  # noqa: E402
                     optimizer_of, recipe, set_threads, start_fit, time_calls, time_sweeps, time_updates)

import torch  # noqa: E402

from qidbm.estimators import Persistent  # noqa: E402
from qidbm.lightning import BoltzmannModule  # noqa: E402
from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM  # noqa: E402

MODELS: dict[str, Callable[[], torch.nn.Module]] = {
    "rbm": lambda: RBM(784, 500),
    "qrbm": lambda: QRBM(784, 500),
    "grbm": lambda: GRBM(784, 500),
    "qgrbm": lambda: QGRBM(784, 500),
    "dbm": lambda: DBM([784, 498, 498]),
    "qidbm": lambda: QiDBM([784, 498, 498], quantum_layers=[1]),
}
TWINS = {"qidbm/dbm": ("dbm", "qidbm"), "qrbm/rbm": ("rbm", "qrbm"), "qgrbm/grbm": ("grbm", "qgrbm")}
PAIRS = (*TWINS, "bf16/fp32", "fused/eager", "sklearn/rbm", "lightning/bare")
BINARY_RECIPE = ("configs/cpu/mnist_binary/base.yaml", "configs/cpu/mnist_binary/dbm_498.yaml")
GRBM_RECIPE = ("configs/cpu/grbm/base.yaml", "configs/cpu/grbm/mnist_grbm.yaml")
Timer = Callable[[int], Timings]  # n -> the times of n calls


def settings(name: str, workload: str) -> dict[str, Any]:
    """The module's training settings of a model and workload (fresh estimator objects every call)."""
    if workload != "recipe":
        return {"negative": Persistent()}
    if name in ("grbm", "qgrbm"):
        return recipe(GRBM_RECIPE)
    s = recipe(BINARY_RECIPE)
    if name in ("rbm", "qrbm"):
        s["centering"] = None
    return s


def module_for(name: str, workload: str, data: dict[str, list[torch.Tensor]], precision: str = "float32",
               fused: bool = False) -> BoltzmannModule:
    """A module ready for its first update, its weights scaled like a trained machine's."""
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # 0.01-std initial weights make every unit a coin flip: use trained-like scales
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.05)
    module = make_module(model, **{**settings(name, workload), "matmul_precision": precision, "fused_kernels": fused})
    return start_fit(module, batches_for(name, workload, data))


def batches_for(name: str, workload: str, data: dict[str, list[torch.Tensor]]) -> list[torch.Tensor]:
    return data[("continuous" if name in ("grbm", "qgrbm") else "binary", 600 if workload in ("pcd1", "sweep") else 100)]


def updates(module: BoltzmannModule, batches: list[torch.Tensor]) -> Timer:
    opt = optimizer_of(module)  # one optimizer across rounds: its momentum carries on as in a run
    return lambda n: time_updates(module, batches, n, warmup=1, optimizer=opt)


def sweeps(module: BoltzmannModule, chains: int) -> Timer:
    return lambda n: time_sweeps(module, chains, n, warmup=1)[0]


def sklearn_update(batches: list[torch.Tensor]) -> Timer:
    """One PCD-1 update of scikit-learn's ``BernoulliRBM(500)`` (``partial_fit`` on one batch of 600:
    its ``_fit`` step, float32 like the input), cycling over the same batches as the RBM update."""
    from sklearn.neural_network import BernoulliRBM

    xs = [b.numpy().astype("float32") for b in batches]
    rbm = BernoulliRBM(n_components=500, batch_size=len(xs[0]), n_iter=1, learning_rate=0.1, random_state=0)
    rbm.partial_fit(xs[0])  # allocates the weights and the persistent chains
    it = itertools.cycle(xs)
    return lambda n: time_calls(lambda: rbm.partial_fit(next(it)), n, warmup=1)


class LightningSteps:
    """Per-update wall and CPU times inside ``Trainer.fit`` for ``n`` updates (CSV logging every 50)."""

    def __init__(self, module: BoltzmannModule, batches: list[torch.Tensor], log_dir: Path) -> None:
        self.module, self.batches, self.log_dir = module, batches, log_dir

    def __call__(self, n: int, warm: int = 2) -> Timings:
        import lightning as L
        from lightning.pytorch.loggers import CSVLogger
        from torch.utils.data import DataLoader

        stamps: list[tuple[float, float]] = []

        class Stamp(L.Callback):
            def on_train_batch_end(self, *args, **kwargs) -> None:
                stamps.append((time.perf_counter(), time.process_time()))

        loader = DataLoader(self.batches * (n + warm + 1), batch_size=None, shuffle=False)
        trainer = L.Trainer(
            max_steps=n + warm + 1, accelerator="cpu", devices=1, logger=CSVLogger(self.log_dir), log_every_n_steps=50,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
            callbacks=[Stamp()],
        )
        trainer.fit(self.module, train_dataloaders=loader)
        s = stamps[warm:]
        return Timings([b[0] - a[0] for a, b in zip(s, s[1:])], [b[1] - a[1] for a, b in zip(s, s[1:])])


def measure_pair(label: str, a: Timer, b: Timer, rounds: int, steps: int) -> dict[str, Any]:
    """Interleaved rounds of A and B; the ratio is B / A."""
    ratios, cpu_ratios, ta, tb, ca, cb = [], [], [], [], [], []
    load0 = os.getloadavg()[0]
    for r in range(rounds):
        if r % 2 == 0:
            x, y = a(steps), b(steps)
        else:
            y, x = b(steps), a(steps)
        ratios.append(y.median / x.median)
        cpu_ratios.append(y.cpu_median / x.cpu_median)
        ta.append(x.median), tb.append(y.median), ca.append(x.cpu_median), cb.append(y.cpu_median)
    spread = Timings(ratios, ratios).spread
    return {"pair": label, "ratio": statistics.median(ratios), "spread": spread, "cpu_ratio": statistics.median(cpu_ratios),
            "a_ms": 1e3 * statistics.median(ta), "b_ms": 1e3 * statistics.median(tb),
            "a_cpu_ms": 1e3 * statistics.median(ca), "b_cpu_ms": 1e3 * statistics.median(cb),
            "rounds": rounds, "steps": steps, "load_before": load0, "load_after": os.getloadavg()[0],
            "round_ratios": ratios}


def pair_cases(pair: str, data: dict, tmp: Path, fused: bool = False) -> list[tuple[str, Timer, Timer]]:
    """(label, A, B) timers of one pair; ``fused``: both sides with fused kernels (except in ``fused/eager``)."""
    def timer(name, workload, precision="float32", fused=fused) -> Timer:
        m = module_for(name, workload, data, precision, fused)
        return sweeps(m, 600) if workload == "sweep" else updates(m, batches_for(name, workload, data))

    cases = []
    if pair in TWINS:
        c, q = TWINS[pair]
        for w in ("recipe", "pcd1", "sweep"):
            cases.append((f"{q}/{c} {w}", timer(c, w), timer(q, w)))
    elif pair == "bf16/fp32":
        for name in ("dbm", "qidbm", "rbm", "grbm"):
            for w in ("recipe", "sweep"):
                cases.append((f"{name} {w} bf16/fp32", timer(name, w), timer(name, w, "bfloat16")))
    elif pair == "fused/eager":
        for name in ("rbm", "qrbm", "dbm", "qidbm"):
            for w in ("recipe", "pcd1"):
                cases.append((f"{name} {w} fused/eager", timer(name, w, fused=False), timer(name, w, fused=True)))
    elif pair == "sklearn/rbm":
        sk = sklearn_update(batches_for("rbm", "pcd1", data))
        for precision, flag in (("float32", False), ("float32", True), ("bfloat16", True)):
            label = f"rbm pcd1 sklearn/{precision}{' fused' if flag else ''}"
            cases.append((label, timer("rbm", "pcd1", precision, fused=flag), sk))
    elif pair == "lightning/bare":
        for name in ("dbm", "qidbm"):
            fit = LightningSteps(module_for(name, "recipe", data), batches_for(name, "recipe", data), tmp / name)
            cases.append((f"{name} recipe lightning/bare", timer(name, "recipe"), fit))
    return cases


MATMUL_SHAPES = ((100, 784, 498), (100, 498, 498), (600, 784, 500), (600, 498, 498))


def matmul_rates(limit: MatmulLimit) -> list[dict[str, Any]]:
    """GFLOP/s of float32 and bfloat16 products at the recipes' shapes (best of the limit's repetitions)."""
    rows = []
    for m, k, n in MATMUL_SHAPES:
        row = {"shape": f"{m}x{k}x{n}"}
        for dtype in ("float32", "bfloat16"):
            row[f"gflops_{dtype}"] = 2 * m * k * n / limit.product_seconds((1, m, k, n, "N", "N", dtype)) / 1e9
        rows.append(row)
    return rows


def markdown(result: dict[str, Any]) -> str:
    lines = header_lines(result["header"])
    for t, rates in result.get("matmul", {}).items():
        lines += ["", f"Matrix products, {t} thread(s), GFLOP/s (best of 9, preallocated output):", "",
                  "| shape (m x k x n) | float32 | bfloat16 |", "|---|---:|---:|"]
        lines += [f"| {r['shape']} | {r['gflops_float32']:.0f} | {r['gflops_bfloat16']:.0f} |" for r in rates]
    lines += ["", "Pairs (B / A, interleaved rounds; spread = interquartile range / median of the round ratios):", "",
              "| threads | pair | ratio B/A (wall) | spread | CPU-time ratio | A ms | B ms | load before/after | flag |",
              "|---:|---|---:|---:|---:|---:|---:|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['threads']} | {r['pair']} | {r['ratio']:.3f} | {r['spread']:.3f} | {r['cpu_ratio']:.3f} | "
                     f"{r['a_ms']:.1f} | {r['b_ms']:.1f} | {r['load_before']:.2f} / {r['load_after']:.2f} | {r['flag']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", default=",".join(PAIRS), help=f"comma-separated, from {', '.join(PAIRS)}")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="calls of each side per round")
    p.add_argument("--max-spread", type=float, default=0.10, help="interquartile range / median above which a pair is redone")
    p.add_argument("--retries", type=int, default=2)
    p.add_argument("--only", default=None, help="substring a case label must contain")
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--tag", default="paired")
    p.add_argument("--fused", action="store_true", help="fused kernels (torch.compile) on both sides of every pair")
    args = p.parse_args(argv)
    pairs = [s.strip() for s in args.pairs.split(",") if s.strip()]
    bad = [s for s in pairs if s not in PAIRS]
    if bad:
        p.error(f"unknown pairs {bad}; choose from {list(PAIRS)}")
    data = {}
    for enc in ("binary", "continuous"):
        data[enc, 600] = mnist_batches(4, 600, enc)
        data[enc, 100] = list(data[enc, 600][0][:400].split(100))  # the recipes' batch, from the same rows
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{args.tag}_lightning_logs"
    result: dict[str, Any] = {"header": header(__file__, argv), "matmul": {}, "rows": []}
    from tqdm.auto import tqdm

    for threads in [int(t) for t in args.threads.split(",")]:
        set_threads(threads)  # numpy's BLAS (scikit-learn) gets the same threads
        result["matmul"][str(threads)] = matmul_rates(MatmulLimit(reps=9))
        cases = [c for pair in pairs for c in pair_cases(pair, data, tmp, args.fused) if not args.only or args.only in c[0]]
        for label, a, b in tqdm(cases, desc=f"{threads} thread(s)"):
            for attempt in range(args.retries + 1):
                row = measure_pair(label, a, b, args.rounds, args.steps)
                row.update(threads=threads, attempt=attempt + 1)
                if row["spread"] <= args.max_spread:
                    break
            row["flag"] = "" if row["spread"] <= args.max_spread else "noisy"
            result["rows"].append(row)
            tqdm.write(f"{threads}t {label}: {row['ratio']:.3f} (spread {row['spread']:.3f}) {row['flag']}")
    result["header"]["load_end"] = os.getloadavg()[0]
    (out_dir / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{args.tag}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
