"""The step harness of bench/: how every benchmark builds a module, gets its data, times updates and
sweeps, counts matrix products, measures the machine's matrix-product limit and states where a number
comes from.

An update is ``module.fit_step(batch, optimizer)``: the loss, its gradient, the centering transform
and the optimizer step, as ``training_step`` runs under Lightning (trainer settings such as gradient
clipping are not part of it). A module comes from config files, parsed and built by LightningCLI as
``qidbm fit`` does (:func:`from_configs`, :func:`recipe`), or from a machine and estimator objects
(:func:`make_module`); :func:`start_fit` then does what a fit does before its first update (the
visible parameters from the data, the centering offsets), so the update timed is the one a run makes.

    module = start_fit(make_module(DBM([784, 498, 498]), negative=Persistent()), batches)
    t = time_updates(module, batches, n=5)                  # t.median, t.spread, t.cpu_median
    products = count_products(lambda: module.fit_step(batches[0], optimizer_of(module)))
    MatmulLimit().seconds(products) / t.median              # share of the time the products need
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import logging
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from qidbm.allocator import reuse_freed_memory  # noqa: E402

# the `qidbm` command sets this before torch allocates anything, so the updates timed here run on the
# same allocator settings as a fit (QIDBM_DEFAULT_MALLOC=1 leaves glibc's defaults)
ALLOCATOR_TUNED = reuse_freed_memory()

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from qidbm.fused import fused_kernels  # noqa: E402
from qidbm.lightning import BoltzmannModule  # noqa: E402
from qidbm.lightning.data_init import as_visible  # noqa: E402
from qidbm.precision import matmul_precision  # noqa: E402
from qidbm.profiling import MATRIX_PRODUCT_OPS, ProductCounter  # noqa: E402

__all__ = [
    "ALLOCATOR_TUNED", "MatmulLimit", "Products", "REPO", "Timings", "batches_of", "count_products", "from_configs",
    "header", "header_lines", "make_module", "mnist_batches", "optimizer_of", "random_batches", "recipe",
    "set_threads", "start_fit", "time_calls", "time_sweeps", "time_updates",
]


# ----------------------------------------------------------------------------- modules
@contextlib.contextmanager
def _quiet_lightning():
    """Lightning's start-up lines (accelerators found, seed set) once per parsed config are noise here."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings(), open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            # args= given while the script has its own command line: meant, here
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def from_configs(files: Sequence[str | Path], *args: str, last_stage: bool = False):
    """``(module, datamodule)`` as ``qidbm fit --config f1 --config f2 ... args`` builds them: LightningCLI
    parses the files (relative paths are taken from the repository root) and sets the global seed from
    ``seed_everything`` first, so the initial weights are the run's. ``args`` are overrides as typed on the
    command line, e.g. ``"--model.init_args.matmul_precision", "float32"``. Nothing is written: the
    trainer's loggers and callbacks are dropped. A top-level ``optimizer:`` or ``lr_scheduler:`` section is
    not applied: updates use the module's own optimizer (:func:`optimizer_of`). ``last_stage``: the module
    as the recipe's last :class:`~qidbm.lightning.NextStage` leaves it (its estimator and schedule)."""
    from lightning.pytorch.cli import LightningCLI

    from qidbm.lightning import NextStage

    argv = [a for f in files for a in ("--config", str(REPO / f))]
    argv += ["--trainer.logger", "false", *(() if last_stage else ("--trainer.callbacks", "[]")), *args]
    with _quiet_lightning():
        cli = LightningCLI(model_class=None, datamodule_class=None, subclass_mode_model=True,
                           subclass_mode_data=True, run=False, save_config_callback=None, args=argv)
    if last_stage:
        for stage in sorted((c for c in cli.trainer.callbacks if isinstance(c, NextStage)), key=lambda c: c.at_step):
            stage.switch(cli.model)
    return cli.model, cli.datamodule


@functools.lru_cache(maxsize=None)
def _recipe(files: tuple[str, ...], args: tuple[str, ...]) -> dict:
    module, _ = from_configs(files, *args)
    return {k: v for k, v in module.hparams.items() if not k.startswith("_")}


def recipe(files: Sequence[str | Path], *args: str) -> dict:
    """The training settings of a config (everything but the machine: estimators, kernel, optimizer,
    schedule, centering, precision, ...) as :class:`BoltzmannModule` keyword arguments in their
    ``{class_path, init_args}`` form, so that ``make_module(machine, **recipe(files))`` trains another
    machine exactly as the config trains its own (each call builds fresh estimator objects)."""
    import copy

    return copy.deepcopy(_recipe(tuple(map(str, files)), tuple(args)))


def make_module(model: torch.nn.Module, *, chain_seed: int = 0, **settings: Any) -> BoltzmannModule:
    """``BoltzmannModule(model, **settings)`` with seeded chains (``chain_seed`` unless the settings set one)."""
    if settings.get("chain_seed") is None:
        settings["chain_seed"] = chain_seed
    return BoltzmannModule(model, **settings)


def start_fit(module: BoltzmannModule, batches: Iterable[Tensor], device: str | torch.device = "cpu") -> BoltzmannModule:
    """What a fit does before its first update, without a Trainer: the module on ``device``, its visible
    parameters set from ``batches`` by its ``init_visible`` (as ``setup`` does from the training loader)
    and its centering offsets started from them (as ``on_fit_start`` does). Returns the module."""
    module.to(device)
    if module.init_visible is not None:
        module.init_visible(module.model, [as_visible(b).to(module.device, module.dtype) for b in batches])
    if module.centering is not None:
        module.centering.start(module.model)
    return module


def optimizer_of(module: BoltzmannModule) -> torch.optim.Optimizer:
    """The module's optimizer (``configure_optimizers`` returns a dict when a schedule is set)."""
    opt = module.configure_optimizers()
    return opt["optimizer"] if isinstance(opt, dict) else opt


# ----------------------------------------------------------------------------- data
def batches_of(dm, n: int, skip: int = 0, device: str | torch.device = "cpu") -> list[Tensor]:
    """The first ``n`` training batches of a data module after ``skip``, in its seeded order: the
    batches a fit's first updates see."""
    dm.setup("fit")
    out: list[Tensor] = []
    while len(out) < n:
        for b in dm.train_dataloader():
            if skip > 0:
                skip -= 1
                continue
            out.append(as_visible(b).float().to(device))
            if len(out) == n:
                break
    return out


def mnist_batches(n: int, batch_size: int = 600, encoding: str = "binary", device: str | torch.device = "cpu",
                  **datamodule_args: Any) -> list[Tensor]:
    """``n`` real MNIST training batches (``qidbm.data.MNISTDataModule``, data from ``$QIDBM_DATA_DIR``;
    nothing is downloaded)."""
    from qidbm.data import MNISTDataModule

    dm = MNISTDataModule(encoding=encoding, batch_size=batch_size, download=False, **datamodule_args)
    return batches_of(dm, n, device=device)


def random_batches(n_visible: int, batch_size: int, n: int = 2, density: float = 0.13, seed: int = 1) -> list[Tensor]:
    """Random binary batches at MNIST's mean pixel density: for sizes no data set has (a dense update
    costs the same whatever the values)."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(batch_size, n_visible, generator=g) < density).float() for _ in range(n)]


# ----------------------------------------------------------------------------- timing
def set_threads(n: int) -> None:
    """``n`` threads for torch's products and for numpy's BLAS (the scikit-learn baselines)."""
    torch.set_num_threads(n)
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=n)


@dataclass
class Timings:
    """Wall and process CPU times of timed calls, in seconds per unit (an update, or a sweep)."""

    wall: list[float]
    cpu: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def spread(self) -> float:
        """Interquartile range / median of the wall times (0 for a single call)."""
        if len(self.wall) < 2:
            return 0.0
        q = statistics.quantiles(self.wall, n=4)
        return (q[2] - q[0]) / self.median

    def summary(self) -> dict[str, float]:
        return {"median_s": self.median, "spread": self.spread, "min_s": min(self.wall),
                "cpu_median_s": self.cpu_median, "reps": len(self.wall)}


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], n: int, warmup: int = 1, device: torch.device | None = None,
               per_call: int = 1) -> Timings:
    """Times of ``n`` calls of ``fn`` after ``warmup`` untimed ones, divided by ``per_call`` (the units a
    call does). The process CPU time sums all threads: on a busy machine at one thread it is the better
    estimate of the work."""
    for _ in range(warmup):
        fn()
    _sync(device)
    wall, cpu = [], []
    for _ in range(n):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        _sync(device)
        wall.append((time.perf_counter() - t0) / per_call)
        cpu.append((time.process_time() - c0) / per_call)
    return Timings(wall, cpu)


def time_updates(module: BoltzmannModule, batches: Sequence[Tensor], n: int, warmup: int = 1,
                 optimizer: torch.optim.Optimizer | None = None) -> Timings:
    """Times of ``n`` updates (``module.fit_step``) cycling through ``batches``, after ``warmup`` untimed
    ones (persistent chains allocated, weight casts cached, fused kernels compiled). Pass ``optimizer``
    to keep one optimizer (its momentum) across calls."""
    opt = optimizer if optimizer is not None else optimizer_of(module)
    it = itertools.cycle(batches)
    return time_calls(lambda: module.fit_step(next(it), opt), n, warmup, module.device)


def time_sweeps(module: BoltzmannModule, chains: int, n: int, warmup: int = 1, sweeps: int = 1,
                kernel=None) -> tuple[Timings, Any]:
    """Per-sweep times of ``n`` calls of ``sweeps`` block Gibbs sweeps of ``chains`` chains (continued
    from call to call) by the module's kernel (or ``kernel``), at its matrix-product precision and
    fused-kernel setting; and the last call's chain statistics (acceptance of the exact step)."""
    model, kernel, g = module.model, kernel or module.kernel, module.generator
    precision, fused = module.hparams.matmul_precision, module.hparams.fused_kernels
    state, stats = [model.random_state(chains, g)], [None]

    def call() -> None:
        with matmul_precision(precision), fused_kernels(fused):
            state[0], stats[0] = kernel.run(model, state[0], sweeps, generator=g)

    return time_calls(call, n, warmup, module.device, per_call=sweeps), stats[0]


# ----------------------------------------------------------------------------- matrix products
@dataclass
class Products:
    """The matrix products of one call: ``calls`` maps ``(batch, m, k, n, layout_a, layout_b, dtype)`` to
    their number; ``flops`` is torch's ``FlopCounterMode`` total (every operator it knows)."""

    calls: Counter
    flops: int
    device: torch.device

    @property
    def n_calls(self) -> int:
        return sum(self.calls.values())

    @property
    def product_flops(self) -> int:
        return sum(2 * b * m * k * n * c for (b, m, k, n, *_), c in self.calls.items())

    def in_units(self, unit: tuple[int, int, int]) -> float:
        """The products' FLOPs in units of one ``m x k @ k x n`` product (``unit = (m, k, n)``)."""
        m, k, n = unit
        return self.product_flops / (2 * m * k * n)


def count_products(fn: Callable[[], Any], device: str | torch.device = "cpu") -> Products:
    """Run ``fn`` once under :class:`qidbm.profiling.ProductCounter` and a record of each product's layout
    and dtype (for :class:`MatmulLimit`). Dispatch modes run the code eagerly (fused kernels take their
    eager form), which changes no count, only the time: a counted call is never a timed one."""
    with ProductCounter() as pc:
        fn()
    out = Products(Counter(pc.layouts), pc.flops, torch.device(device))
    if out.product_flops != pc.shape_flops:
        raise RuntimeError(f"the product records disagree: {out.product_flops} vs {pc.shape_flops} FLOPs")
    return out


class MatmulLimit:
    """The machine's matrix-product limit of counted code: each distinct product (shape, layout, dtype)
    replayed alone into a preallocated output, best of ``reps`` calls; the limit is the sum over the
    products of calls x best time. ``limit / measured time`` is the share of the measured time that
    those very products need at this machine's best speed for them; 1 means nothing else costs
    anything. Best times are kept per product, so configurations sharing shapes share measurements."""

    def __init__(self, reps: int = 3) -> None:
        self.reps = reps
        self.best: dict[tuple, float] = {}

    def product_seconds(self, key: tuple, device: torch.device = torch.device("cpu")) -> float:
        """Best time of one product ``(batch, m, k, n, layout_a, layout_b, dtype)``."""
        full = (*key, device.type)
        if full not in self.best:
            batch, m, k, n, la, lb, dtype = key
            dt = getattr(torch, dtype)
            lead = (batch,) if batch > 1 else ()

            def operand(rows: int, cols: int, layout: str) -> Tensor:
                if layout == "T":
                    return torch.rand(*lead, cols, rows, device=device).to(dt).transpose(-2, -1)
                return torch.rand(*lead, rows, cols, device=device).to(dt)

            a, b = operand(m, k, la), operand(k, n, lb)
            out = torch.empty(*lead, m, n, device=device, dtype=dt)
            mm = torch.bmm if lead else torch.mm
            self.best[full] = min(time_calls(lambda: mm(a, b, out=out), self.reps, warmup=1, device=device).wall)
        return self.best[full]

    def seconds(self, products: Products) -> float:
        return sum(self.product_seconds(k, products.device) * c for k, c in products.calls.items())

    def table(self) -> list[dict[str, Any]]:
        """Every product measured: its shape, layouts, dtype, device, best time and GFLOP/s."""
        return [{"batch": b, "m": m, "k": k, "n": n, "layout": la + lb, "dtype": dt, "device": dev, "best_s": s,
                 "gflops": 2 * b * m * k * n / s / 1e9}
                for (b, m, k, n, la, lb, dt, dev), s in sorted(self.best.items())]


# ----------------------------------------------------------------------------- where a number comes from
_PRODUCT_FLAGS = {"avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"}


def _cpu() -> tuple[str, list[str]]:
    """The CPU's model name and the vector instruction sets that matter for float32/bfloat16 products."""
    name, flags = "", []
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = sorted(set(value.split()) & _PRODUCT_FLAGS)
    return name or platform.processor() or platform.machine(), flags


def header(script: str, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """What every number a script prints is stated with: the command (with ``OMP_NUM_THREADS`` when set),
    the date (UTC), the commit and whether qidbm/, bench/ or configs/ differ from it, the CPU (its
    vector instruction sets), the GPU, torch and its BLAS, the thread count, the allocator setting and
    the 1-minute load average now (timings mean something only on an otherwise idle machine)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    commit, dirty = "unknown", None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = functools.partial(subprocess.run, cwd=REPO, capture_output=True, text=True, timeout=30)
        commit = git(["git", "rev-parse", "HEAD"]).stdout.strip() or "unknown"
        dirty = bool(git(["git", "status", "--porcelain", "--", "qidbm", "bench", "configs"]).stdout.strip())
    cpu, flags = _cpu()
    return {
        "command": env + "python " + shlex.join([os.path.relpath(Path(script).resolve(), REPO), *argv]),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit, "uncommitted_changes": dirty,
        "cpu": cpu, "cores": os.cpu_count(), "cpu_flags": flags,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__, "blas": "MKL" if torch.backends.mkl.is_available() else "other",
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "allocator": "qidbm (freed blocks kept)" if ALLOCATOR_TUNED else "glibc defaults",
        "load_start": os.getloadavg()[0],
    }


def header_lines(h: dict[str, Any]) -> list[str]:
    """``h`` (from :func:`header`) as Markdown lines; with the load average at the end when ``h`` has
    ``load_end``."""
    load = f"1-minute load average {h['load_start']:.2f} at the start"
    if "load_end" in h:
        load += f", {h['load_end']:.2f} at the end"
    changes = " + uncommitted changes" if h.get("uncommitted_changes") else ""
    return [
        f"Command: `{h['command']}`  ",
        f"Date: {h['date_utc']}, commit {h['commit'][:12]}{changes}  ",
        f"Hardware: {h['cpu']} ({h['cores']} cores{', ' + h['gpu'] if h['gpu'] else ', no GPU'}), "
        f"{' '.join(h['cpu_flags']) or 'no AVX'}; torch {h['torch']} ({h['blas']}), Python {h['python']}, "
        f"{h['threads']} thread(s), allocator: {h['allocator']}; {load}",
    ]
