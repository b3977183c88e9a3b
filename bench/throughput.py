"""Training and sampling throughput of every qidbm model against the machine's matmul limit.

One run measures, side by side and with the same thread count:

* the float32 matmul rate of this machine for exactly the matrix products one training step
  (and one Gibbs sweep) of each model performs: every ``aten::mm``/``addmm`` of a real step is
  recorded with its shapes and memory layout (a ``TorchDispatchMode``), then each distinct
  product is replayed alone into a preallocated output, best of several repetitions. The
  *matmul limit* of a step is the sum of those best times; ``ratio = limit / measured step
  time`` is the achieved FLOP rate over the matmul rate for the same shapes;
* training samples/s of the real training step (``BoltzmannModule.doem_loss`` + backward +
  ``torch.optim.SGD.step``, no Lightning) for CD-1, CD-k (k = 5) and PCD-1, plus one
  Lightning ``Trainer.fit`` on an in-memory loader (the Lightning overhead);
* sampling sweeps/s of the kernels' ``run`` (``qidbm.samplers.kernels`` (600 chains; paper and exact quantum step);
* FLOPs per step and per sweep, counted by ``torch.utils.flop_counter.FlopCounterMode`` on one
  real step (matrix products only: elementwise work is not counted; it is <1% of the FLOPs
  here) and cross-checked against the recorded products;
* peak resident memory per configuration (``VmHWM`` of ``/proc/self/status``, reset through
  ``/proc/self/clear_refs`` after ``malloc_trim`` before each configuration) and minor page
  faults per step (allocator churn);
* scikit-learn's ``BernoulliRBM(n_components=500, batch_size=600, n_iter=1)`` (PCD-1) on
  binarised MNIST (float32), and the simplest correct plain-PyTorch CD-1 loop for the 784-500
  RBM (the floor);
* the quantum layers' overhead against their classical twins (QRBM/RBM, QiDBM/DBM, QGRBM/GRBM).

Models: RBM and QRBM 784-500 and 784-{498, 588, 686, 784} (the paper's hidden sizes),
DBM and QiDBM 784-s-s (s in 498, 588, 686, 784; QiDBM's layer 1 quantum), GRBM and QGRBM
784-500 (continuous MNIST), and, in the full run only, the 8-bit (bit-plane) MNIST DBM and
QiDBM with 6272 units per layer (PCD-1 and sampling only: ~0.2 TFLOP per sweep).
Batch size 600 throughout; data are real MNIST batches (``$QIDBM_DATA_DIR``).

Usage::

    python bench/throughput.py                    # full run, threads 1 and 2 (~10-15 min on 2 idle cores)
    python bench/throughput.py --quick            # CI smoke run (< ~60 s): few configs, 1 thread count
    python bench/throughput.py --threads 2        # one thread count
    python bench/throughput.py --profile          # + torch.profiler summary of a QiDBM 784-498-498 PCD-1 step
    python bench/throughput.py --experiments      # + each performance change patched out (applied) or in (candidates)

Writes ``bench/results/throughput.json`` and ``bench/results/throughput.md`` (``--quick``:
``throughput_quick.*``), each with the command, torch version, thread counts, machine and load.
Timings are only meaningful on an otherwise idle machine: the 1-minute load average at the
start and end of each thread count's run is recorded.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qidbm.allocator import reuse_freed_memory  # noqa: E402

# as the `qidbm` command does, so the benchmarks time what `qidbm fit` runs (QIDBM_DEFAULT_MALLOC=1: glibc's defaults)
ALLOCATOR_TUNED = reuse_freed_memory()

from qidbm.lightning.module import BoltzmannModule  # noqa: E402
from qidbm.models import DBM, GRBM, QGRBM, QRBM, RBM, QiDBM  # noqa: E402
from qidbm.precision import matmul_precision  # noqa: E402
from qidbm.samplers import PaperStep, make_kernel  # noqa: E402

BATCH = 600
# --matmul-precision: the modules' and samplers' products (qidbm.precision); the matmul limit is
# always replayed in float32, so with bfloat16 a ratio above 1 is the speed-up over float32's limit
PRECISION = "float32"
MNIST_TRAIN = 60000
PAPER_SIZES = (498, 588, 686, 784)


# ----------------------------------------------------------------------------- machine / process
def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def machine() -> dict[str, Any]:
    cpu = platform.processor() or "cpu"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "description": f"{os.cpu_count()}-core CPU, no GPU",
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "allocator": "qidbm (freed blocks kept)" if ALLOCATOR_TUNED else "glibc defaults",
    }


def _status_kb(key: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def minor_faults() -> int:
    """Minor page faults of this process so far (field 10 of /proc/self/stat)."""
    stat = open("/proc/self/stat").read()
    return int(stat.rsplit(")", 1)[1].split()[7])


_LIBC = None
with contextlib.suppress(OSError):
    _LIBC = ctypes.CDLL("libc.so.6")


def reset_peak_memory() -> bool:
    """Return freed heap to the OS and reset VmHWM to the current RSS (Linux >= 4.0)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def peak_rss_mb() -> float:
    return _status_kb("VmHWM") / 1024


# ----------------------------------------------------------------------------- timing helpers
_LAST_CPU: list[float] = []  # process CPU times of the last time_calls (all threads summed)


def time_calls(fn: Callable[[], Any], warmup: int, min_reps: int, min_time: float, max_reps: int = 1000) -> list[float]:
    """Per-call wall times of ``fn`` after ``warmup`` calls: at least ``min_reps`` calls and
    at least ``min_time`` seconds (at most ``max_reps`` calls)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < min_time and len(times) < max_reps):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    _LAST_CPU[:] = cpu
    return times


def summarize(times: list[float], scale: float = 1.0) -> dict[str, float]:
    """Wall-time statistics, plus the median process CPU time of the same calls (``cpu_median_s``):
    with one thread and a busy machine the CPU time is the better estimate of the work."""
    cpu = [c / scale for c in _LAST_CPU] if len(_LAST_CPU) == len(times) else []
    return {"median_s": statistics.median(times), "min_s": min(times), "mean_s": statistics.fmean(times), "reps": len(times),
            "cpu_median_s": statistics.median(cpu) if cpu else float("nan")}


# ----------------------------------------------------------------------------- matmul recording and limit
_MM_OPS = {torch.ops.aten.mm.default: (0, 1), torch.ops.aten.addmm.default: (1, 2)}


def _layout(t: torch.Tensor) -> str:
    if t.is_contiguous():
        return "N"
    if t.dim() == 2 and t.t().is_contiguous():
        return "T"
    return "S"


class MatmulRecorder(TorchDispatchMode):
    """Records every 2-D matrix product (``aten::mm``, ``aten::addmm``) run under it:
    ``(m, k, n, layout_a, layout_b) -> count``; N = contiguous, T = a transposed contiguous view."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: dict[tuple, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        idx = _MM_OPS.get(func)
        if idx is not None:
            a, b = args[idx[0]], args[idx[1]]
            key = (a.shape[0], a.shape[1], b.shape[1], _layout(a), _layout(b))
            self.calls[key] = self.calls.get(key, 0) + 1
        return func(*args, **(kwargs or {}))


def mm_flops(calls: dict[tuple, int]) -> int:
    return sum(2 * m * k * n * c for (m, k, n, _, _), c in calls.items())


class MatmulLimit:
    """Best-of-``reps`` float32 time of each distinct product (same shapes and layouts), cached."""

    def __init__(self, reps: int) -> None:
        self.reps = reps
        self.best: dict[tuple, float] = {}
        self.best_cpu: dict[tuple, float] = {}  # CPU time / threads: robust to other jobs at 1 thread

    def _operand(self, rows: int, cols: int, layout: str) -> torch.Tensor:
        if layout == "T":
            return torch.rand(cols, rows).t()
        return torch.rand(rows, cols)

    def time_of(self, key: tuple) -> float:
        if key not in self.best:
            m, k, n, la, lb = key
            a, b = self._operand(m, k, la), self._operand(k, n, lb)
            out = torch.empty(m, n)
            reps = self.reps if m * k * n < 5e9 else max(2, self.reps // 3)
            self.best[key] = min(time_calls(lambda: torch.mm(a, b, out=out), warmup=1, min_reps=reps, min_time=0.0, max_reps=reps))
            self.best_cpu[key] = min(_LAST_CPU) / torch.get_num_threads()
        return self.best[key]

    def limit(self, calls: dict[tuple, int]) -> dict[str, float]:
        t = sum(self.time_of(k) * c for k, c in calls.items())
        tc = sum(self.best_cpu[k] * c for k, c in calls.items())
        f = mm_flops(calls)
        return {"limit_s": t, "matmul_gflops": f / t / 1e9 if t > 0 else float("nan"), "limit_cpu_s": tc}

    def table(self) -> list[dict[str, Any]]:
        return [
            {"m": m, "k": k, "n": n, "layout": la + lb, "best_s": s, "gflops": 2 * m * k * n / s / 1e9,
             "gflops_cpu_time": 2 * m * k * n / self.best_cpu[(m, k, n, la, lb)] / 1e9}
            for (m, k, n, la, lb), s in sorted(self.best.items())
        ]


def _cpu_ratio(lim: dict, times: list[float], per: int = 1) -> float:
    """Matmul limit over the measured step in CPU time (both divided by the thread count)."""
    if len(_LAST_CPU) != len(times):
        return float("nan")
    return lim["limit_cpu_s"] / (statistics.median(_LAST_CPU) / per / torch.get_num_threads())


def count_step(fn: Callable[[], Any]) -> tuple[int, dict[tuple, int]]:
    """FLOPs of one call of ``fn`` (FlopCounterMode) and its recorded matrix products."""
    rec = MatmulRecorder()
    fc = FlopCounterMode(display=False)
    with fc, rec:
        fn()
    return int(fc.get_total_flops()), rec.calls


# ----------------------------------------------------------------------------- configurations
@dataclass
class Config:
    name: str
    family: str  # RBM, QRBM, GRBM, QGRBM, DBM, QiDBM
    sizes: tuple[int, ...]
    encoding: str  # binary, continuous, bitplanes
    modes: tuple[str, ...] = ("CD-1", "CD-5", "PCD-1")
    sample_steps: tuple[str, ...] = ("paper",)
    twin: str | None = None  # name of the classical twin, for quantum configs
    paper_shape: bool = True  # counts towards the 70%-of-limit goal
    extra: dict = field(default_factory=dict)

    def build(self) -> torch.nn.Module:
        torch.manual_seed(0)
        cls = {"RBM": RBM, "QRBM": QRBM, "GRBM": GRBM, "QGRBM": QGRBM}.get(self.family)
        if cls is not None:
            return cls(self.sizes[0], self.sizes[1])
        if self.family == "DBM":
            return DBM(list(self.sizes))
        return QiDBM(list(self.sizes), quantum_layers=(1,))


def configs(quick: bool) -> list[Config]:
    out: list[Config] = []
    rbm_sizes = (500,) if quick else (500,) + PAPER_SIZES
    # --quick: fewer modes (CI budget); the full run does CD-1, CD-5 and PCD-1 everywhere
    rm = ("CD-1", "PCD-1") if quick else ("CD-1", "CD-5", "PCD-1")
    dm = ("PCD-1",) if quick else ("CD-1", "CD-5", "PCD-1")
    for s in rbm_sizes:
        out.append(Config(f"RBM 784-{s}", "RBM", (784, s), "binary", modes=rm))
        out.append(Config(f"QRBM 784-{s}", "QRBM", (784, s), "binary", modes=rm, sample_steps=("paper", "exact"), twin=f"RBM 784-{s}"))
    for s in (498,) if quick else PAPER_SIZES:
        out.append(Config(f"DBM 784-{s}-{s}", "DBM", (784, s, s), "binary", modes=dm))
        out.append(Config(f"QiDBM 784-{s}-{s}", "QiDBM", (784, s, s), "binary", modes=dm, sample_steps=("paper", "exact"), twin=f"DBM 784-{s}-{s}"))
    if not quick:
        out.append(Config("GRBM 784-500", "GRBM", (784, 500), "continuous", paper_shape=False))
        out.append(Config("QGRBM 784-500", "QGRBM", (784, 500), "continuous", sample_steps=("paper", "exact"), twin="GRBM 784-500", paper_shape=False))
        big = (6272, 6272, 6272)
        out.append(Config("DBM 6272-6272-6272 (8-bit)", "DBM", big, "bitplanes", modes=("PCD-1",), paper_shape=False))
        out.append(
            Config(
                "QiDBM 6272-6272-6272 (8-bit)", "QiDBM", big, "bitplanes", modes=("PCD-1",),
                sample_steps=("paper", "exact"), twin="DBM 6272-6272-6272 (8-bit)", paper_shape=False,
            )
        )
    return out


MODE_ARGS = {"CD-1": ("data", 1), "CD-5": ("data", 5), "PCD-1": ("persistent", 1)}


# ----------------------------------------------------------------------------- data
def load_data(quick: bool, need: set[str], n_batches: int) -> dict[str, torch.Tensor]:
    """Real MNIST training batches per encoding: ``binary`` is the whole training split (for
    scikit-learn), the others ``n_batches`` batches."""
    from qidbm.data import MNISTDataModule

    os.environ.setdefault("QIDBM_DATA_DIR", "/work/shared/data")
    out = {}
    for enc in sorted(need):
        dm = MNISTDataModule(encoding=enc, batch_size=BATCH, download=False)
        dm.prepare_data()
        dm.setup("fit")
        pix = dm.split_pixels("train")
        n = pix.shape[0] if enc == "binary" and not quick else n_batches * BATCH
        out[enc] = dm.encode(pix[:n]).reshape(n, -1).contiguous()
    return out


# ----------------------------------------------------------------------------- the real training step
def make_module(cfg: Config, mode: str) -> tuple[BoltzmannModule, torch.optim.Optimizer]:
    start, k = MODE_ARGS[mode]
    model = cfg.build()
    module = BoltzmannModule(model, cd_steps=k, negative_start=start, chain_seed=0, init_visible_bias=False,
                             matmul_precision=PRECISION)
    # what on_fit_start does, without a Trainer
    module._generator = torch.Generator().manual_seed(0)
    opt = module.configure_optimizers()
    return module, opt


def make_step(module: BoltzmannModule, opt: torch.optim.Optimizer, batches: list[torch.Tensor]) -> Callable[[], None]:
    it = itertools.cycle(batches)

    def step() -> None:
        v = next(it)
        opt.zero_grad(set_to_none=True)
        loss, _ = module.doem_loss(v)
        loss.backward()
        opt.step()

    return step


def measure_training(cfg: Config, mode: str, batches: list[torch.Tensor], mm: MatmulLimit, budget: dict) -> dict[str, Any]:
    module, opt = make_module(cfg, mode)
    step = make_step(module, opt, batches)
    if budget["warmup"] > 0:
        step()  # warm-up (allocates the persistent chains for PCD); the counted step warms up too
    flops, calls = count_step(step)
    lim = mm.limit(calls)
    f0 = minor_faults()
    times = time_calls(step, warmup=budget["warmup"], min_reps=budget["min_reps"], min_time=budget["min_time"])
    faults = (minor_faults() - f0) / max(len(times), 1)
    t = statistics.median(times)
    return {
        **summarize(times),
        "samples_per_s": BATCH / t,
        "epoch_s": MNIST_TRAIN / (BATCH / t),
        "flops_per_step": flops,
        "mm_flops_recorded": mm_flops(calls),
        "n_matmuls": sum(calls.values()),
        "gflops_achieved": flops / t / 1e9,
        **lim,
        "ratio": lim["limit_s"] / t,
        "ratio_cpu_time": _cpu_ratio(lim, times),
        "minor_faults_per_step": faults,
        "matmuls": [{"m": m, "k": k, "n": n, "layout": a + b, "count": c} for (m, k, n, a, b), c in calls.items()],
    }


def measure_sampling(cfg: Config, step_kind: str, model: torch.nn.Module, mm: MatmulLimit, budget: dict, sweeps: int) -> dict[str, Any]:
    sampler = make_kernel(quantum_step=step_kind)
    g = torch.Generator().manual_seed(1)
    state = model.random_state(BATCH, g)
    last_stats = []

    def run() -> None:
        with matmul_precision(PRECISION):
            last_stats[:] = [sampler.run(model, state, sweeps, generator=g)[1]]

    def one_sweep() -> None:
        with matmul_precision(PRECISION):
            sampler.run(model, state, 1, generator=g)

    flops, calls = count_step(one_sweep)
    lim = mm.limit(calls)
    times = time_calls(run, warmup=1, min_reps=budget["min_reps"], min_time=budget["min_time"])
    t = statistics.median(times) / sweeps
    out = {
        "sweeps_per_call": sweeps,
        **summarize([x / sweeps for x in times], scale=sweeps),
        "sweeps_per_s": 1.0 / t,
        "flops_per_sweep": flops,
        "gflops_achieved": flops / t / 1e9,
        **lim,
        "ratio": lim["limit_s"] / t,
        "ratio_cpu_time": _cpu_ratio(lim, times, sweeps),
    }
    if step_kind == "exact" and cfg.family.startswith("Q"):
        acc = last_stats[0].acceptance() if last_stats else {}
        out["acceptance"] = {str(l): float(a) for l, a in acc.items()}
    return out


def run_config(cfg: Config, data: dict[str, torch.Tensor], mm: MatmulLimit, budget: dict, sweeps: int = 5) -> dict[str, Any]:
    big = cfg.sizes[0] > 1000
    b = dict(budget)
    if big:
        b.update(warmup=0, min_reps=1, min_time=0.0)
    x = data[cfg.encoding]
    batches = [x[i * BATCH : (i + 1) * BATCH] for i in range(min(4, x.shape[0] // BATCH))]
    res: dict[str, Any] = {"name": cfg.name, "family": cfg.family, "sizes": list(cfg.sizes), "encoding": cfg.encoding,
                           "twin": cfg.twin, "paper_shape": cfg.paper_shape, "training": {}, "sampling": {}}
    peaks = {}
    ok = reset_peak_memory()
    res["rss_at_start_mb"] = rss_mb()
    model = cfg.build()
    for kind in cfg.sample_steps:
        res["sampling"][kind] = measure_sampling(cfg, kind, model, mm, b, sweeps=1 if big else sweeps)
    del model
    peaks["sampling"] = peak_rss_mb()
    for mode in cfg.modes:
        reset_peak_memory()
        res["training"][mode] = measure_training(cfg, mode, batches, mm, b)
        peaks[mode] = peak_rss_mb()
        res["training"][mode]["peak_rss_mb"] = peaks[mode]
    res["peak_rss_mb"] = max(peaks.values())
    res["peak_rss_reset"] = ok
    return res


# ----------------------------------------------------------------------------- baselines
def plain_cd1_floor(x: torch.Tensor, n_batches: int, budget: dict, mm: MatmulLimit) -> dict[str, Any]:
    """The simplest correct plain-PyTorch CD-1 loop for a 784-500 binary RBM (SGD, lr 1e-3)."""
    torch.manual_seed(0)
    nv, nh, lr = x.shape[1], 500, 1e-3
    W = torch.randn(nv, nh) * 0.01
    a = torch.zeros(nv)
    b = torch.zeros(nh)
    g = torch.Generator().manual_seed(0)
    batches = [x[i * BATCH : (i + 1) * BATCH] for i in range(n_batches)]
    it = itertools.cycle(batches)

    def step() -> None:
        v0 = next(it)
        ph0 = torch.sigmoid(v0 @ W + b)
        h0 = torch.bernoulli(ph0, generator=g)
        v1 = torch.bernoulli(torch.sigmoid(h0 @ W.t() + a), generator=g)
        ph1 = torch.sigmoid(v1 @ W + b)
        # CD-1 gradient of the log-likelihood (hidden units Rao-Blackwellised), ascent step
        W.add_(v0.t() @ ph0 - v1.t() @ ph1, alpha=lr / BATCH)
        a.add_((v0 - v1).sum(0), alpha=lr / BATCH)
        b.add_((ph0 - ph1).sum(0), alpha=lr / BATCH)

    step()
    flops, calls = count_step(step)
    lim = mm.limit(calls)
    f0 = minor_faults()
    times = time_calls(step, warmup=budget["warmup"], min_reps=budget["min_reps"], min_time=budget["min_time"])
    t = statistics.median(times)
    return {
        **summarize(times),
        "samples_per_s": BATCH / t,
        "epoch_s": MNIST_TRAIN / (BATCH / t),
        "flops_per_step": flops,
        "gflops_achieved": flops / t / 1e9,
        **lim,
        "ratio": lim["limit_s"] / t,
        "ratio_cpu_time": _cpu_ratio(lim, times),
        "minor_faults_per_step": (minor_faults() - f0) / len(times),
    }


def sklearn_rbm(x: torch.Tensor, threads: int) -> dict[str, Any]:
    """scikit-learn BernoulliRBM(500, batch 600, one epoch of PCD-1) on float32 binary MNIST."""
    import sklearn
    from sklearn.neural_network import BernoulliRBM
    from threadpoolctl import threadpool_info, threadpool_limits

    X = x.numpy().astype("float32", copy=False)
    reset_peak_memory()
    with threadpool_limits(limits=threads):
        rbm = BernoulliRBM(n_components=500, batch_size=BATCH, n_iter=1, learning_rate=0.1, random_state=0)
        t0 = time.perf_counter()
        rbm.fit(X)
        t = time.perf_counter() - t0
    return {
        "sklearn": sklearn.__version__,
        "n_samples": int(X.shape[0]),
        "fit_s": t,
        "samples_per_s": X.shape[0] / t,
        "epoch_s": MNIST_TRAIN * t / X.shape[0],
        "weights_dtype": str(rbm.components_.dtype),
        "blas": sorted({p.get("internal_api", "?") for p in threadpool_info()}),
        "peak_rss_mb": peak_rss_mb(),
    }


# ----------------------------------------------------------------------------- lightning overhead
def lightning_fit(cfg: Config, batches: list[torch.Tensor], n_steps: int, warm: int) -> dict[str, Any]:
    """Per-step wall time inside ``Trainer.fit`` (PCD-1, in-memory loader, no logger/checkpoints)."""
    import lightning as L
    from torch.utils.data import DataLoader

    stamps: list[float] = []

    class Stamp(L.Callback):
        def on_train_batch_end(self, *args, **kwargs) -> None:
            stamps.append(time.perf_counter())

    module, _ = make_module(cfg, "PCD-1")
    loader = DataLoader(batches * (n_steps // len(batches) + 1), batch_size=None, shuffle=False)
    trainer = L.Trainer(
        max_steps=n_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, callbacks=[Stamp()],
    )
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    total = time.perf_counter() - t0
    per_step = [b - a for a, b in zip(stamps[warm:], stamps[warm + 1 :])]
    t = statistics.median(per_step)
    return {"config": cfg.name, "mode": "PCD-1", "steps": n_steps, "fit_total_s": total, **summarize(per_step),
            "samples_per_s": BATCH / t}


# ----------------------------------------------------------------------------- profile
def profile_step(cfg: Config, batches: list[torch.Tensor], steps: int, out_txt: Path) -> dict[str, Any]:
    """torch.profiler over ``steps`` PCD-1 training steps; top ops by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    module, opt = make_module(cfg, "PCD-1")
    step = make_step(module, opt, batches)
    for _ in range(3):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=False) as prof:
        for _ in range(steps):
            step()
    ka = prof.key_averages()
    table = ka.table(sort_by="self_cpu_time_total", row_limit=25)
    total = sum(e.self_cpu_time_total for e in ka)
    mm_ops = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")
    mm = sum(e.self_cpu_time_total for e in ka if e.key in mm_ops)
    rows = sorted(
        ({"op": e.key, "self_ms_per_step": e.self_cpu_time_total / 1000 / steps, "calls_per_step": e.count / steps,
          "share": e.self_cpu_time_total / total} for e in ka),
        key=lambda r: -r["self_ms_per_step"],
    )[:25]
    out_txt.write_text(f"# torch.profiler: {cfg.name}, PCD-1, batch {BATCH}, {steps} steps, {torch.get_num_threads()} threads\n\n{table}\n")
    return {"config": cfg.name, "steps": steps, "threads": torch.get_num_threads(), "self_cpu_ms_per_step": total / 1000 / steps,
            "matmul_share": mm / total, "top": rows, "table_file": str(out_txt.relative_to(REPO))}


# ----------------------------------------------------------------------------- elementwise kernels
def kernel_costs(reps: int = 20) -> list[dict[str, Any]]:
    """Median time of single float32 ops on a 600 x 500 tensor (one layer of one batch), next to the
    600x784x500 product they accompany: which elementwise kernels are vectorised in this build."""
    from qidbm.quantum import softplus as quantum_softplus

    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 500, generator=g) * 3
    y = torch.rand(600, 500, generator=g) + 0.5
    m = x > 0
    mf = m.to(x.dtype)
    a, w = torch.rand(600, 784, generator=g), torch.rand(784, 500, generator=g)
    ops: list[tuple[str, Callable[[], Any]]] = [
        ("mm 600x784x500 (for scale)", lambda: a @ w),
        ("add", lambda: x + y), ("mul", lambda: x * y), ("div", lambda: x / y), ("abs", lambda: x.abs()),
        ("clamp_min", lambda: x.clamp_min(0)), ("exp", lambda: torch.exp(x)), ("log", lambda: torch.log(y)),
        ("log1p", lambda: torch.log1p(y)), ("F.softplus", lambda: F.softplus(x)), ("tanh", lambda: torch.tanh(x)),
        ("sigmoid", lambda: torch.sigmoid(x)), ("hypot", lambda: torch.hypot(x, y)), ("x > 0", lambda: x > 0),
        ("bool.to(float32)", lambda: m.to(torch.float32)), ("torch.where(mask, x, y)", lambda: torch.where(m, x, y)),
        ("masked_fill", lambda: x.masked_fill(m, 1.0)), ("lerp(y, x, 0/1 weight)", lambda: torch.lerp(y, x, mf)),
        ("torch.rand (mt19937)", lambda: torch.rand(600, 500, generator=g)),
        ("rand < p, to float (qidbm bernoulli)", lambda: (torch.rand(600, 500, generator=g) < y).to(y.dtype)),
        ("torch.bernoulli(p)", lambda: torch.bernoulli(y * 0.5, generator=g)),
        ("qidbm.quantum.softplus (log-based, no log1p)", lambda: quantum_softplus(x)),
        ("log1p float64", lambda: torch.log1p(y.double())),
    ]
    out = []
    for name, fn in ops:
        times = time_calls(fn, warmup=2, min_reps=reps, min_time=0.0, max_reps=reps)
        out.append({"op": name, "median_ms": 1e3 * statistics.median(times), "cpu_median_ms": 1e3 * statistics.median(_LAST_CPU)})
    return out


# ----------------------------------------------------------------------------- what-if experiments
@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


# The closed forms as they were before the performance issue's rewrite (torch.where branches,
# float32 log1p, recomputation in backward), kept here so that the benchmark measures the
# applied change: `experiments()` patches these back into the core and times both.
def legacy_softplus(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min(0) + torch.log1p(torch.exp(-x.abs()))


def legacy_tanhc(r: torch.Tensor) -> torch.Tensor:
    small = r.abs() < 1e-3
    r_safe = torch.where(small, torch.ones_like(r), r)
    r2 = r * r
    return torch.where(small, 1.0 - r2 / 3.0 + 2.0 * r2 * r2 / 15.0, torch.tanh(r_safe) / r_safe)


def _legacy_r_pm_u(u: torch.Tensor, r: torch.Tensor, gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    big = r + u.abs()
    small = gamma * (gamma / torch.where(big > 0, big, torch.ones_like(big)))
    pos = u >= 0
    return torch.where(pos, big, small), torch.where(pos, small, big)


def legacy_qubit_prob_one(phi: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    phi, gamma = torch.broadcast_tensors(phi, gamma)
    u = 0.5 * phi
    r = torch.hypot(u, gamma)
    rpu, rmu = _legacy_r_pm_u(u, r, gamma)
    e = torch.exp(-2.0 * r)
    zero = r == 0
    r_safe = torch.where(zero, torch.ones_like(r), r)
    p = (rpu + rmu * e) / (2.0 * r_safe * (1.0 + e))
    return torch.where(zero, torch.full_like(p, 0.5), p)


class _LegacyQubitLogPartition(torch.autograd.Function):
    @staticmethod
    def forward(ctx, phi, gamma):  # type: ignore[override]
        u = 0.5 * phi
        r = torch.hypot(u, gamma)
        ctx.save_for_backward(phi, gamma)
        rpu, _ = _legacy_r_pm_u(u, r, gamma)
        return rpu + F.softplus(-2.0 * r)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        from qidbm.quantum import _sum_to

        phi, gamma = ctx.saved_tensors
        gp = gg = None
        if ctx.needs_input_grad[0]:
            gp = _sum_to(grad * legacy_qubit_prob_one(phi, gamma), phi.shape)
        if ctx.needs_input_grad[1]:
            r = torch.hypot(0.5 * phi, gamma)
            gg = _sum_to(grad * gamma * legacy_tanhc(r), gamma.shape)
        return gp, gg


def legacy_qubit_log_partition(phi: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    phi, gamma = torch.broadcast_tensors(phi, gamma)
    return _LegacyQubitLogPartition.apply(phi, gamma)


def legacy_closed_form_patches() -> list[tuple[Any, str, Any]]:
    """(module, name, value) routing every use of the closed forms back to the legacy ones."""
    import qidbm.lightning.module as lm
    import qidbm.models.base as mb
    import qidbm.samplers.kernels as gb
    from qidbm import quantum

    return [
        (quantum, "softplus", legacy_softplus), (mb, "softplus", legacy_softplus),
        (quantum, "qubit_prob_one", legacy_qubit_prob_one), (mb, "qubit_prob_one", legacy_qubit_prob_one),
        (gb, "qubit_prob_one", legacy_qubit_prob_one), (lm, "qubit_prob_one", legacy_qubit_prob_one),
        (quantum, "qubit_log_partition", legacy_qubit_log_partition), (mb, "qubit_log_partition", legacy_qubit_log_partition),
        (quantum, "tanhc", legacy_tanhc),
    ]


def closed_form_accuracy() -> dict[str, float]:
    """Max error of the current closed forms against the legacy ones at the same dtype, over random
    and extreme inputs (|phi| up to 1e3, Gamma from 0 to 50, exact zeros), in float64 and float32."""
    from qidbm import quantum

    g = torch.Generator().manual_seed(0)
    phi = torch.cat([torch.randn(20000, generator=g) * s for s in (0.01, 1.0, 10.0, 300.0)] + [torch.tensor([0.0, 0.0, 1e3, -1e3, 1e-30])])
    gam = torch.cat([torch.rand(20000, generator=g) * s for s in (1e-6, 1.0, 5.0, 50.0)] + [torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0])])
    gam[::7] = 0.0
    out = {}
    for dt in (torch.float64, torch.float32):
        p, gm = phi.to(dt).requires_grad_(), gam.to(dt).requires_grad_()
        p0, g0 = phi.to(dt).requires_grad_(), gam.to(dt).requires_grad_()
        tag = str(dt).replace("torch.", "")
        with torch.no_grad():
            out[f"prob_one_abs_err_{tag}"] = float((quantum.qubit_prob_one(p, gm) - legacy_qubit_prob_one(p0, g0)).abs().max())
        ref_l = legacy_qubit_log_partition(p0, g0)
        lz = quantum.qubit_log_partition(p, gm)
        out[f"log_partition_rel_err_{tag}"] = float(((lz - ref_l).detach().abs() / ref_l.detach().abs().clamp_min(1e-30)).max())
        gp, gg = torch.autograd.grad(lz.sum(), (p, gm))
        rp, rg = torch.autograd.grad(ref_l.sum(), (p0, g0))
        out[f"log_partition_grad_phi_abs_err_{tag}"] = float((gp - rp).abs().max())
        out[f"log_partition_grad_gamma_abs_err_{tag}"] = float((gg - rg).abs().max())
        x = torch.cat([torch.linspace(-80, 80, 100001), torch.tensor([0.0, -1e3, 1e3])]).to(dt)
        ref_s = legacy_softplus(x)
        ok = ref_s > 0
        out[f"softplus_rel_err_{tag}"] = float(((quantum.softplus(x) - ref_s).abs()[ok] / ref_s[ok]).max())
    return out


def experiments(data: dict[str, torch.Tensor], mm: MatmulLimit, budget: dict) -> list[dict[str, Any]]:
    """Core changes monkeypatched in this process (never written back), timed against the unpatched
    step (baseline measured before and after; the smaller is used). Applied changes are patched back
    out (``applied``: the speed-up reported is the change's); candidates are patched in."""
    import qidbm.lightning.module as lm
    import qidbm.samplers.kernels as gb
    from qidbm import quantum

    x = data["binary"]
    batches = [x[i * BATCH : (i + 1) * BATCH] for i in range(4)]
    cfgs = {c.name: c for c in configs(quick=True)}

    def timed(cfg_name: str, mode: str) -> tuple[float, float, float]:
        module, opt = make_module(cfgs[cfg_name], mode)
        step = make_step(module, opt, batches)
        step()
        f0 = minor_faults()
        times = time_calls(step, warmup=budget["warmup"], min_reps=budget["min_reps"], min_time=budget["min_time"])
        faults = (minor_faults() - f0) / (len(times) + budget["warmup"])
        return statistics.median(times), statistics.median(_LAST_CPU), faults

    def fused_bernoulli(p, generator):
        return torch.bernoulli(p, generator=generator)

    def doem_loss_separate(self, v):
        # the step before commit 391458e: two free-energy passes (x+ and x-), two backward products per weight
        pos, neg = self.positive_phase(v), self.negative_phase(v)
        f_pos = self.model.marginal_free_energy(pos, self.summed_layers).mean()
        f_neg = self.model.marginal_free_energy(neg, self.summed_layers).mean()
        return f_pos - f_neg, {"free_energy_data": f_pos.detach(), "free_energy_model": f_neg.detach()}

    legacy = legacy_closed_form_patches()
    fused_pcd = [(lm.BoltzmannModule, "_reuses_free_energy_fields", property(
        lambda self: self.hparams.negative_start == "persistent"
        and (isinstance(self.kernel, PaperStep) or not self.model.quantum_layers)
        and set(self.summed_layers) == set(range(1, self.model.num_layers, 2))))]
    bern = [(gb, "bernoulli", fused_bernoulli), (lm, "bernoulli", fused_bernoulli)]
    # (label, config, mode, patches, revert): revert=True patches an applied change back out, and the
    # reported speed-up is that of the change (patched / current time)
    cases: list[tuple[str, str, str, list, bool]] = []
    for cfg_name in ("QiDBM 784-498-498", "DBM 784-498-498", "QRBM 784-500", "RBM 784-500"):
        cases.append(("closed forms without torch.where / float32 log1p (vs the legacy forms)", cfg_name, "PCD-1", legacy, True))
    for cfg_name in ("QiDBM 784-498-498", "DBM 784-498-498", "QRBM 784-500", "RBM 784-500"):
        cases.append(("PCD persistent_update='fused': odd layers drawn from F(x-)'s fields", cfg_name, "PCD-1", fused_pcd, False))
    for cfg_name in ("QiDBM 784-498-498", "RBM 784-500"):
        cases.append(("one F pass over [x+; x-] (vs separate passes, before 391458e)", cfg_name, "PCD-1",
                      [(lm.BoltzmannModule, "doem_loss", doem_loss_separate)], True))
    cases.append(("torch.bernoulli instead of rand<p + cast", "RBM 784-500", "PCD-1", bern, False))
    try:
        import qidbm.models.base as mb

        compiled_lz = torch.compile(quantum.qubit_log_partition, dynamic=False)
        compiled_prob = torch.compile(quantum.qubit_prob_one, dynamic=False)
        cpatch = [(mb, "qubit_log_partition", compiled_lz), (mb, "qubit_prob_one", compiled_prob), (gb, "qubit_prob_one", compiled_prob),
                  (lm, "qubit_prob_one", compiled_prob)]
        for cfg_name in ("QiDBM 784-498-498", "QRBM 784-500"):
            cases.append(("torch.compile of the closed forms (inductor, CPU)", cfg_name, "PCD-1", cpatch, False))
    except Exception as e:  # pragma: no cover - inductor needs a C++ compiler
        print(f"torch.compile unavailable: {e}", file=sys.stderr)
    out = []
    only = os.environ.get("QIDBM_BENCH_EXPERIMENTS")  # optional filter: substrings of change labels
    if only:
        cases = [c for c in cases if any(k in c[0] for k in only.split(","))]
    for label, cfg_name, mode, patches, revert in cases:
        base = timed(cfg_name, mode)
        with contextlib.ExitStack() as st:
            for obj, name, val in patches:
                st.enter_context(patched(obj, name, val))
            try:
                new, err = timed(cfg_name, mode), None
            except Exception as e:  # report, do not abort the benchmark
                new, err = (float("nan"), float("nan"), float("nan")), f"{type(e).__name__}: {e}"
        base2 = timed(cfg_name, mode)  # baseline again: brackets drift in machine load
        b = min(base, base2, key=lambda t: t[0])
        bc = min(base[1], base2[1])
        ok = new[0] == new[0]
        sp = (new[0] / b[0] if revert else b[0] / new[0]) if ok else None
        sp_cpu = (new[1] / bc if revert else bc / new[1]) if ok else None
        out.append({"change": label, "config": cfg_name, "mode": mode, "applied": revert, "baseline_s": b[0], "baseline_s_runs": [base[0], base2[0]],
                    "patched_s": new[0], "speedup": sp,
                    "baseline_cpu_s": bc, "patched_cpu_s": new[1], "speedup_cpu_time": sp_cpu,
                    "baseline_faults_per_step": b[2], "patched_faults_per_step": new[2], "error": err})
        print(f"  experiment {label:52s} {cfg_name:18s} {mode:6s} {b[0]*1e3:8.1f} -> {new[0]*1e3:8.1f} ms wall, "
              f"{bc*1e3:8.1f} -> {new[1]*1e3:8.1f} ms CPU, faults/step {b[2]:.0f} -> {new[2]:.0f}", flush=True)
    return out


# ----------------------------------------------------------------------------- report
def goals(run: dict[str, Any]) -> dict[str, Any]:
    cfgs = {c["name"]: c for c in run["configs"]}
    ratios = {f"{c['name']} {m}": r["ratio"] for c in run["configs"] if c["paper_shape"] and c["family"] in ("RBM", "QRBM", "DBM", "QiDBM")
              for m, r in c["training"].items()}
    worst = min(ratios, key=ratios.get) if ratios else None
    sk = run.get("sklearn")
    rbm = cfgs.get("RBM 784-500")
    overhead = {}
    for c in run["configs"]:
        if c["twin"] and c["twin"] in cfgs:
            tw = cfgs[c["twin"]]
            for m, r in c["training"].items():
                if m in tw["training"]:
                    overhead[f"{c['name']} vs {tw['name']} {m}"] = 100 * (r["median_s"] / tw["training"][m]["median_s"] - 1)
            for k, r in c["sampling"].items():
                if "paper" in tw["sampling"]:
                    overhead[f"{c['name']} vs {tw['name']} sampling {k}"] = 100 * (r["median_s"] / tw["sampling"]["paper"]["median_s"] - 1)
    train_overhead = {k: v for k, v in overhead.items() if "sampling" not in k}
    out = {
        "limit_ratio_min": ratios[worst] if worst else None,
        "limit_ratio_min_at": worst,
        "limit_ratio_max": max(ratios.values()) if ratios else None,
        "goal_70pct_of_limit_met": bool(ratios) and min(ratios.values()) >= 0.70,
        "quantum_overhead_pct": overhead,
        "quantum_overhead_training_max_pct": max(train_overhead.values()) if train_overhead else None,
        "goal_quantum_overhead_5pct_met": bool(train_overhead) and max(train_overhead.values()) <= 5.0,
    }
    if sk and rbm:
        out["vs_sklearn"] = {m: r["samples_per_s"] / sk["samples_per_s"] for m, r in rbm["training"].items()}
        out["goal_2.5x_sklearn_met"] = out["vs_sklearn"].get("PCD-1", 0) >= 2.5
    if sk and run.get("floor"):
        out["floor_vs_sklearn"] = run["floor"]["samples_per_s"] / sk["samples_per_s"]
    return out


def fmt(x: float, nd: int = 1) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:,.{nd}f}"


def markdown(result: dict[str, Any]) -> str:
    L: list[str] = []
    m = result["machine"]
    L.append(f"# qidbm throughput ({'quick' if result['quick'] else 'full'} run)\n")
    L.append(f"Command: `{result['command']}`  ")
    L.append(f"Machine: {m['description']} ({m['cpu']}), torch {m['torch']} ({m['blas']}), Python {m['python']}  ")
    L.append(f"Date (UTC): {result['date_utc']}; batch {BATCH}; training = `doem_loss` + backward + SGD step (no Lightning); "
             f"matrix products {result.get('matmul_precision', 'float32')} (the matmul limit is float32's)\n")
    for run in result["runs"]:
        n = run["threads"]
        L.append(f"## {n} thread{'s' if n > 1 else ''} (load average at start {run['loadavg_start'][0]:.2f}, at end {run['loadavg_end'][0]:.2f})\n")
        if run.get("command") and run["command"] != result["command"]:
            L.append(f"Run: `{run['command']}` at {run.get('date_utc')} UTC\n")
        L.append("Training (median step time; ratio = matmul limit of the step's own products / measured step time):\n")
        L.append("| model | mode | samples/s | s/epoch | GFLOP/step | matmuls/step | GFLOP/s | matmul limit GFLOP/s | ratio | peak RSS MB | faults/step |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in run["configs"]:
            for mode, r in c["training"].items():
                L.append(f"| {c['name']} | {mode} | {fmt(r['samples_per_s'],0)} | {fmt(r['epoch_s'],2)} | {fmt(r['flops_per_step']/1e9,2)} | "
                         f"{r['n_matmuls']} | {fmt(r['gflops_achieved'])} | {fmt(r['matmul_gflops'])} | {r['ratio']:.2f} | {fmt(r['peak_rss_mb'],0)} | {fmt(r['minor_faults_per_step'],0)} |")
        if run.get("floor"):
            r = run["floor"]
            L.append(f"| plain-PyTorch CD-1 floor, RBM 784-500 | CD-1 | {fmt(r['samples_per_s'],0)} | {fmt(r['epoch_s'],2)} | {fmt(r['flops_per_step']/1e9,2)} | 5 | "
                     f"{fmt(r['gflops_achieved'])} | {fmt(r['matmul_gflops'])} | {r['ratio']:.2f} | - | {fmt(r['minor_faults_per_step'],0)} |")
        if run.get("sklearn"):
            s = run["sklearn"]
            L.append(f"| scikit-learn {s['sklearn']} BernoulliRBM 784-500 ({s['n_samples']} samples) | PCD-1 | {fmt(s['samples_per_s'],0)} | {fmt(s['epoch_s'],2)} | - | 5 | - | - | - | {fmt(s['peak_rss_mb'],0)} | - |")
        if run.get("lightning"):
            for r in run["lightning"]:
                L.append(f"| {r['config']} in Lightning `Trainer.fit` | PCD-1 | {fmt(r['samples_per_s'],0)} | {fmt(MNIST_TRAIN / r['samples_per_s'],2)} | - | - | - | - | - | - | - |")
        L.append("")
        L.append("Sampling (`qidbm.samplers.kernels` `run`, 600 chains):\n")
        L.append("| model | step | sweeps/s | GFLOP/sweep | GFLOP/s | matmul limit GFLOP/s | ratio | acceptance |")
        L.append("|---|---|---:|---:|---:|---:|---:|---:|")
        for c in run["configs"]:
            for k, r in c["sampling"].items():
                acc = ", ".join(f"{v:.3f}" for v in r.get("acceptance", {}).values()) or "-"
                L.append(f"| {c['name']} | {k} | {fmt(r['sweeps_per_s'])} | {fmt(r['flops_per_sweep']/1e9,2)} | {fmt(r['gflops_achieved'])} | {fmt(r['matmul_gflops'])} | {r['ratio']:.2f} | {acc} |")
        L.append("")
        g = run["goals"]
        L.append("Goals (issue 7, CPU):\n")
        L.append(f"- training at >= 70% of the matmul limit (RBM, QRBM, DBM, QiDBM): worst {fmt(g['limit_ratio_min'] and 100*g['limit_ratio_min'],0)}% "
                 f"({g['limit_ratio_min_at']}), best {fmt(g['limit_ratio_max'] and 100*g['limit_ratio_max'],0)}%: **{'met' if g['goal_70pct_of_limit_met'] else 'missed'}**")
        if "vs_sklearn" in g:
            vs = ", ".join(f"{k} {v:.2f}x" for k, v in g["vs_sklearn"].items())
            L.append(f"- >= 2.5x scikit-learn BernoulliRBM samples/s at 784-500 (PCD-1): {vs}: **{'met' if g['goal_2.5x_sklearn_met'] else 'missed'}**"
                     + (f" (plain-PyTorch CD-1 floor: {g['floor_vs_sklearn']:.2f}x)" if "floor_vs_sklearn" in g else ""))
        L.append(f"- quantum layers <= 5% over their classical twins (training): max {fmt(g['quantum_overhead_training_max_pct'])}%: "
                 f"**{'met' if g['goal_quantum_overhead_5pct_met'] else 'missed'}**")
        L.append("")
        L.append("| quantum vs classical twin | overhead % |")
        L.append("|---|---:|")
        for k, v in g["quantum_overhead_pct"].items():
            L.append(f"| {k} | {v:+.1f} |")
        L.append("")
        if run.get("experiments"):
            L.append("Change-by-change measurements (monkeypatched in the benchmark process; `applied` changes are "
                     "patched back out and the speed-up shown is the change's):\n")
            L.append("| change | applied | config | mode | current ms | patched ms | speed-up | speed-up (CPU time) |")
            L.append("|---|---|---|---|---:|---:|---:|---:|")
            for e in run["experiments"]:
                L.append(f"| {e['change']} | {'yes' if e.get('applied') else 'no'} | {e['config']} | {e['mode']} | {e['baseline_s']*1e3:.1f} | {fmt(e['patched_s']*1e3)} | "
                         f"{fmt(e['speedup'],2)}x | {fmt(e['speedup_cpu_time'],2)}x |")
            if run.get("closed_form_accuracy"):
                L.append("")
                L.append("Current closed forms vs the legacy ones (max error, same dtype): " + ", ".join(
                    f"{k} {v:.1e}" for k, v in run["closed_form_accuracy"].items()))
            L.append("")
        if run.get("profile"):
            p = run["profile"]
            L.append(f"Profile ({p['config']}, PCD-1, {p['threads']} threads): {p['self_cpu_ms_per_step']:.1f} ms self CPU per step, "
                     f"matmul share {100*p['matmul_share']:.0f}%; table in `{p['table_file']}`.\n")
            L.append("| op | self ms/step | calls/step | share |")
            L.append("|---|---:|---:|---:|")
            for r in p["top"][:15]:
                L.append(f"| {r['op']} | {r['self_ms_per_step']:.2f} | {r['calls_per_step']:.0f} | {100*r['share']:.1f}% |")
            L.append("")
        if run.get("kernels"):
            L.append("Single float32 ops on one 600 x 500 layer (median ms; CPU ms):\n")
            L.append("| op | ms | CPU ms |")
            L.append("|---|---:|---:|")
            for k in run["kernels"]:
                L.append(f"| {k['op']} | {k['median_ms']:.3f} | {k['cpu_median_ms']:.3f} |")
            L.append("")
        L.append("Matmul rates measured (best of repetitions, float32, preallocated output):\n")
        L.append("| m x k x n | layout | GFLOP/s |")
        L.append("|---|---|---:|")
        for r in run["matmul_table"]:
            L.append(f"| {r['m']}x{r['k']}x{r['n']} | {r['layout']} | {r['gflops']:.1f} |")
        L.append("")
    L.append("FLOPs: `torch.utils.flop_counter.FlopCounterMode` on one real step (matrix products only, forward and backward); "
             "the recorded products give the same count. Matmul limit of a step: the sum over its recorded products of "
             "each product's best time alone. Peak RSS: VmHWM after malloc_trim + clear_refs before each configuration "
             "(includes the interpreter, torch and the loaded data).")
    return "\n".join(L) + "\n"


def merge_results(files: list[str], out_dir: Path, stem: str) -> dict[str, Any]:
    """Combine runs of several result files (e.g. one thread count re-measured when the machine was
    idle); each run keeps its own command, date and load average."""
    runs: dict[int, dict] = {}
    base: dict[str, Any] | None = None
    for f in files:
        r = json.loads(Path(f).read_text())
        base = base or r
        for run in r["runs"]:
            run.setdefault("command", r["command"])
            run.setdefault("date_utc", r["date_utc"])
            runs[run["threads"]] = run
    assert base is not None
    result = dict(base)
    result["runs"] = [runs[k] for k in sorted(runs)]
    result["command"] = " + ".join(dict.fromkeys(run["command"] for run in result["runs"]))
    result["merged_from"] = files
    md = markdown(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(md)
    print(md)
    return result


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a CI-sized run (< ~60 s): RBM/QRBM 784-500, DBM/QiDBM 784-498-498, one thread count")
    p.add_argument("--threads", default=None, help="thread counts, comma separated (default: 1,2; --quick: torch's default)")
    p.add_argument("--only", default=None, help="comma-separated substrings of config names to run")
    p.add_argument("--profile", action="store_true", help="torch.profiler summary of the QiDBM 784-498-498 PCD-1 step")
    p.add_argument("--experiments", action="store_true", help="time monkeypatched what-if changes of the core")
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    p.add_argument("--tag", default=None, help="output file stem (default: throughput, throughput_quick)")
    p.add_argument("--matmul-precision", choices=["float32", "bfloat16"], default="float32",
                   help="precision of the models' matrix products (the matmul limit stays float32)")
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="no measurement: combine earlier result files (the last run per thread count wins) into --tag")
    args = p.parse_args(argv)
    if args.merge:
        return merge_results(args.merge, Path(args.out_dir), args.tag or "throughput")
    global PRECISION
    PRECISION = args.matmul_precision

    if args.threads:
        threads = [int(t) for t in str(args.threads).split(",")]
    else:
        threads = [torch.get_num_threads()] if args.quick else [1, 2]
    if min(threads) < 1:
        p.error("--threads must be positive")
    budget = ({"warmup": 1, "min_reps": 3, "min_time": 0.0} if args.quick else {"warmup": 1, "min_reps": 5, "min_time": 0.8})
    mm_reps = 3 if args.quick else 7
    cfgs = configs(args.quick)
    if args.only:
        keys = [s.strip() for s in args.only.split(",")]
        cfgs = [c for c in cfgs if any(k in c.name for k in keys)]
    need = {c.encoding for c in cfgs} | {"binary"}
    t_start = time.time()
    print(f"loading MNIST ({', '.join(sorted(need))}) ...", flush=True)
    data = load_data(args.quick, need, n_batches=4)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.tag or ("throughput_quick" if args.quick else "throughput")

    result: dict[str, Any] = {
        "command": "python " + " ".join([os.path.relpath(__file__, REPO)] + (sys.argv[1:] if argv is None else argv)),
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "machine": machine(),
        "quick": args.quick,
        "matmul_precision": PRECISION,
        "batch_size": BATCH,
        "runs": [],
    }
    from tqdm.auto import tqdm

    for n in threads:
        torch.set_num_threads(n)
        run: dict[str, Any] = {"threads": n, "interop_threads": torch.get_num_interop_threads(), "loadavg_start": load_average(),
                               "command": result["command"], "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "configs": []}
        print(f"== {n} thread(s), load average {run['loadavg_start']}", flush=True)
        mm = MatmulLimit(mm_reps)
        for cfg in tqdm(cfgs, desc=f"configs ({n} threads)", leave=False):
            r = run_config(cfg, data, mm, budget, sweeps=2 if args.quick else 5)
            run["configs"].append(r)
            tr = "  ".join(f"{m} {v['samples_per_s']:7.0f}/s r={v['ratio']:.2f}" for m, v in r["training"].items())
            sa = "  ".join(f"{k} {v['sweeps_per_s']:6.1f} sw/s" for k, v in r["sampling"].items())
            print(f"  {cfg.name:30s} {tr}  | {sa}  | peak {r['peak_rss_mb']:.0f} MB", flush=True)
        if not args.only or "RBM 784-500" in args.only:
            reset_peak_memory()
            run["floor"] = plain_cd1_floor(data["binary"], 4, budget, mm)
            print(f"  plain CD-1 floor {run['floor']['samples_per_s']:.0f}/s ratio {run['floor']['ratio']:.2f}", flush=True)
            if not args.no_sklearn:
                xs = data["binary"] if not args.quick else data["binary"][: 4 * BATCH]
                run["sklearn"] = sklearn_rbm(xs, n)
                print(f"  sklearn BernoulliRBM {run['sklearn']['samples_per_s']:.0f}/s ({run['sklearn']['epoch_s']:.2f} s/epoch)", flush=True)
        xb = data["binary"]
        bl = [xb[i * BATCH : (i + 1) * BATCH] for i in range(4)]
        lcfgs = [c for c in cfgs if c.name in ("RBM 784-500", "QiDBM 784-498-498")]
        run["lightning"] = []
        for c in lcfgs if not args.quick else lcfgs[:1]:
            r = lightning_fit(c, bl, n_steps=8 if args.quick else 30, warm=3)
            run["lightning"].append(r)
            print(f"  Lightning fit {c.name}: {r['samples_per_s']:.0f}/s", flush=True)
        if args.profile:
            qi = next(c for c in configs(True) if c.name == "QiDBM 784-498-498")
            run["profile"] = profile_step(qi, bl, steps=10, out_txt=out_dir / f"{stem}_profile_{n}t.txt")
            dbm = next(c for c in configs(True) if c.name == "DBM 784-498-498")
            run["profile_twin"] = profile_step(dbm, bl, steps=10, out_txt=out_dir / f"{stem}_profile_dbm_{n}t.txt")
        run["kernels"] = kernel_costs(10 if args.quick else 30)
        if args.experiments:
            run["experiments"] = experiments(data, mm, budget)
            run["closed_form_accuracy"] = closed_form_accuracy()
        run["matmul_table"] = mm.table()
        run["loadavg_end"] = load_average()
        run["goals"] = goals(run)
        result["runs"].append(run)
    result["wall_s"] = time.time() - t_start
    md = markdown(result)
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(md)
    print(md)
    print(f"wrote {out_dir / (stem + '.json')} and {out_dir / (stem + '.md')} in {result['wall_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
