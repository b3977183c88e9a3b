"""Training updates/s and sampling sweeps/s of every qidbm model against the machine's matmul limit.

For each machine, precision of its matrix products (``--matmul-precision``) and thread count
(``--threads``), on real MNIST batches of ``--batch`` (600) rows:

* training: ``module.fit_step`` (bench/harness.py: loss, backward, SGD lr 1e-3 step) for CD-1
  (``FromData(1)``), CD-5 (``FromData(5)``) and PCD-1 (``Persistent()``); DBMs fill their even
  layer by the default positive phase (``ClampedGibbs(5)``); median of ``--reps`` updates after
  one warm-up, with the spread (interquartile range / median);
* sampling: block Gibbs sweeps of ``--batch`` chains by the paper step, and for quantum machines
  also by the Metropolis-corrected exact step (with its acceptance rate);
* beside each: the matrix products of one update or sweep (GFLOP, calls, and FLOPs in units of one
  batch x visible x first-hidden product) and their *matmul limit*: each distinct product replayed
  alone at its own shape, layout and dtype, best of 3, summed (``limit / time``: the share of the
  measured time that the products need at this machine's best speed for them; bfloat16 rows are
  measured against bfloat16 products); and for quantum machines the time over their classical twin's.

Machines: RBM and QRBM 784-h, DBM and QiDBM 784-h-h (QiDBM's layer 1 quantum) for h = 500 (RBMs),
498 (DBMs) and, in the full run, the paper's 498, 588, 686, 784; GRBM and QGRBM 784-500 on
continuous MNIST; in the full run also the 8-bit MNIST DBM and QiDBM 6272-6272-6272 (PCD-1).

    python bench/throughput.py                        # full run: threads 1 and 2, float32 and bfloat16
    python bench/throughput.py --quick                # fewer machines and modes, torch's thread count
    python bench/throughput.py --only QiDBM --matmul-precision bfloat16 --threads 1
    python bench/throughput.py --hidden 16 --batch 8 --reps 2 --tag tiny     # a check that it runs
    python bench/throughput.py --profile              # + a torch.profiler table of a QiDBM PCD-1 update

Writes ``bench/results/<tag>.json`` and ``.md`` (tag ``throughput``, ``throughput_quick`` with
``--quick``), headed by the command, date, commit, hardware, threads and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (REPO, MatmulLimit, count_products, header, header_lines, make_module,  # noqa: E402
                     mnist_batches, optimizer_of, set_threads, start_fit, time_sweeps, time_updates)

import torch  # noqa: E402

from qidbm.estimators import FromData, Persistent  # noqa: E402
from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM  # noqa: E402
from qidbm.samplers import ExactStep, PaperStep  # noqa: E402

MODES = {"CD-1": lambda: FromData(1), "CD-5": lambda: FromData(5), "PCD-1": lambda: Persistent()}
KERNELS = {"paper": PaperStep, "exact": ExactStep}
PAPER_SIZES = (498, 588, 686, 784)
MNIST_TRAIN = 60_000


@dataclass
class Machine:
    name: str
    family: str  # RBM, QRBM, GRBM, QGRBM, DBM, QiDBM
    sizes: tuple[int, ...]
    encoding: str  # binary, continuous, bitplanes
    modes: tuple[str, ...]
    twin: str | None = None  # the classical twin of a quantum machine

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        two_layer = {"RBM": RBM, "QRBM": QRBM, "GRBM": GRBM, "QGRBM": QGRBM}.get(self.family)
        if two_layer is not None:
            return two_layer(*self.sizes)
        return DBM(list(self.sizes)) if self.family == "DBM" else QiDBM(list(self.sizes), quantum_layers=[1])

    @property
    def kernels(self) -> tuple[str, ...]:
        return ("paper", "exact") if self.family.startswith("Q") else ("paper",)


def machines(quick: bool, hidden: list[int] | None) -> list[Machine]:
    rbm_sizes = hidden or ((500,) if quick else (500, *PAPER_SIZES))
    dbm_sizes = hidden or ((498,) if quick else PAPER_SIZES)
    all_modes = tuple(MODES)
    rbm_modes, dbm_modes = (("CD-1", "PCD-1"), ("PCD-1",)) if quick else (all_modes, all_modes)
    out: list[Machine] = []
    for h in rbm_sizes:
        out += [Machine(f"RBM 784-{h}", "RBM", (784, h), "binary", rbm_modes),
                Machine(f"QRBM 784-{h}", "QRBM", (784, h), "binary", rbm_modes, twin=f"RBM 784-{h}")]
    for h in dbm_sizes:
        out += [Machine(f"DBM 784-{h}-{h}", "DBM", (784, h, h), "binary", dbm_modes),
                Machine(f"QiDBM 784-{h}-{h}", "QiDBM", (784, h, h), "binary", dbm_modes, twin=f"DBM 784-{h}-{h}")]
    h = hidden[0] if hidden else 500
    out += [Machine(f"GRBM 784-{h}", "GRBM", (784, h), "continuous", rbm_modes),
            Machine(f"QGRBM 784-{h}", "QGRBM", (784, h), "continuous", rbm_modes, twin=f"GRBM 784-{h}")]
    if not quick and not hidden:
        big = (6272, 6272, 6272)
        out += [Machine("DBM 6272-6272-6272 (8-bit)", "DBM", big, "bitplanes", ("PCD-1",)),
                Machine("QiDBM 6272-6272-6272 (8-bit)", "QiDBM", big, "bitplanes", ("PCD-1",),
                        twin="DBM 6272-6272-6272 (8-bit)")]
    return out


def module_for(m: Machine, precision: str, batches: list[torch.Tensor], negative=None):
    return start_fit(make_module(m.build(), negative=negative or Persistent(), matmul_precision=precision), batches)


def costs(products, limit: MatmulLimit, seconds: float, unit: tuple[int, int, int]) -> dict[str, Any]:
    lim = limit.seconds(products)
    return {"gflop": products.product_flops / 1e9, "mm_calls": products.n_calls, "products": products.in_units(unit),
            "limit_s": lim, "limit_ratio": lim / seconds}


def measure_training(m: Machine, mode: str, precision: str, batches: list[torch.Tensor], reps: int,
                     limit: MatmulLimit) -> dict[str, Any]:
    module = module_for(m, precision, batches, MODES[mode]())
    opt = optimizer_of(module)
    big = m.sizes[0] > 1000  # the 8-bit machines: ~0.2 TFLOP per update, one timed update
    t = time_updates(module, batches, 1 if big else reps, warmup=0 if big else 1, optimizer=opt)
    b = batches[0].shape[0]
    products = count_products(lambda: module.fit_step(batches[0], opt))
    return {"machine": m.name, "mode": mode, "precision": precision, **t.summary(), "updates_per_s": 1 / t.median,
            "samples_per_s": b / t.median, "epoch_s": MNIST_TRAIN / b * t.median,
            **costs(products, limit, t.median, (b, m.sizes[0], m.sizes[1]))}


def measure_sampling(m: Machine, kernel: str, precision: str, batches: list[torch.Tensor], reps: int,
                     limit: MatmulLimit) -> dict[str, Any]:
    module = module_for(m, precision, batches)
    big, chains = m.sizes[0] > 1000, batches[0].shape[0]
    sweeps = 1 if big else 5
    t, stats = time_sweeps(module, chains, 1 if big else reps, warmup=0 if big else 1, sweeps=sweeps,
                           kernel=KERNELS[kernel]())
    products = count_products(lambda: time_sweeps(module, chains, 1, warmup=0, kernel=KERNELS[kernel]()))
    out = {"machine": m.name, "kernel": kernel, "precision": precision, **t.summary(), "sweeps_per_s": 1 / t.median,
           **costs(products, limit, t.median, (chains, m.sizes[0], m.sizes[1]))}
    if kernel == "exact":
        out["acceptance"] = {str(l): float(a) for l, a in stats.acceptance().items()}
    return out


def profile(m: Machine, precision: str, batches: list[torch.Tensor], updates: int, out_txt: Path) -> dict[str, Any]:
    """torch.profiler over ``updates`` PCD-1 updates: the operators by self CPU time."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    module = module_for(m, precision, batches)
    time_updates(module, batches, 3, warmup=0)  # untimed: the chains and caches are warm when profiled
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        time_updates(module, batches, updates, warmup=0)
    ka = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in ka)
    products = sum(e.self_cpu_time_total for e in ka if e.key in ("aten::mm", "aten::addmm", "aten::bmm"))
    out_txt.write_text(f"# torch.profiler: {m.name}, PCD-1, {precision}, batch {batches[0].shape[0]}, {updates} updates, "
                       f"{torch.get_num_threads()} threads\n\n{ka.table(sort_by='self_cpu_time_total', row_limit=25)}\n")
    return {"machine": m.name, "self_cpu_ms_per_update": total / 1e3 / updates, "matmul_share": products / total,
            "table": str(out_txt.resolve().relative_to(REPO)) if out_txt.resolve().is_relative_to(REPO) else str(out_txt)}


def with_twins(rows: list[dict], key: str, twins: dict[str, str]) -> None:
    """Each quantum machine's time over its classical twin's, same mode or kernel, precision and threads."""
    times = {(r["machine"], r[key], r["precision"], r["threads"]): r["median_s"] for r in rows}
    for r in rows:
        twin = times.get((twins.get(r["machine"]), "paper" if key == "kernel" else r[key], r["precision"], r["threads"]))
        r["vs_twin"] = None if twin is None else r["median_s"] / twin


def markdown(res: dict[str, Any]) -> str:
    f = lambda x, nd=2: "-" if x is None else f"{x:,.{nd}f}"  # noqa: E731
    L = header_lines(res["header"]) + ["", "Training (one update: `module.fit_step`, SGD; products: FLOPs in units of "
                                            "one batch x visible x first-hidden product):", "",
         "| threads | machine | mode | precision | updates/s | samples/s | s/epoch | spread | GFLOP | products | calls | "
         "limit / time | vs twin |", "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["training"]:
        L.append(f"| {r['threads']} | {r['machine']} | {r['mode']} | {r['precision']} | {f(r['updates_per_s'], 1)} | "
                 f"{f(r['samples_per_s'], 0)} | {f(r['epoch_s'], 1)} | {f(r['spread'])} | {f(r['gflop'], 3)} | "
                 f"{f(r['products'], 1)} | {r['mm_calls']} | {f(r['limit_ratio'])} | {f(r['vs_twin'], 3)} |")
    L += ["", f"Sampling ({res['batch']} chains):", "",
          "| threads | machine | kernel | precision | sweeps/s | spread | GFLOP / sweep | limit / time | vs twin | acceptance |",
          "|---:|---|---|---|---:|---:|---:|---:|---:|---|"]
    for r in res["sampling"]:
        acc = ", ".join(f"{a:.3f}" for a in r.get("acceptance", {}).values()) or "-"
        L.append(f"| {r['threads']} | {r['machine']} | {r['kernel']} | {r['precision']} | {f(r['sweeps_per_s'], 1)} | "
                 f"{f(r['spread'])} | {f(r['gflop'], 3)} | {f(r['limit_ratio'])} | {f(r['vs_twin'], 3)} | {acc} |")
    for p in res["profiles"]:
        L += ["", f"Profile, {p['threads']} thread(s), {p['machine']} PCD-1: {p['self_cpu_ms_per_update']:.1f} ms self CPU "
                  f"per update, {100 * p['matmul_share']:.0f}% in matrix products; table: `{p['table']}`."]
    L += ["", "Matrix products measured (best of 3, preallocated output):", "",
          "| threads | batch x m x k x n | layout | dtype | GFLOP/s |", "|---:|---|---|---|---:|"]
    L += [f"| {r['threads']} | {r['batch']}x{r['m']}x{r['k']}x{r['n']} | {r['layout']} | {r['dtype']} | {r['gflops']:.1f} |"
          for r in res["products"]]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="RBM/QRBM 784-500 (CD-1, PCD-1), DBM/QiDBM 784-498-498 "
                   "(PCD-1), GRBM/QGRBM 784-500; torch's thread count")
    p.add_argument("--threads", default=None, help="thread counts, comma separated (default 1,2; --quick: torch's)")
    p.add_argument("--matmul-precision", default="float32,bfloat16", help="comma separated: float32, bfloat16")
    p.add_argument("--only", default=None, help="comma-separated substrings of machine names to run")
    p.add_argument("--hidden", default=None, help="hidden sizes, comma separated, instead of the paper's")
    p.add_argument("--batch", type=int, default=600)
    p.add_argument("--reps", type=int, default=5, help="timed updates (and sweep calls) per row, after one warm-up")
    p.add_argument("--profile", action="store_true", help="torch.profiler table of a QiDBM 784-h-h PCD-1 update")
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--tag", default=None, help="output file stem (default throughput, throughput_quick)")
    a = p.parse_args(argv)
    precisions = a.matmul_precision.split(",")
    if set(precisions) - {"float32", "bfloat16"}:
        p.error(f"--matmul-precision: float32 and/or bfloat16, got {a.matmul_precision}")
    threads = [int(t) for t in a.threads.split(",")] if a.threads else \
        [torch.get_num_threads()] if a.quick else [1, 2]
    hidden = [int(h) for h in a.hidden.split(",")] if a.hidden else None
    ms = machines(a.quick, hidden)
    if a.only:
        ms = [m for m in ms if any(k.strip() in m.name for k in a.only.split(","))]
    data = {enc: mnist_batches(4, a.batch, enc) for enc in sorted({m.encoding for m in ms})}
    twins = {m.name: m.twin for m in ms if m.twin}
    res: dict[str, Any] = {"header": header(__file__, argv), "batch": a.batch, "training": [], "sampling": [],
                           "profiles": [], "products": []}
    out_dir = Path(a.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = a.tag or ("throughput_quick" if a.quick else "throughput")
    for n in threads:
        set_threads(n)
        limit = MatmulLimit(reps=3)
        for m in ms:
            for precision in precisions:
                for mode in m.modes:
                    r = measure_training(m, mode, precision, data[m.encoding], a.reps, limit)
                    res["training"].append({"threads": n, **r})
                    print(f"{n}t {m.name:30s} {mode:6s} {precision:8s} {r['updates_per_s']:8.1f} updates/s  "
                          f"limit/time {r['limit_ratio']:.2f}", flush=True)
                for kernel in m.kernels:
                    r = measure_sampling(m, kernel, precision, data[m.encoding], a.reps, limit)
                    res["sampling"].append({"threads": n, **r})
                    print(f"{n}t {m.name:30s} {kernel:6s} {precision:8s} {r['sweeps_per_s']:8.1f} sweeps/s   "
                          f"limit/time {r['limit_ratio']:.2f}", flush=True)
        if a.profile:
            h = hidden[0] if hidden else 498
            qi = Machine(f"QiDBM 784-{h}-{h}", "QiDBM", (784, h, h), "binary", ("PCD-1",))
            batches = data.get("binary") or mnist_batches(4, a.batch)
            res["profiles"].append({"threads": n, **profile(qi, precisions[0], batches, 10, out_dir / f"{stem}_profile_{n}t.txt")})
        res["products"] += [{"threads": n, **r} for r in limit.table()]
    with_twins(res["training"], "mode", twins)
    with_twins(res["sampling"], "kernel", twins)
    res["header"]["load_end"] = os.getloadavg()[0]
    md = markdown(res)
    (out_dir / f"{stem}.json").write_text(json.dumps(res, indent=1))
    (out_dir / f"{stem}.md").write_text(md)
    print(md)
    print(f"wrote {out_dir / stem}.json and .md")
    return res


if __name__ == "__main__":
    main()
