"""One training update of the DO-EM paper's protocol, timed against the machine's matrix product.

The protocol is read from its config files only (``configs/paper/mnist_binary/base.yaml`` plus
``dbm_498.yaml`` / ``qidbm_498.yaml``: 784-498-498, batch 600, SGD lr 1e-3, Taniguchi et al.'s
estimator for both phases). Each model is first trained ``--warmup`` updates (default 200) by a
Lightning Trainer on MNIST, the protocol as ``qidbm fit`` runs it without loggers and callbacks,
because how fast the local search converges depends on the weights (at the orthogonal start it
takes longer than after a few hundred updates). That state is cached under ``--cache``
(``bench/results/paper_update/``), keyed by the composed config and the number of updates.

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
import copy
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qidbm.allocator import reuse_freed_memory  # noqa: E402

# as the `qidbm` command does before torch is imported, so the update timed is the one `qidbm fit` runs
ALLOCATOR_TUNED = reuse_freed_memory()

import torch  # noqa: E402
import yaml  # noqa: E402

from qidbm.profiling import ProductCounter  # noqa: E402

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
    """One training update: the module's loss, its gradient and the optimizer's step (what the
    Trainer's training step does, without logging). The one place to change if the module's API does."""
    if hasattr(module, "fit_step"):
        module.fit_step(v, optimizer)
        return
    optimizer.zero_grad(set_to_none=True)
    loss, _ = module.doem_loss(v)
    loss.backward()
    optimizer.step()


# ----------------------------------------------------------------------------- the protocol from its configs
def _merge(a: Any, b: Any) -> Any:
    """``b`` over ``a`` as a later ``--config`` file overrides an earlier one: mappings key by key (a
    ``class_path`` section's ``init_args`` merged when the class is the same), anything else replaced."""
    if isinstance(a, dict) and isinstance(b, dict):
        if "class_path" in a and "class_path" in b and a["class_path"] != b["class_path"]:
            return copy.deepcopy(b)
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(a[k], v) if k in a else copy.deepcopy(v)
        return out
    return copy.deepcopy(b)


def compose(files: list[str]) -> dict:
    """The ``seed_everything``, ``model`` and ``data`` sections of ``qidbm fit --config f1 --config f2 ...``."""
    cfg: dict = {}
    for f in files:
        cfg = _merge(cfg, yaml.safe_load((REPO / f).read_text()) or {})
    return {k: cfg[k] for k in ("seed_everything", "model", "data") if k in cfg}


def build(files: list[str], overrides: dict | None = None):
    """``(module, datamodule, seed)`` from config files, as LightningCLI builds them (same parser and
    classes; the global seed set first, so the initial weights are the config's)."""
    from lightning.pytorch import LightningDataModule, LightningModule, seed_everything
    from lightning.pytorch.cli import LightningArgumentParser

    cfg = compose(files)
    seed = cfg.get("seed_everything", 0)
    seed = 0 if seed is True or seed is None else int(seed)
    cfg["model"] = {**cfg["model"], "init_args": {**cfg["model"].get("init_args", {}), **(overrides or {})}}
    p = LightningArgumentParser()
    p.add_lightning_class_args(LightningModule, "model", subclass_mode=True, required=True)
    p.add_lightning_class_args(LightningDataModule, "data", subclass_mode=True, required=True)
    parsed = p.parse_object({"model": cfg["model"], "data": cfg["data"]})
    seed_everything(seed, verbose=False)
    init = (p.instantiate if hasattr(p, "instantiate") else p.instantiate_classes)(parsed)
    return init.model, init.data, seed


def config_key(files: list[str]) -> str:
    return hashlib.sha256(json.dumps(compose(files), sort_keys=True, default=str).encode()).hexdigest()[:12]


def chain_generator(module) -> torch.Generator:
    """The module's chain generator (made now if the module makes it only when a fit starts)."""
    g = getattr(module, "generator", None)
    if g is None:
        module._generator = g = torch.Generator().manual_seed(0)
    return g


def optimizer_of(module) -> torch.optim.Optimizer:
    opt = module.configure_optimizers()
    return opt["optimizer"] if isinstance(opt, dict) else opt


class _Losses:
    """A Lightning callback keeping every update's loss."""

    def __new__(cls, out: list):
        from lightning.pytorch.callbacks import Callback

        class Record(Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                loss = outputs["loss"] if isinstance(outputs, dict) else outputs
                out.append(float(loss))

        return Record()


def train(module, dm, steps: int, losses: list | None = None) -> None:
    """``steps`` updates of the protocol by a Lightning Trainer (no loggers, checkpoints or validation)."""
    import logging

    import lightning as L

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # its start-up lines, once per variant

    with tempfile.TemporaryDirectory() as tmp:
        trainer = L.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                            num_sanity_val_steps=0, default_root_dir=tmp,
                            callbacks=[] if losses is None else [_Losses(losses)])
        trainer.fit(module, datamodule=dm)


def warm_state(files: list[str], steps: int, cache: Path, log: Callable[[str], None]) -> dict:
    """The weights and chain generator after ``steps`` updates of the protocol (cached)."""
    name = Path(files[-1]).stem
    path = cache / f"{name}_{steps}updates_{config_key(files)}.pt"
    if path.is_file():
        log(f"  warm state: {path} (cached)")
        return torch.load(path, weights_only=False)
    module, dm, _ = build(files)
    t0 = time.perf_counter()
    train(module, dm, steps)
    state = {"state_dict": {k: v.detach().clone() for k, v in module.state_dict().items()},
             "generator": chain_generator(module).get_state(), "updates": steps, "configs": files}
    log(f"  warm state: {steps} updates in {time.perf_counter() - t0:.0f} s, saved to {path}")
    cache.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def restore(module, state: dict) -> None:
    module.load_state_dict(state["state_dict"])
    chain_generator(module).set_state(state["generator"])


def batches(dm, n: int, skip: int) -> list[torch.Tensor]:
    """``n`` training batches of the data module, after the first ``skip`` of its (seeded) order."""
    from qidbm.lightning.data_init import as_visible

    dm.setup("fit")  # loads the data once; later calls return at once
    out = []
    while len(out) < n:
        for b in dm.train_dataloader():
            if skip > 0:
                skip -= 1
                continue
            out.append(as_visible(b).float())
            if len(out) == n:
                break
    return out


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
    module, dm, _ = build(files, {"matmul_precision": precision, "fused_kernels": fused})
    data = batches(dm, untimed + reps, skip=state["updates"])
    restore(module, state)
    opt = optimizer_of(module)
    for v in data[:untimed]:
        one_update(module, opt, v)
    restore(module, state)  # the timed updates start from the warm state itself
    t_update, t_unit = [], []
    for v in data[untimed:]:
        t_unit.append(unit.best_of())
        t0 = time.perf_counter()
        one_update(module, opt, v)
        t_update.append(time.perf_counter() - t0)
    restore(module, state)  # the same updates again, counted (eagerly: counters are dispatch modes)
    flops, product_flops, calls, shape_flops, sweeps = 0, 0, 0, 0, []
    with counting_sweeps(sweeps):
        for v in data[untimed:]:
            with ProductCounter() as pc:
                one_update(module, opt, v)
            flops += pc.flops
            product_flops += pc.product_flops
            shape_flops += pc.shape_flops
            calls += pc.calls
    if shape_flops != product_flops:
        raise RuntimeError(f"the two product counters disagree: {shape_flops} (shapes) vs {product_flops} (FlopCounterMode)")
    med = statistics.median(t_update)
    return {
        "model": Path(files[-1]).stem, "matmul_precision": precision, "fused_kernels": fused, "reps": reps,
        "s_per_update": med, "s_per_update_all": t_update, "unit_product_s": statistics.median(t_unit),
        "pe": statistics.median(a / b for a, b in zip(t_update, t_unit)),
        "products": shape_flops / reps / (2 * math.prod(UNIT)), "mm_calls": calls / reps,
        "gflops": flops / reps / med / 1e9, "flops_per_update": flops / reps,
        "row_sweeps": sum(sweeps) / reps,
    }


# ----------------------------------------------------------------------------- report
def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    commit, dirty = "unknown", None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--", "qidbm", "bench", "configs"], cwd=REPO,
                                    capture_output=True, text=True).stdout.strip())
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "blas": "MKL" if torch.backends.mkl.is_available() else "other", "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "commit": commit,
            "uncommitted_changes": dirty, "allocator": "qidbm (freed blocks kept)" if ALLOCATOR_TUNED else "glibc defaults"}


def header(m: dict, load: tuple) -> list[str]:
    return [f"{m['cpu']} ({m['cores']} cores), torch {m['torch']} ({m['blas']}), {m['threads']} thread(s), "
            f"allocator: {m['allocator']}",
            f"{m['date']}, commit {m['commit'][:12]}{' + uncommitted changes' if m['uncommitted_changes'] else ''}, "
            f"1-minute load average {load[0]:.2f} at the start, {load[1]:.2f} at the end"]


def markdown(res: dict) -> str:
    L = [f"Command: `{res['command']}`  "] + [s + "  " for s in header(res["machine"], res["load"])]
    L += [f"Warm state: {res['warmup']} updates of the protocol at the config's learning rate; {res['reps']} timed "
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

    seed = compose(files).get("seed_everything", 0)
    seed = 0 if seed is True or seed is None else int(seed)
    # the chains' default seed is the global one (torch.initial_seed() after seed_everything)
    variants = {"float32": {}, "bfloat16": {"matmul_precision": "bfloat16"}, "fused": {"fused_kernels": True},
                "float32, other chain seed": {"chain_seed": seed + 1}}
    runs: dict[str, dict] = {}
    for name, over in variants.items():
        module, dm, _ = build(files, over)
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
    base = base_rate_visible_bias(torch.cat(batches(dm, 20, skip=0)))

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
    L = [f"Command: `{res['command']}`  "] + [s + "  " for s in header(res["machine"], res["load"])]
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
                     f"{r['loss_mean_abs_diff_vs_float32']:.3f} | {r['weights_apart_over_moved'] or 0:.3f} | {same} | "
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
    torch.set_num_threads(a.threads)
    os.environ.setdefault("QIDBM_DATA_DIR", str(REPO / "data"))

    def log(msg: str) -> None:
        print(msg, flush=True)

    m = machine()
    load0 = os.getloadavg()[0]
    for line in header(m, (load0, float("nan")))[:2]:
        log(line.split(", 1-minute")[0])
    command = " ".join(["python", "bench/paper_update.py", *(argv if argv is not None else sys.argv[1:])])
    if a.parity:
        res = {"command": command, "machine": m, "parity": parity(a, log)}
        res["load"] = (load0, os.getloadavg()[0])
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
        res = {"command": command, "machine": m, "warmup": a.warmup, "reps": a.reps, "rows": rows,
               "reference": REFERENCE, "load": (load0, os.getloadavg()[0])}
        print()
        print_rows(rows)
        stem, md = "paper_update", markdown
    for line in header(m, res["load"]):
        print(line)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=str))
        (out / f"{stem}.md").write_text(md(res))
        print(f"wrote {out / (stem + '.json')} and {out / (stem + '.md')}")
    return res


if __name__ == "__main__":
    main()
