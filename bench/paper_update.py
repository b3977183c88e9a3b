"""One training update of the DO-EM paper's protocol, timed against the machine's matrix product.

The protocol is read from its config files only (``configs/paper/mnist_binary/base.yaml`` plus
``dbm_498.yaml`` / ``qidbm_498.yaml``: 784-498-498, batch 600, SGD lr 1e-3, Taniguchi et al.'s
estimator for both phases). Each model is first trained ``--warmup`` updates (default 200) by a
Lightning Trainer on MNIST, the protocol as ``qidbm fit`` runs it without loggers and callbacks,
because how fast the local search converges depends on the weights (at the orthogonal start it
takes longer than after a few hundred updates). That state is cached under ``--cache``
(``bench/results/paper_update/``), keyed by the config files' contents and the number of updates.

From that state, for float32 and bfloat16 products (``matmul_precision``) and ``fused_kernels`` off
and on, ``--reps`` updates on real MNIST batches are timed one by one at ``--threads`` threads (1),
each right after timing one 600x784 @ 784x498 float32 product (best of 3) in the same process, so
the ratio of the two (product-equivalents, PE) holds under a slowly changing load. Then the
same updates are replayed from the same state under :class:`qidbm.profiling.ProductCounter` (torch's
``FlopCounterMode`` and a record of every ``mm``/``addmm``/``bmm``) and with the local search's
sweeps counted: matrix products per update (FLOPs in units of that 600x784x498 product), calls,
GFLOP/s (FLOPs / median time) and row-sweeps (chains x sweeps of the local search, both phases).

Timings need a quiet machine: the 1-minute load average at the start and end is printed and
stored. Counts (products, calls, row-sweeps) do not depend on the load.

``--parity`` instead trains each model (``--parity-models``, the paper DBM and QiDBM)
``--parity-updates`` (300) updates from the same start in float32, bfloat16 and fused kernels, and
in float32 with another chain seed (the run-to-run spread the others are judged against), and
compares the loss trajectories, the weights, the local modes, the AIS log-partition
(:mod:`qidbm.metrics.likelihood`) and the test log-likelihood, and with ``--fid N`` the FID of N
samples drawn as the module draws them. The DBM has no fused run: under this estimator it evaluates
none of the fused closed forms, so that run is float32's.

    python bench/paper_update.py --out bench/results/paper_update            # the table (~15 min)
    python bench/paper_update.py --parity --fid 2000 --out bench/results/paper_parity   # ~1 h at 1 thread
    python bench/paper_update.py --warmup 3 --reps 2 --models dbm_498        # a check that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (REPO, batches_of, count_products, from_configs, header, header_lines,  # noqa: E402
                     optimizer_of, set_threads)

import torch  # noqa: E402

CONFIGS = "configs/paper/mnist_binary"
UNIT = (600, 784, 498)  # the product every time and count is expressed in: 600x784 @ 784x498
# Taniguchi et al.'s reference code (github iShohei220/unbiased_dbm, model.py), DBM 784-498-498, batch
# 600, measured earlier on this machine's CPU at 1 thread, float32. The code is not shipped here.
REFERENCE = [
    {"lr": 1e-2, "s_per_update": 0.463, "products": 50, "pe": None},
    {"lr": 1e-3, "s_per_update": 0.675, "products": 85, "pe": 140},
]
VARIANTS = [("float32", False), ("float32", True), ("bfloat16", False), ("bfloat16", True)]


# ----------------------------------------------------------------------------- the update
def one_update(module, optimizer: torch.optim.Optimizer, v: torch.Tensor) -> None:
    """One training update: the loss, its gradient and the optimizer's step, as ``training_step`` runs
    them under Lightning (``module.fit_step``). The one place to change if the module's API does."""
    module.fit_step(v, optimizer)


# ----------------------------------------------------------------------------- the protocol from its configs
def build(files: list[str], overrides: dict | None = None):
    """``(module, datamodule)`` as ``qidbm fit --config ...`` builds them (:func:`harness.from_configs`),
    with ``overrides`` of the module's arguments given as on the command line."""
    args = [a for k, v in (overrides or {}).items() for a in (f"--model.init_args.{k}", json.dumps(v).strip('"'))]
    return from_configs(files, *args)


def config_key(files: list[str]) -> str:
    """A key of the config files' contents (the cache of warm states follows them)."""
    return hashlib.sha256(b"".join((REPO / f).read_bytes() for f in files)).hexdigest()[:12]


def loss_recorder(out: list):
    """A Lightning callback appending every update's loss to ``out``."""
    from lightning.pytorch.callbacks import Callback

    class LossRecorder(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            out.append(float(outputs["loss"] if isinstance(outputs, dict) else outputs))

    return LossRecorder()


def train(module, dm, steps: int, losses: list | None = None) -> None:
    """``steps`` updates of the protocol by a Lightning Trainer (no loggers, checkpoints or validation)."""
    import logging

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its start-up lines, once per variant

    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, default_root_dir=tmp,
                            callbacks=[] if losses is None else [loss_recorder(losses)])
        trainer.fit(module, datamodule=dm)


def warm_state(files: list[str], steps: int, cache: Path, log: Callable[[str], None]) -> dict:
    """The weights and chain generator after ``steps`` updates of the protocol (cached)."""
    name = Path(files[-1]).stem
    path = cache / f"{name}_{steps}updates_{config_key(files)}.pt"
    if path.is_file():
        state = torch.load(path, weights_only=False)
        log(f"  warm state: {path} (cached; made at commit {state.get('commit', 'unknown')[:12]}: delete it to "
            "retrain after a change of the training code)")
        return state
    module, dm = build(files)
    t0 = time.perf_counter()
    train(module, dm, steps)
    state = {"state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
             "generator": module.generator.get_state(), "updates": steps, "configs": files,
             "commit": header(__file__, [])["commit"]}
    log(f"  warm state: {steps} updates in {time.perf_counter() - t0:.0f} s, saved to {path}")
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def restore(module, state: dict) -> None:
    module.load_state_dict(state["state_dict"])
    module.generator.set_state(state["generator"])


# ----------------------------------------------------------------------------- measuring
@contextlib.contextmanager
def counting_sweeps(out: list[int]):
    """Record the row-sweeps (chains x sweeps) of every local search run inside."""
    from qidbm.samplers import taniguchi

    inner = taniguchi.local_search

    def counted(model, state, *args, **kwargs):
        s = torch.zeros(state[0].shape[0], dtype=torch.long, device=state[0].device)
        result = inner(model, state, *args, sweeps=s, **kwargs)
        out.append(int(s.sum()))
        return result

    taniguchi.local_search = counted
    try:
        yield
    finally:
        taniguchi.local_search = inner


class UnitProduct:
    """The 600x784 @ 784x498 float32 product, into a preallocated output."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.a = (torch.rand(UNIT[0], UNIT[1], generator=g) < 0.5).float()
        self.b = torch.randn(UNIT[1], UNIT[2], generator=g) * 0.05
        self.out = torch.empty(UNIT[0], UNIT[2])
        for _ in range(5):
            self()

    def __call__(self) -> float:
        t0 = time.perf_counter()
        torch.mm(self.a, self.b, out=self.out)
        return time.perf_counter() - t0

    def best_of(self, k: int = 3) -> float:
        return min(self() for _ in range(k))


def measure(files: list[str], state: dict, precision: str, fused: bool, reps: int, untimed: int,
            unit: UnitProduct) -> dict:
    """Time ``reps`` updates from ``state`` (after ``untimed`` ones: compilation, caches), interleaved
    with the unit product; then count products, FLOPs and row-sweeps of the same updates."""
    module, dm = build(files, {"matmul_precision": precision, "fused_kernels": fused})
    data = batches_of(dm, untimed + reps, skip=state["updates"])
    restore(module, state)
    opt = optimizer_of(module)
    for v in data[:untimed]:
        one_update(module, opt, v)
    restore(module, state)  # the timed updates start from the warm state itself (and a fresh optimizer)
    opt = optimizer_of(module)
    t_update, t_unit = [], []
    for v in data[untimed:]:
        t_unit.append(unit.best_of())
        t0 = time.perf_counter()
        one_update(module, opt, v)
        t_update.append(time.perf_counter() - t0)
    restore(module, state)  # the same updates again, counted (eagerly: counters are dispatch modes)
    opt = optimizer_of(module)
    flops, products, calls, sweeps = 0, 0.0, 0, []
    with counting_sweeps(sweeps):
        for v in data[untimed:]:
            pc = count_products(lambda: one_update(module, opt, v))
            flops, products, calls = flops + pc.flops, products + pc.in_units(UNIT), calls + pc.n_calls
    med = statistics.median(t_update)
    return {
        "model": Path(files[-1]).stem, "matmul_precision": precision, "fused_kernels": fused, "reps": reps,
        "s_per_update": med, "s_per_update_all": t_update, "unit_product_s": statistics.median(t_unit),
        "pe": statistics.median(a / b for a, b in zip(t_update, t_unit)),
        "products": products / reps, "mm_calls": calls / reps,
        "gflops": flops / reps / med / 1e9, "flops_per_update": flops / reps,
        "row_sweeps": sum(sweeps) / reps,
    }


# ----------------------------------------------------------------------------- report
def markdown(res: dict) -> str:
    L = header_lines(res["header"])
    L += ["", f"Warm state: {res['warmup']} updates of the protocol at the config's learning rate; {res['reps']} timed "
          "updates per row, each after one 600x784 @ 784x498 float32 product (best of 3); PE = update time / "
          "that product's time (median of the per-update ratios); products = matrix-product FLOPs per update in "
          "units of that product; row-sweeps = chains x sweeps of the local search per update (both phases).", "",
          "| model | products in | fused kernels | s/update (median) | PE | products/update | mm calls/update | "
          "GFLOP/s | row-sweeps/update |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        L.append(f"| {r['model']} | {r['matmul_precision']} | {'on' if r['fused_kernels'] else 'off'} | "
                 f"{r['s_per_update']:.3f} | {r['pe']:.0f} | {r['products']:.1f} | {r['mm_calls']:.0f} | "
                 f"{r['gflops']:.1f} | {r['row_sweeps']:.0f} |")
    for ref in REFERENCE:
        pe = "-" if ref["pe"] is None else f"~{ref['pe']}"
        L.append(f"| reference code, DBM, lr {ref['lr']:g} | float32 | - | {ref['s_per_update']:.3f} | {pe} | "
                 f"{ref['products']} | - | - | {'14.0k' if ref['lr'] == 1e-3 else '-'} |")
    L += ["", "Reference rows: Taniguchi et al.'s code (github iShohei220/unbiased_dbm), measured earlier on this "
          "CPU at 1 thread, float32; it is not shipped with this package, so it is quoted, not rerun."]
    return "\n".join(L) + "\n"


def print_rows(rows: list[dict]) -> None:
    print(f"{'model':10s} {'precision':9s} {'fused':5s} {'s/update':>9s} {'PE':>5s} {'products':>9s} {'mm calls':>9s} "
          f"{'GFLOP/s':>8s} {'row-sweeps':>10s}")
    for r in rows:
        print(f"{r['model']:10s} {r['matmul_precision']:9s} {'on' if r['fused_kernels'] else 'off':5s} "
              f"{r['s_per_update']:9.3f} {r['pe']:5.0f} {r['products']:9.1f} {r['mm_calls']:9.0f} {r['gflops']:8.1f} "
              f"{r['row_sweeps']:10.0f}")
    for ref in REFERENCE:
        pe = "  -" if ref["pe"] is None else f"~{ref['pe']}"
        print(f"reference code (not shipped), DBM, lr {ref['lr']:g}: {ref['s_per_update']:.3f} s/update, "
              f"{ref['products']} products, PE {pe}")


# ----------------------------------------------------------------------------- parity of the fast paths
def parity(a: argparse.Namespace, log: Callable[[str], None]) -> dict:
    """For each model: train it with float32 products, bfloat16 products and fused kernels (and with
    float32 and another chain seed: the spread the others are judged against) from the same start,
    and compare what they learned."""
    fid = FIDReference(a.fid, a.fid_weights) if a.fid else None
    out = {"updates": a.parity_updates, "models": {}}
    for name in a.parity_models:
        log(f"{name}:")
        out["models"][name] = parity_one([f"{a.configs}/base.yaml", f"{a.configs}/{name}.yaml"], a, fid, log)
    out["settings"] = {"ais_runs": a.ais_runs, "ais_betas": a.ais_betas, "test_images": a.test_images,
                       "mode_chains": a.mode_chains, "fid_samples": a.fid, "loss_window": max(1, a.parity_updates // 5)}
    return out


def _distance(x: dict, y: dict) -> float:
    return sum(float((x[k] - y[k]).norm() ** 2) for k in x) ** 0.5


@torch.no_grad()
def parity_one(files: list[str], a: argparse.Namespace, fid, log: Callable[[str], None]) -> dict:
    from qidbm.fused import fused_kernels
    from qidbm.metrics.likelihood import ais_log_likelihood, ais_log_partition, base_rate_visible_bias
    from qidbm.precision import matmul_precision
    from qidbm.samplers.taniguchi import local_search, random_orders

    variants = {"float32": {}, "bfloat16": {"matmul_precision": "bfloat16"}, "fused": {"fused_kernels": True},
                "float32, other chain seed": None}
    runs: dict[str, dict] = {}
    for name, over in variants.items():
        if over is None:  # the chains' default seed is the run's global seed, torch.initial_seed() after it is set
            over = {"chain_seed": int(runs["float32"]["module"].generator.initial_seed()) + 1}
        module, dm = build(files, over)
        if name == "fused" and not module.model.quantum_layers:
            # a classical machine under this estimator evaluates none of the fused closed forms (the
            # loss sums no layer out, the local search thresholds sigmoids): float32's run exactly
            log("  fused: skipped, no closed form of a classical DBM is fused under this estimator")
            continue
        init = {k: v.detach().clone() for k, v in module.model.state_dict().items()}
        losses: list[float] = []
        t0 = time.perf_counter()
        with torch.enable_grad():
            train(module, dm, a.parity_updates, losses)
        log(f"  {name}: {a.parity_updates} updates in {time.perf_counter() - t0:.0f} s, last loss {losses[-1]:.3f}")
        runs[name] = {"module": module, "losses": losses, "init": init}
    ref = runs["float32"]
    m32 = ref["module"].model
    w32 = {k: v.detach() for k, v in m32.state_dict().items()}
    moved = _distance(w32, ref["init"])
    dm.setup("fit")
    test = dm.encode(dm.split_pixels("test")[: a.test_images]).reshape(a.test_images, -1).float()
    base = base_rate_visible_bias(torch.cat(batches_of(dm, 20)))

    # local modes from the same noise starts and block orders
    g = torch.Generator().manual_seed(123)
    starts = m32.random_state(a.mode_chains, g)
    orders = random_orders(a.mode_chains, g, "cpu")

    def modes(model, precision="float32", fused=False):
        with matmul_precision(precision), fused_kernels(fused):
            return local_search(model, starts, even_first=orders)

    def agreement(x, y):
        chains = torch.stack([(p == q).all(1) for p, q in zip(x, y)]).all(0).float().mean()
        units = sum(int((p != q).sum()) for p, q in zip(x, y)) / sum(p.numel() for p in x)
        return float(chains), units

    modes32 = modes(m32)
    window = max(1, a.parity_updates // 5)
    l32 = torch.tensor(ref["losses"])
    res = {}
    for name, run in runs.items():
        m, hp = run["module"].model, run["module"].hparams
        prec, fused = hp.get("matmul_precision", "float32"), bool(hp.get("fused_kernels", False))
        # the path alone: float32's final weights, searched with this row's products and kernels
        same = agreement(modes(m32, prec, fused), modes32) if name != "float32, other chain seed" else (None, None)
        # what training with it learned: its own final weights, searched in float32
        own_modes = modes(m)
        own = agreement(own_modes, modes32)
        gl = torch.Generator().manual_seed(7)
        ais = ais_log_partition(m, num_runs=a.ais_runs, num_betas=a.ais_betas, base_visible_bias=base, generator=gl)
        ll = float(ais_log_likelihood(m, test, ais, generator=gl).mean())
        losses = torch.tensor(run["losses"])
        k = min(len(losses), len(l32))
        last = losses[-window:]
        row = {
            "matmul_precision": prec, "fused_kernels": fused,
            "loss_last_window_mean": float(last.mean()), "loss_last_window_std": float(last.std()) if window > 1 else 0.0,
            "loss_mean_abs_diff_vs_float32": float((losses[:k] - l32[:k]).abs().mean()),
            "weights_apart_over_moved": _distance({x: v.detach() for x, v in m.state_dict().items()}, w32) / moved
            if moved > 0 else None,
            "modes_same_weights_identical_chains": same[0], "modes_same_weights_units_differing": same[1],
            "modes_own_weights_identical_chains": own[0], "modes_own_weights_units_differing": own[1],
            "modes_own_weights_mean_energy": float(m.energy(own_modes).mean()),
            "ais_log_z": ais.log_z, "ais_stderr": ais.stderr, "test_log_likelihood": ll,
            "losses": run["losses"],
        }
        if fid is not None:
            row["fid"] = fid(run["module"], dm)
        res[name] = row
        sw = "-" if same[0] is None else f"{same[0]:.3f} of chains ({same[1]:.1e} of units differ)"
        log(f"  {name}: loss (last {window}) {row['loss_last_window_mean']:.3f} +- {row['loss_last_window_std']:.3f}, "
            f"mean |loss - float32's| {row['loss_mean_abs_diff_vs_float32']:.3f}, weights apart/moved "
            f"{row['weights_apart_over_moved'] or 0:.4f}; modes like float32's: same weights {sw}, own weights "
            f"{own[0]:.3f} ({own[1]:.1e}); log Z {ais.log_z:.2f} +- {ais.stderr:.2f}, test LL {ll:.2f}"
            + (f", FID {row['fid']:.2f}" if fid is not None else ""))
    return res


class FIDReference:
    """FID of ``n`` samples drawn as a module draws them, against the first ``n`` binarised MNIST test
    images (their Inception statistics computed once)."""

    def __init__(self, n: int, weights: str | None) -> None:
        self.n, self.weights, self.stats, self.acc = n, weights, None, None

    def __call__(self, module, dm) -> float:
        from qidbm.metrics.fid import FIDAccumulator, compute_fid
        from qidbm.samplers.drawing import draw, trained_sampling

        if self.acc is None:
            self.acc = FIDAccumulator(self.weights)
            self.stats = self.acc.update(dm.test_images()[: self.n], real=True).compute_stats(real=True)
            self.acc.reset()
        spec = module.sampling() if hasattr(module, "sampling") else trained_sampling(dict(module.hparams), False)
        x, _ = draw(module.model, self.n, spec, generator=torch.Generator().manual_seed(11))
        return compute_fid(dm.decode(x), self.stats, accumulator=self.acc)


def parity_markdown(res: dict) -> str:
    L = header_lines(res["header"]) + [""]
    s, par = res["parity"]["settings"], res["parity"]
    L += [f"{par['updates']} updates of the protocol from the same start per row. Loss: mean and std over the last "
          f"{s['loss_window']} updates; mean |loss - float32's| per update. Weights apart/moved: the distance from "
          "float32's final weights over float32's distance from the start. Modes like float32's: the local search of "
          f"{s['mode_chains']} noise starts (same starts and block orders) compared with float32's final weights "
          "searched in float32, as the fraction of chains whose mode is identical in every unit and the fraction of "
          "units that differ; 'same weights' searches float32's weights with the row's own products and kernels "
          "(the path alone), 'own weights' searches the row's trained weights in float32 (what training with it "
          f"learned). AIS: {s['ais_runs']} runs x {s['ais_betas']} betas, float32; test log-likelihood: mean over "
          f"{s['test_images']} test images." + (f" FID: {s['fid_samples']} samples, drawn as the module draws them, "
                                                 f"against {s['fid_samples']} binarised test images." if s["fid_samples"] else "")]
    for model, rows in par["models"].items():
        L += ["", f"**{model}**", "",
              "| variant | loss (last window) | mean abs loss diff | weights apart/moved | modes, same weights: chains "
              "/ units differing | modes, own weights: chains / units differing | log Z | test LL |"
              + (" FID |" if s["fid_samples"] else ""),
              "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if s["fid_samples"] else "")]
        for name, r in rows.items():
            same = "-" if r["modes_same_weights_identical_chains"] is None else \
                f"{r['modes_same_weights_identical_chains']:.3f} / {r['modes_same_weights_units_differing']:.1e}"
            L.append(f"| {name} | {r['loss_last_window_mean']:.3f} +- {r['loss_last_window_std']:.3f} | "
                     f"{r['loss_mean_abs_diff_vs_float32']:.3f} | {r['weights_apart_over_moved'] or 0:.2g} | {same} | "
                     f"{r['modes_own_weights_identical_chains']:.3f} / {r['modes_own_weights_units_differing']:.1e} | "
                     f"{r['ais_log_z']:.2f} +- {r['ais_stderr']:.2f} | {r['test_log_likelihood']:.2f} |"
                     + (f" {r['fid']:.2f} |" if s["fid_samples"] else ""))
    return "\n".join(L) + "\n"


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=CONFIGS, help="the recipe folder (base.yaml + one file per model)")
    p.add_argument("--models", nargs="+", default=["dbm_498", "qidbm_498"])
    p.add_argument("--warmup", type=int, default=200, help="updates of the protocol before timing (cached)")
    p.add_argument("--reps", type=int, default=10, help="timed updates per row")
    p.add_argument("--untimed", type=int, default=2, help="updates before the timed ones (compilation)")
    p.add_argument("--variants", nargs="+", default=[f"{pr}{'+fused' if fu else ''}" for pr, fu in VARIANTS],
                   help="float32, float32+fused, bfloat16, bfloat16+fused")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache", default=str(REPO / "bench" / "results" / "paper_update"))
    p.add_argument("--out", default=None, help="folder for paper_update.json/.md (or paper_parity.* with --parity)")
    p.add_argument("--parity", action="store_true")
    p.add_argument("--parity-models", nargs="+", default=["dbm_498", "qidbm_498"])
    p.add_argument("--parity-updates", type=int, default=300)
    p.add_argument("--ais-runs", type=int, default=100)
    p.add_argument("--ais-betas", type=int, default=3000)
    p.add_argument("--test-images", type=int, default=1000)
    p.add_argument("--mode-chains", type=int, default=600)
    p.add_argument("--fid", type=int, default=0, help="FID on this many samples (0: none; 2000 for the check)")
    p.add_argument("--fid-weights", default=os.environ.get("QIDBM_FID_WEIGHTS"))
    a = p.parse_args(argv)
    set_threads(a.threads)
    os.environ.setdefault("QIDBM_DATA_DIR", str(REPO / "data"))

    def log(msg: str) -> None:
        print(msg, flush=True)

    h = header(__file__, argv)
    for line in header_lines(h)[1:]:
        log(line.rstrip())
    if a.parity:
        res = {"header": h, "parity": parity(a, log)}
        stem, md = "paper_parity", parity_markdown
    else:
        unit = UnitProduct()
        rows = []
        for name in a.models:
            files = [f"{a.configs}/base.yaml", f"{a.configs}/{name}.yaml"]
            log(f"{name}:")
            state = warm_state(files, a.warmup, Path(a.cache), log)
            for v in a.variants:
                precision, _, fused = v.partition("+")
                r = measure(files, state, precision, fused == "fused", a.reps, a.untimed, unit)
                log(f"  {precision:8s} fused {'on ' if r['fused_kernels'] else 'off'}: {r['s_per_update']:.3f} s/update, "
                    f"PE {r['pe']:.0f}, {r['products']:.1f} products, {r['mm_calls']:.0f} mm calls, "
                    f"{r['gflops']:.1f} GFLOP/s, {r['row_sweeps']:.0f} row-sweeps")
                rows.append(r)
        res = {"header": h, "warmup": a.warmup, "reps": a.reps, "rows": rows, "reference": REFERENCE}
        print()
        print_rows(rows)
        stem, md = "paper_update", markdown
    h["load_end"] = os.getloadavg()[0]
    for line in header_lines(h):
        print(line.rstrip())
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
        (out / f"{stem}.md").write_text(md(res))
        print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return res


if __name__ == "__main__":
    main()
