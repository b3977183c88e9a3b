"""Wall-clock ratios that survive a noisy machine: each pair of workloads timed interleaved.

A ratio of two timings taken minutes apart on a shared 2-core machine mostly measures the load.
Here each pair (A, B) is timed in rounds: every round runs ``--steps`` calls of A and of B back to
back (the order alternates between rounds), and gives one ratio ``t_B / t_A`` of their median
call times. A pair reports the median of its round ratios and their spread (interquartile range /
median), the median call times (wall and process CPU time), and the 1-minute load average before
and after. A pair whose spread exceeds ``--max-spread`` is measured again (``--retries`` times) and
flagged ``noisy`` if it still does; the figures of a flagged pair are not to be published.

Pairs (``--pairs``, default all):

* ``qidbm/dbm``, ``qrbm/rbm``, ``qgrbm/grbm``: a quantum model against its classical twin, the
  training step of the CPU recipes (no Lightning: ``doem_loss`` + backward + SGD step) and one
  block Gibbs sweep;
* ``bf16/fp32``: ``matmul_precision="bfloat16"`` against float32, same steps;
* ``fused/eager``: ``fused_kernels=True`` (the closed forms compiled, :mod:`qidbm.fused`) against the
  eager step (``--fused`` instead turns them on for both sides of every pair);
* ``sklearn/rbm``: scikit-learn's ``BernoulliRBM`` PCD-1 update (``partial_fit`` on a batch of 600)
  against the RBM 784-500 PCD-1 step at batch 600 (float32, fused float32, fused bfloat16): the
  ratio is the RBM's speed-up;
* ``lightning/bare``: the step inside ``Trainer.fit`` (the recipe's logging, no checkpoints)
  against the bare step.

Workloads: ``recipe`` = the CPU recipes (DBM/QiDBM 784-498-498: batch 100, noise start, 20 sweeps,
mean-field positive phase, centering; RBM/QRBM 784-500 and GRBM/QGRBM 784-500: batch 100, noise
start, 20 sweeps); ``pcd1`` = batch 600, PCD-1 (the paper's regime); ``sweep`` = one block Gibbs
sweep of 600 chains. Data: real MNIST batches from ``$QIDBM_DATA_DIR``.

Usage::

    python bench/paired.py --threads 1,2              # every pair (~10 min on 2 idle cores)
    python bench/paired.py --pairs qidbm/dbm --threads 1 --rounds 5 --steps 5   # a quick look

Writes ``bench/results/paired.json`` and ``.md`` (``--tag`` changes the stem).
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

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from throughput import load_average, machine  # noqa: E402

from qidbm.fused import fused_kernels  # noqa: E402
from qidbm.lightning.module import BoltzmannModule  # noqa: E402
from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM  # noqa: E402
from qidbm.precision import matmul_precision  # noqa: E402
from qidbm.samplers import PaperStep  # noqa: E402

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


def module_for(name: str, workload: str, precision: str = "float32", fused: bool = False) -> BoltzmannModule:
    """A module with the recipe's (or PCD-1's) options; its weights scaled like a trained machine's."""
    torch.manual_seed(0)
    model = MODELS[name]()
    with torch.no_grad():  # 0.01-std initial weights make every unit a coin flip: use trained-like scales
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.05)
    kw: dict[str, Any] = {"chain_seed": 0, "init_visible_bias": False, "matmul_precision": precision,
                          "fused_kernels": fused}
    if workload == "recipe":
        kw.update(cd_steps=20, negative_start="noise", lr=0.005, momentum=0.9)
        if name in ("dbm", "qidbm"):
            kw.update(positive="mean_field", centering=True)
    else:
        kw.update(cd_steps=1, negative_start="persistent")
    module = BoltzmannModule(model, **kw)
    module._generator = torch.Generator().manual_seed(0)  # what on_fit_start does, without a Trainer
    return module


def batches_for(name: str, workload: str, data: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    b = 600 if workload in ("pcd1", "sweep") else 100
    x = data["continuous" if name in ("grbm", "qgrbm") else "binary"]
    return [x[i : i + b] for i in range(0, 4 * b, b)]


def bare_step(module: BoltzmannModule, batches: list[torch.Tensor]) -> Callable[[], None]:
    opt = module.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    it = itertools.cycle(batches)
    if module.hparams.get("centering"):
        from qidbm.lightning.centering import initial_offsets

        module._offsets = initial_offsets(module.model, batches[0].mean(0))

    def step() -> None:
        v = next(it)
        opt.zero_grad(set_to_none=True)
        loss, _ = module.doem_loss(v)
        loss.backward()
        module.on_before_optimizer_step(opt)
        opt.step()

    return step


def sweep_call(module: BoltzmannModule, batches: list[torch.Tensor]) -> Callable[[], None]:
    model, kernel = module.model, PaperStep()
    state = model.random_state(batches[0].shape[0], torch.Generator().manual_seed(0))
    precision, fused = module.hparams.matmul_precision, module.hparams.fused_kernels

    def sweep() -> None:
        with matmul_precision(precision), fused_kernels(fused):
            kernel.run(model, state, 1)

    return sweep


def sklearn_call(batches: list[torch.Tensor]) -> Callable[[], None]:
    """One PCD-1 update of scikit-learn's ``BernoulliRBM(500)`` (``partial_fit`` on one batch of 600:
    its ``_fit`` step, float32 like the input), cycling over the same batches as the RBM step."""
    from sklearn.neural_network import BernoulliRBM

    xs = [b.numpy().astype("float32") for b in batches]
    rbm = BernoulliRBM(n_components=500, batch_size=len(xs[0]), n_iter=1, learning_rate=0.1, random_state=0)
    rbm.partial_fit(xs[0])  # allocates the weights and the persistent chains
    it = itertools.cycle(xs)
    return lambda: rbm.partial_fit(next(it))


class LightningSteps:
    """Per-step wall times of ``Trainer.fit`` for ``n`` steps (the recipe's CSV logging every 50)."""

    def __init__(self, module: BoltzmannModule, batches: list[torch.Tensor], log_dir: Path) -> None:
        self.module, self.batches, self.log_dir = module, batches, log_dir

    def times(self, n: int, warm: int = 2) -> tuple[list[float], list[float]]:
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
        return [b[0] - a[0] for a, b in zip(s, s[1:])], [b[1] - a[1] for a, b in zip(s, s[1:])]


def timed(fn: Callable[[], None], n: int) -> tuple[list[float], list[float]]:
    fn()  # warm-up call (allocations, weight casts)
    wall, cpu = [], []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def measure_pair(label: str, a: Callable[[int], tuple[list[float], list[float]]],
                 b: Callable[[int], tuple[list[float], list[float]]], rounds: int, steps: int) -> dict[str, Any]:
    """Interleaved rounds of A and B; the ratio is B / A."""
    ratios, cpu_ratios, ta, tb, ca, cb = [], [], [], [], [], []
    load0 = load_average()[0]
    for r in range(rounds):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        w1, c1 = first(steps)
        w2, c2 = second(steps)
        (wa, cpa), (wb, cpb) = ((w1, c1), (w2, c2)) if r % 2 == 0 else ((w2, c2), (w1, c1))
        ma, mb = statistics.median(wa), statistics.median(wb)
        ratios.append(mb / ma)
        cpu_ratios.append(statistics.median(cpb) / statistics.median(cpa))
        ta.append(ma), tb.append(mb), ca.append(statistics.median(cpa)), cb.append(statistics.median(cpb))
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    med = statistics.median(ratios)
    return {"pair": label, "ratio": med, "spread": (q[2] - q[0]) / med, "cpu_ratio": statistics.median(cpu_ratios),
            "a_ms": 1e3 * statistics.median(ta), "b_ms": 1e3 * statistics.median(tb),
            "a_cpu_ms": 1e3 * statistics.median(ca), "b_cpu_ms": 1e3 * statistics.median(cb),
            "rounds": rounds, "steps": steps, "load_before": load0, "load_after": load_average()[0],
            "round_ratios": ratios}


def pair_cases(pair: str, data: dict[str, torch.Tensor], tmp: Path,
               fused: bool = False) -> list[tuple[str, Callable, Callable]]:
    """(label, A, B) timing functions ``f(n) -> (wall times, cpu times)`` of one pair; ``fused``: both
    sides with fused kernels (except in ``fused/eager``)."""
    def step_of(name, workload, precision="float32", fused=fused):
        m = module_for(name, workload, precision, fused)
        bt = batches_for(name, workload, data)
        fn = sweep_call(m, bt) if workload == "sweep" else bare_step(m, bt)
        return lambda n: timed(fn, n)

    cases = []
    if pair in TWINS:
        c, q = TWINS[pair]
        for w in ("recipe", "pcd1", "sweep"):
            cases.append((f"{q}/{c} {w}", step_of(c, w), step_of(q, w)))
    elif pair == "bf16/fp32":
        for name in ("dbm", "qidbm", "rbm", "grbm"):
            for w in ("recipe", "sweep"):
                cases.append((f"{name} {w} bf16/fp32", step_of(name, w), step_of(name, w, "bfloat16")))
    elif pair == "fused/eager":
        for name in ("rbm", "qrbm", "dbm", "qidbm"):
            for w in ("recipe", "pcd1"):
                cases.append((f"{name} {w} fused/eager", step_of(name, w, fused=False), step_of(name, w, fused=True)))
    elif pair == "sklearn/rbm":
        sk = sklearn_call(batches_for("rbm", "pcd1", data))
        for precision, flag in (("float32", False), ("float32", True), ("bfloat16", True)):
            label = f"rbm pcd1 sklearn/{precision}{' fused' if flag else ''}"
            cases.append((label, step_of("rbm", "pcd1", precision, fused=flag), lambda n: timed(sk, n)))
    elif pair == "lightning/bare":
        for name in ("dbm", "qidbm"):
            m_fit = module_for(name, "recipe")
            fit = LightningSteps(m_fit, batches_for(name, "recipe", data), tmp / name)
            cases.append((f"{name} recipe lightning/bare", step_of(name, "recipe"), fit.times))
    return cases


MATMUL_SHAPES = ((100, 784, 498), (100, 498, 498), (600, 784, 500), (600, 498, 498))


def matmul_rates(reps: int = 9, calls: int = 20) -> list[dict[str, Any]]:
    """GFLOP/s of float32 and bfloat16 products (float32 accumulation) at the recipes' shapes,
    median of ``reps`` timings of ``calls`` products each, with the bfloat16 weights cast once."""
    rows = []
    for m, k, n in MATMUL_SHAPES:
        x = (torch.rand(m, k) < 0.5).float()
        w = torch.randn(k, n) * 0.05
        xb, wb = x.to(torch.bfloat16), w.to(torch.bfloat16)
        out = {}
        for name, fn in (("float32", lambda: x @ w), ("bfloat16", lambda: (x.to(torch.bfloat16) @ wb).float()),
                         ("bfloat16 operands only", lambda: xb @ wb)):
            fn()
            ts = []
            for _ in range(reps):
                t0 = time.perf_counter()
                for _ in range(calls):
                    fn()
                ts.append((time.perf_counter() - t0) / calls)
            out[name] = 2 * m * k * n / statistics.median(ts) / 1e9
        rows.append({"shape": f"{m}x{k}x{n}", **{f"gflops_{key}": v for key, v in out.items()}})
    return rows


def load_mnist(n: int) -> dict[str, torch.Tensor]:
    from qidbm.data import MNISTDataModule

    out = {}
    for enc in ("binary", "continuous"):
        dm = MNISTDataModule(encoding=enc, batch_size=100, download=False)
        dm.prepare_data()
        dm.setup("fit")
        pix = dm.split_pixels("train")[:n]
        out[enc] = dm.encode(pix).reshape(n, -1).contiguous()
    return out


def cpu_flags() -> list[str]:
    """The vector instruction sets of this CPU that matter for float32/bfloat16 products."""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split(":", 1)[1].split()
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))


def markdown(result: dict[str, Any]) -> str:
    lines = [f"Command: `{result['command']}`  ", f"Machine: {result['machine']['cpu']}, {result['machine']['description']}, "
             f"torch {result['machine']['torch']}, allocator: {result['machine'].get('allocator', 'glibc defaults')}  ", f"CPU instructions: {' '.join(result.get('cpu_flags', []))}  "]
    for t, rates in result.get("matmul", {}).items():
        lines += ["", f"Matrix products, {t} thread(s), GFLOP/s (median of 9 x 20 products):", "",
                  "| shape (m x k x n) | float32 | bfloat16 (casts included, as `layer_product`) | bfloat16 operands only |",
                  "|---|---:|---:|---:|"]
        lines += [f"| {r['shape']} | {r['gflops_float32']:.0f} | {r['gflops_bfloat16']:.0f} | {r['gflops_bfloat16 operands only']:.0f} |"
                  for r in rates]
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
    os.environ.setdefault("QIDBM_DATA_DIR", str(REPO.parent / "shared" / "data"))
    pairs = [s.strip() for s in args.pairs.split(",") if s.strip()]
    bad = [s for s in pairs if s not in PAIRS]
    if bad:
        p.error(f"unknown pairs {bad}; choose from {list(PAIRS)}")
    data = load_mnist(2400)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f"{args.tag}_lightning_logs"
    rows: list[dict[str, Any]] = []
    rates: dict[str, list] = {}
    from tqdm.auto import tqdm

    from threadpoolctl import threadpool_limits

    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        threadpool_limits(limits=threads)  # numpy's BLAS (scikit-learn) gets the same threads
        rates[str(threads)] = matmul_rates()
        cases = [c for pair in pairs for c in pair_cases(pair, data, tmp, args.fused) if not args.only or args.only in c[0]]
        for label, a, b in tqdm(cases, desc=f"{threads} thread(s)"):
            for attempt in range(args.retries + 1):
                row = measure_pair(label, a, b, args.rounds, args.steps)
                row.update(threads=threads, attempt=attempt + 1)
                if row["spread"] <= args.max_spread:
                    break
            row["flag"] = "" if row["spread"] <= args.max_spread else "noisy"
            rows.append(row)
            tqdm.write(f"{threads}t {label}: {row['ratio']:.3f} (spread {row['spread']:.3f}) {row['flag']}")
    result = {"command": "python bench/paired.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "cpu_flags": cpu_flags(), "matmul": rates, "rows": rows}
    (out_dir / f"{args.tag}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{args.tag}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
