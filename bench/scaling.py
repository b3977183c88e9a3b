"""Time per update against hidden size and batch, with the matmul limit beside it (DBM and QiDBM).

For each model (``--models``: DBM and QiDBM, layer 1 quantum), hidden size ``s`` (``--sizes``: the
784-s-s machines) and batch (``--batches``), ``--reps`` training updates (``module.fit_step``: loss,
backward, centering transform, optimizer step; bench/harness.py) are timed after one warm-up: the
median, its spread (interquartile range / median) and the process CPU time. The update is PCD-1 as in
the DO-EM paper (``--workload pcd1``: ``Persistent()``, ``ClampedGibbs(5)``, SGD lr 1e-3) or the CPU
recipe's (``--workload recipe``: every training setting of ``configs/cpu/mnist_binary/base.yaml``:
noise start and 20 sweeps, mean-field positive phase, centering, SGD with momentum; the products'
precision is ``--matmul-precision``, not the recipe's). Beside it the update's **matmul limit**: every
matrix product of one update is recorded (shape, layout, dtype) and replayed alone, best of 3; the
limit is their sum and ``ratio = limit / update time`` is the share of the update that the products
need at their best speed. ``--bitplanes`` adds the 8-bit-MNIST machine of the paper (6272-6272-6272,
batch 600). Data: random binary batches at MNIST's mean pixel density (0.13): a dense update costs
the same whatever the values.

Usage::

    python bench/scaling.py --threads 1 --bitplanes        # every size (~10 min, 1 idle core)
    python bench/scaling.py --sizes 16,32 --batches 8 --reps 2 --out /tmp/s   # a check that it runs

Writes ``<out>.json`` and ``<out>.md`` (default ``bench/results/scaling``) headed by the command,
date, commit, hardware, thread count and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (REPO, MatmulLimit, count_products, header, header_lines, make_module,  # noqa: E402
                     optimizer_of, random_batches, recipe, set_threads, start_fit, time_updates)

import torch  # noqa: E402

from qidbm.estimators import Persistent  # noqa: E402
from qidbm.models import DBM, QiDBM  # noqa: E402

RECIPE = ("configs/cpu/mnist_binary/base.yaml", "configs/cpu/mnist_binary/dbm_498.yaml")


def build(model: str, sizes: list[int]) -> torch.nn.Module:
    torch.manual_seed(0)
    if model == "DBM":
        return DBM(sizes)
    if model == "QiDBM":
        return QiDBM(sizes, quantum_layers=[1])
    raise ValueError(f"model must be DBM or QiDBM, got {model!r}")


def settings(workload: str) -> dict[str, Any]:
    """The module's training settings for a workload (fresh estimator objects on every call)."""
    if workload == "recipe":
        return recipe(RECIPE)
    return {"negative": Persistent()}


def measure(model_name: str, sizes: list[int], batch: int, workload: str, precision: str, reps: int,
            limit: MatmulLimit, fused: bool = False) -> dict[str, Any]:
    batches = random_batches(sizes[0], batch)
    module = make_module(build(model_name, sizes), **{**settings(workload), "matmul_precision": precision,
                                                      "fused_kernels": fused})
    start_fit(module, batches)
    opt = optimizer_of(module)
    # one warm-up update: allocates the persistent chains and compiles the fused kernels
    t = time_updates(module, batches, reps, warmup=1, optimizer=opt)
    products = count_products(lambda: module.fit_step(batches[0], opt))
    lim = limit.seconds(products)
    return {
        "model": model_name, "sizes": sizes, "batch": batch, "workload": workload, "precision": precision, "fused": fused,
        "step_s": t.median, "cpu_s": t.cpu_median, "spread": t.spread, "reps": reps,
        "gflop": products.product_flops / 1e9, "limit_s": lim, "ratio": lim / t.median, "samples_per_s": batch / t.median,
    }


def markdown(res: dict[str, Any]) -> str:
    workload = "PCD-1" if res["workload"] == "pcd1" else "the CPU recipe's: noise start, 20 sweeps, mean field, centering"
    lines = header_lines(res["header"]) + [
        f"Workload: {res['workload']} ({workload}), products in {res['precision']}{', fused kernels' if res.get('fused') else ''}; "
        "the matmul limit replays each product at its own dtype.",
        "",
        "| model | layers | batch | s / update (median) | spread | CPU s | GFLOP / update | matmul limit s | limit / time | samples/s | quantum / classical |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    classical = {(tuple(r["sizes"]), r["batch"]): r["step_s"] for r in res["rows"] if r["model"] == "DBM"}
    for r in res["rows"]:
        twin = classical.get((tuple(r["sizes"]), r["batch"])) if r["model"] == "QiDBM" else None
        flag = " (noisy)" if r["spread"] > 0.10 else ""
        ratio = "" if twin is None else f"{r['step_s'] / twin:.3f}"
        lines.append(
            f"| {r['model']} | {'-'.join(map(str, r['sizes']))} | {r['batch']} | {r['step_s']:.4g}{flag} | {r['spread']:.2f} | "
            f"{r['cpu_s']:.4g} | {r['gflop']:.3g} | {r['limit_s']:.4g} | {r['ratio']:.2f} | {r['samples_per_s']:,.0f} | "
            f"{ratio} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="DBM,QiDBM")
    p.add_argument("--sizes", default="498,1000,2000,4000,6272", help="hidden units per layer of the 784-s-s machines")
    p.add_argument("--batches", default="100,600")
    p.add_argument("--workload", choices=["pcd1", "recipe"], default="pcd1")
    p.add_argument("--matmul-precision", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--bitplanes", action="store_true", help="add the 8-bit-MNIST machine 6272-6272-6272 at batch 600")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--fused", action="store_true", help="fused kernels: the closed forms compiled (qidbm.fused)")
    p.add_argument("--reps", type=int, default=5, help="timed calls per configuration (after one warm-up)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "scaling"), help="output path without extension")
    a = p.parse_args(argv)
    if a.reps < 2:
        p.error(f"--reps must be at least 2 (the spread needs two calls), got {a.reps}")
    set_threads(a.threads)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    configs = [([784, s, s], b) for s in map(int, a.sizes.split(",")) for b in map(int, a.batches.split(","))]
    if a.bitplanes:
        configs.append(([6272, 6272, 6272], 600))
    limit = MatmulLimit(reps=3)
    res: dict[str, Any] = {"header": header(__file__, argv), "threads": a.threads, "workload": a.workload,
                           "precision": a.matmul_precision, "fused": a.fused, "rows": []}
    from tqdm.auto import tqdm

    for sizes, batch, model_name in tqdm([(c, b, m) for c, b in configs for m in models], desc="configurations"):
        res["rows"].append(measure(model_name, sizes, batch, a.workload, a.matmul_precision, a.reps, limit, a.fused))
    res["header"]["load_end"] = os.getloadavg()[0]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
