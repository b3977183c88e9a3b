"""Time per update against hidden size and batch, with the matmul limit beside it (DBM and QiDBM).

For each model (``--models``: DBM and QiDBM, layer 1 quantum), hidden size ``s`` (``--sizes``: the
784-s-s machines) and batch (``--batches``), the real training step (``BoltzmannModule.doem_loss``
+ backward + SGD step, no Lightning; PCD-1 as in the paper, or ``--workload recipe``: the CPU
recipe's step, noise start + 20 sweeps, mean-field positive phase, centering) is timed: median of
``--reps`` calls after one warm-up, with its spread (interquartile range / median) and the process
CPU time. Beside it the step's **matmul limit**: every matrix product of one step is recorded
(shapes and layouts, ``bench/throughput.py``'s ``MatmulRecorder``) and replayed alone, best of 3;
the limit is their sum and ``ratio = limit / step time`` is the share of the step that the products
need at their best speed. ``--bitplanes`` adds the 8-bit-MNIST machine of the paper (6272-6272-6272,
batch 600, PCD-1). Data: random binary batches at MNIST's mean pixel density (0.13): a dense step
costs the same whatever the values.

Usage::

    python bench/scaling.py --threads 1 --bitplanes        # the table of issue 17 (~10 min, 1 idle core)
    python bench/scaling.py --sizes 16,32 --batches 8 --reps 2 --out /tmp/s   # a smoke run

Writes ``<out>.json`` and ``<out>.md`` (default ``bench/results/scaling``) with the command,
machine, thread count and the 1-minute load average before and after.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from throughput import MatmulLimit, count_step, load_average, machine, mm_flops, summarize, time_calls  # noqa: E402

from qidbm.lightning.module import BoltzmannModule  # noqa: E402
from qidbm.models import DBM, QiDBM  # noqa: E402


def build(model: str, sizes: list[int]) -> torch.nn.Module:
    torch.manual_seed(0)
    if model == "DBM":
        return DBM(sizes)
    if model == "QiDBM":
        return QiDBM(sizes, quantum_layers=[1])
    raise ValueError(f"model must be DBM or QiDBM, got {model!r}")


def training_step(model: torch.nn.Module, batch: int, workload: str, precision: str, fused: bool = False) -> Any:
    """The bare training step of ``model`` on random binary batches, and its module."""
    kw: dict[str, Any] = {"chain_seed": 0, "init_visible_bias": False, "matmul_precision": precision,
                          "fused_kernels": fused}
    if workload == "recipe":
        kw.update(cd_steps=20, negative_start="noise", positive="mean_field", centering=True, lr=0.005, momentum=0.9)
    else:
        kw.update(cd_steps=1, negative_start="persistent")
    module = BoltzmannModule(model, **kw)
    module._generator = torch.Generator().manual_seed(0)  # what on_fit_start does, without a Trainer
    g = torch.Generator().manual_seed(1)
    n = model.layer_sizes[0]
    batches = [(torch.rand(batch, n, generator=g) < 0.13).float() for _ in range(2)]
    if workload == "recipe":
        from qidbm.lightning.centering import initial_offsets

        module._offsets = initial_offsets(model, batches[0].mean(0))
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    state = {"i": 0}

    def step() -> None:
        v = batches[state["i"] % 2]
        state["i"] += 1
        opt.zero_grad(set_to_none=True)
        loss, _ = module.doem_loss(v)
        loss.backward()
        opt.step()

    return step


def measure(model_name: str, sizes: list[int], batch: int, workload: str, precision: str, reps: int,
            mm: MatmulLimit, fused: bool = False) -> dict[str, Any]:
    model = build(model_name, sizes)
    step = training_step(model, batch, workload, precision, fused)
    step()  # warm-up: allocates the persistent chains (and compiles the fused kernels)
    _, calls = count_step(step)
    lim = mm.limit(calls)
    times = time_calls(step, warmup=0, min_reps=reps, min_time=0.0, max_reps=reps)
    s = summarize(times)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {
        "model": model_name, "sizes": sizes, "batch": batch, "workload": workload, "precision": precision, "fused": fused,
        "step_s": s["median_s"], "cpu_s": s["cpu_median_s"], "spread": (q[2] - q[0]) / s["median_s"],
        "reps": len(times), "gflop": mm_flops(calls) / 1e9, "limit_s": lim["limit_s"],
        "ratio": lim["limit_s"] / s["median_s"], "samples_per_s": batch / s["median_s"],
    }


def markdown(res: dict[str, Any]) -> str:
    lines = [
        f"Command: `{res['command']}`",
        f"Machine: {res['machine']['cpu']} ({res['machine']['description']}), torch {res['machine']['torch']}, "
        f"allocator: {res['machine'].get('allocator', 'glibc defaults')}, {res['threads']} thread(s); load average {res['load_before']:.2f} before, {res['load_after']:.2f} after.",
        f"Workload: {res['workload']} ({'PCD-1' if res['workload'] == 'pcd1' else 'noise start, 20 sweeps, mean field, centering'}), "
        f"products in {res['precision']}{', fused kernels' if res.get('fused') else ''}; matmul limit replayed in float32.",
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
    torch.set_num_threads(a.threads)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    configs = [([784, s, s], b) for s in map(int, a.sizes.split(",")) for b in map(int, a.batches.split(","))]
    if a.bitplanes:
        configs.append(([6272, 6272, 6272], 600))
    mm = MatmulLimit(reps=3)
    res: dict[str, Any] = {
        "command": "python bench/scaling.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(), "threads": a.threads, "workload": a.workload, "precision": a.matmul_precision,
        "fused": a.fused, "load_before": load_average()[0], "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "rows": [],
    }
    from tqdm.auto import tqdm

    for sizes, batch, model_name in tqdm([(c, b, m) for c, b in configs for m in models], desc="configurations"):
        res["rows"].append(measure(model_name, sizes, batch, a.workload, a.matmul_precision, a.reps, mm, a.fused))
    res["load_after"] = load_average()[0]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=1))
    md = markdown(res)
    out.with_suffix(".md").write_text(md)
    print(md)
    return res


if __name__ == "__main__":
    main()
