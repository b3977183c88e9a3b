"""The Python API on one page (docs/api.md): load a checkpoint, draw samples from it, evaluate it.

.. code-block:: python

    import qidbm

    m = qidbm.load("checkpoints/dbm_mnist_binary.ckpt")  # Loaded(model, data_info, sampling, hparams, ...)
    images = qidbm.sample(m, 16, seed=0)                 # [16, 1, 28, 28] in [0, 1], as `qidbm sample`
    scores = qidbm.evaluate(m, preset="quick")           # {"fid": ..., "test_log_likelihood": ..., ...}

``qidbm sample`` and ``qidbm evaluate`` are :func:`draw_samples` and :func:`evaluate` behind a command
line: the same defaults, the same random numbers, so the same seed gives the same images and scores.

Every function takes a checkpoint path, the :class:`Loaded` that :func:`load` returns, a trained
:class:`~qidbm.lightning.BoltzmannModule` (its machine, hyperparameters and data info) or a bare
:class:`~qidbm.models.BoltzmannMachine` (no trained protocol: pass the sampling options yourself).
"""

from __future__ import annotations

import copy
import math
import numbers
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from qidbm.models.base import BoltzmannMachine
from qidbm.samplers.arguments import SAMPLING_OPTIONS, resolve_sampling
from qidbm.samplers.chain import ChainStats
from qidbm.samplers.drawing import SamplingSpec, trained_sampling

__all__ = ["EVALUATION_DEFAULTS", "PRESETS", "SEED_RANGE", "Loaded", "SampleMemoryError", "Samples", "SettingError",
           "check_seed", "checkpoint_files", "draw_samples", "evaluate", "load", "sample"]

Log = Callable[[str], None]


# --------------------------------------------------------------------------- errors
def _python_name(setting: str) -> str:
    return setting


class SettingError(ValueError):
    """A setting that cannot work, found before any expensive step.

    ``str(error)`` names the settings as the Python arguments (``ais_runs must be ...``);
    :meth:`message` names them as a caller chooses (``qidbm evaluate`` prints ``--ais-runs must be ...``).
    """

    def __init__(self, build: Callable[[Callable[[str], str]], str]) -> None:
        self._build = build
        super().__init__(build(_python_name))

    def message(self, name: Callable[[str], str] = _python_name) -> str:
        """The message with every setting named by ``name(setting)``."""
        return self._build(name)


class SampleMemoryError(MemoryError):
    """Too many samples for the memory of the device (found before any sampling); :meth:`message` as
    :class:`SettingError`'s."""

    def __init__(self, build: Callable[[Callable[[str], str]], str]) -> None:
        self._build = build
        super().__init__(build(_python_name))

    def message(self, name: Callable[[str], str] = _python_name) -> str:
        return self._build(name)


# --------------------------------------------------------------------------- loading
@dataclass(frozen=True)
class Loaded:
    """A machine and what it needs to be sampled and scored, as :func:`load` returns it.

    Attributes:
        model: the :class:`~qidbm.models.BoltzmannMachine` (eval mode, on the device it was loaded to).
        data_info: what it was trained on (data set, encoding, image shape, normalisation: what
            :func:`qidbm.data.decode` needs to turn visible vectors into pixels), or None.
        sampling: its default sampling, the one :func:`sample` and ``qidbm sample`` use: the protocol
            it was trained to produce (:func:`~qidbm.samplers.drawing.trained_sampling`: noise then the
            training's ``cd_steps`` sweeps for a machine trained from noise), else the
            :class:`~qidbm.samplers.drawing.SamplingSpec` defaults (1,000 Gibbs sweeps from noise,
            conditional-mean read-out). A copy is handed out on every :func:`sample` call.
        hparams: its training hyperparameters (``lr``, ``cd_steps``, ``negative_start``, ...).
        info: the checkpoint's remaining facts: ``model_class``, ``model_config``, ``epoch``, ``global_step``.
        path: the checkpoint file, or None for a machine that did not come from a file.
    """

    model: BoltzmannMachine
    data_info: dict | None
    sampling: SamplingSpec
    hparams: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict, repr=False)
    path: Path | None = None

    def __repr__(self) -> str:
        data = self.data_info or {}
        what = f"{data.get('dataset')} {data.get('encoding')} {data.get('image_shape')}" if data else "no data info"
        return (f"Loaded({self.model!r}, data: {what}, sampling: {self.sampling.describe()}"
                + (f", path={str(self.path)!r}" if self.path else "") + ")")

    @property
    def device(self) -> torch.device:
        """Where the machine's parameters are."""
        return self.model.layer_bias(0).device

    @classmethod
    def from_model(cls, model: BoltzmannMachine, data_info: dict | None = None, hparams: dict | None = None) -> Loaded:
        """Wrap a machine that did not come from a checkpoint (``hparams``: its training
        hyperparameters, for its trained sampling; without them the :class:`SamplingSpec` defaults)."""
        if not isinstance(model, BoltzmannMachine):
            raise TypeError(f"expected a qidbm BoltzmannMachine (RBM, QRBM, GRBM, QGRBM, DBM, QiDBM), got "
                            f"{type(model).__name__}")
        hp = dict(hparams or {})
        hp.pop("_instantiator", None)
        return cls(model=model, data_info=data_info, sampling=trained_sampling(hp, model.gaussian_visible) or SamplingSpec(),
                   hparams=hp, info={"model_class": type(model).__name__, "model_config": model.config()})


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> Loaded:
    """The machine stored in a checkpoint (shipped in ``checkpoints/`` or written by ``qidbm fit``),
    with what it was trained on and how it is sampled by default: a :class:`Loaded`.

    ``device``: where to put it (``"cpu"``, ``"cuda"``, ``"cuda:1"``). A missing file raises
    ``FileNotFoundError``; a damaged one, one of another program, one that holds code (refused before any
    of it runs) or one whose parameters hold NaN/Inf a ``ValueError`` that says which.
    """
    from qidbm.checkpoint import load_checkpoint

    model, info = load_checkpoint(path, map_location=device)
    hp = dict(info.pop("hyper_parameters", None) or {})
    hp.pop("_instantiator", None)
    data_info = info.pop("data_info", None)
    keep = {k: info.get(k) for k in ("model_class", "model_config", "epoch", "global_step")}
    return Loaded(model=model, data_info=data_info, sampling=trained_sampling(hp, model.gaussian_visible) or SamplingSpec(),
                  hparams=hp, info=keep, path=Path(path))


def _as_loaded(source: Any, device: str | torch.device | None) -> Loaded:
    """A :class:`Loaded` from any source the functions take (``device``: for a path; an object stays where it is)."""
    if isinstance(source, (str, os.PathLike)):
        return load(source, device if device is not None else "cpu")
    if isinstance(source, Loaded):
        loaded = source
    elif isinstance(source, BoltzmannMachine):
        loaded = Loaded.from_model(source)
    elif isinstance(getattr(source, "model", None), BoltzmannMachine):  # a BoltzmannModule, trained or not
        loaded = Loaded.from_model(source.model, getattr(source, "data_info", None), dict(getattr(source, "hparams", {})))
    else:
        raise TypeError(f"expected a checkpoint path, a qidbm.Loaded, a BoltzmannModule or a BoltzmannMachine, "
                        f"got {type(source).__name__}")
    if device is not None and torch.device(device) != loaded.device and not (
            torch.device(device).type == loaded.device.type and torch.device(device).index is None):
        raise ValueError(f"the machine is on {loaded.device} but device={str(device)!r} was asked for: move it first "
                         f"(model.to({str(device)!r})) or pass the checkpoint path with device={str(device)!r}")
    from qidbm.checkpoint import non_finite_entries

    bad = non_finite_entries({"state_dict": dict(loaded.model.state_dict())})
    if bad:  # a checkpoint is checked at load; a machine handed over in Python here
        raise ValueError(f"the machine's parameters hold NaN/Inf values ({'; '.join(bad[:3])}): its samples and "
                         "scores would be meaningless; use a machine from an earlier checkpoint, or retrain with a "
                         "lower learning rate")
    return loaded


# --------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class Samples:
    """What :func:`draw_samples` returns.

    Attributes:
        images: ``[n, C, H, W]`` in [0, 1] for a machine with data info (decoded with its encoding),
            else the visible vectors ``[n, n_visible]``; on the CPU.
        visible: the visible vectors ``[n, n_visible]`` as the chains left them (read-out applied), on the machine's device.
        sampling: the :class:`~qidbm.samplers.drawing.SamplingSpec` used.
        stats: the chains' statistics (``stats.acceptance()``: the exact quantum step's acceptance per
            quantum layer; ``stats.swap_rates()``: replica swaps).
        loaded: the machine, its data info and hyperparameters.
    """

    images: Tensor
    visible: Tensor
    sampling: SamplingSpec
    stats: ChainStats
    loaded: Loaded


def _check_device(device) -> None:
    if device is None:
        return
    from qidbm.checkpoint import check_device

    try:
        check_device(device)
    except ValueError as e:
        msg = str(e)
        raise SettingError(lambda name: f"{name('device')}: {msg}") from None


def _check_memory(num: int, model: BoltzmannMachine, device, setting: str) -> None:
    from qidbm.preflight import check_sample_memory

    try:
        check_sample_memory(num, model.n_visible, device, option="--num-samples")
    except MemoryError as e:
        text = str(e)
        raise SampleMemoryError(lambda name: text.replace("--num-samples", name(setting)).replace("--seed", name("seed"))) from None


def _start_data(loaded: Loaded, num: int, data: Tensor | None, data_root: str | None, dm=None) -> Tensor:
    """Visible vectors that start ``num`` chains (``start="data"``/``"local_mode"``): ``data`` if given, else
    the first training batches of the data the machine was trained on (as ``qidbm sample --start data``)."""
    if data is not None:
        return data
    if dm is None:
        if loaded.data_info is None:
            raise ValueError("start='data' or 'local_mode' needs data points and this machine has no data info: "
                             "pass data=<visible vectors [N, n_visible]> or use start='noise'")
        from qidbm.data import datamodule_from_info

        dm = datamodule_from_info(loaded.data_info, root=data_root)
        dm.setup("fit")
    batches = [b[0] if isinstance(b, (list, tuple)) else b for _, b in zip(range(-(-num // dm.batch_size)), dm.train_dataloader())]
    return torch.cat(batches)


def grid_png_writer(images: Tensor, nrow: int | None = None) -> Callable[[Any], None]:
    """A writer of images ``[N, C, H, W]`` in [0, 1] as one PNG grid, for :func:`qidbm.atomic.atomic_write_set`
    (the layout of :func:`qidbm.images.save_grid`: rows of features without an image shape as a heat map)."""
    from torchvision.utils import save_image

    strips = images.ndim == 4 and images.shape[2] == 1
    nrow = 1 if strips else nrow or max(1, int(math.sqrt(images.shape[0])))
    padding = 0 if strips else 2
    return lambda f: save_image(images, f, nrow=nrow, padding=padding, pad_value=0.5, format="png")


def _images(visible: Tensor, data_info: dict | None) -> Tensor:
    if data_info is None:
        return visible.detach().float().cpu()
    from qidbm.images import visible_to_images

    return visible_to_images(visible, data_info)


#: the seeds ``torch.Generator.manual_seed`` takes as they are (an unsigned 64-bit integer)
SEED_RANGE = (0, 2**64 - 1)


def check_seed(seed: Any) -> int:
    """``seed`` as an ``int``; :class:`SettingError` for anything outside :data:`SEED_RANGE` (or not an integer)."""
    lo, hi = SEED_RANGE
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not lo <= int(seed) <= hi:
        raise SettingError(lambda name: f"{name('seed')} must be an integer from {lo} to {hi}, got {seed!r}")
    return int(seed)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(check_seed(seed))
    return g


def _draw(model: BoltzmannMachine, num: int, spec: SamplingSpec, data: Tensor | None, generator, progress: bool):
    from qidbm.samplers import drawing

    return drawing.draw(model, num, spec, data=data, generator=generator, progress=progress)


def draw_samples(
    source: Any,
    n: int = 64,
    seed: int = 0,
    *,
    sampling: SamplingSpec | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    data: Tensor | None = None,
    data_root: str | None = None,
    progress: bool = False,
    **options: Any,
) -> Samples:
    """:func:`sample` with everything around the images: the sampling used, the chains' statistics and the
    loaded machine (a :class:`Samples`). ``qidbm sample`` is this function plus printing and writing."""
    if not isinstance(n, numbers.Integral) or isinstance(n, bool) or n < 1:
        raise SettingError(lambda name: f"{name('n')} must be a positive integer, got {n}")
    check_seed(seed)
    unknown = sorted(set(options) - set(SAMPLING_OPTIONS))
    if unknown:
        raise TypeError(f"unknown argument(s) {unknown}; the sampling options are {list(SAMPLING_OPTIONS)}")
    _check_device(device)
    loaded = _as_loaded(source, device)
    spec = resolve_sampling(sampling or loaded.sampling, batch_size=batch_size, **options)
    dev = loaded.device
    _check_memory(n, loaded.model, dev, "n")
    start = _start_data(loaded, n, data, data_root) if spec.start != "noise" else None
    x, stats = _draw(loaded.model, n, spec, start, _generator(seed, dev), progress)
    return Samples(images=_images(x, loaded.data_info), visible=x, sampling=spec, stats=stats, loaded=loaded)


def sample(
    source: Any,
    n: int = 64,
    seed: int = 0,
    *,
    num_steps: int | None = None,
    start: str | None = None,
    output: str | None = None,
    quantum_step: str | None = None,
    matmul_precision: str | None = None,
    replica_betas: tuple[float, ...] | None = None,
    replica_field_scales: tuple[float, ...] | None = None,
    noise_density: tuple[float, float] | None = None,
    anneal_from: float | None = None,
    sampling: SamplingSpec | None = None,
    batch_size: int | None = None,
    device: str | torch.device | None = None,
    data: Tensor | None = None,
    data_root: str | None = None,
    progress: bool = False,
) -> Tensor:
    """``n`` samples of a machine: images ``[n, C, H, W]`` in [0, 1] (decoded with the encoding it was
    trained with), or visible vectors ``[n, n_visible]`` for a machine without data info.

    ``source``: a checkpoint path (loaded onto ``device``, default CPU), a :class:`Loaded`, a trained
    ``BoltzmannModule`` or a bare ``BoltzmannMachine``.

    Defaults, the same as ``qidbm sample`` (same ``seed``: the same images): the machine's own sampling,
    :attr:`Loaded.sampling`. For a machine trained with chains from noise (``FromNoise(sweeps)``, alone
    or in a ``Mixture``): chains start from noise (the training's start density), run that many sweeps
    (or the recorded ``sample_steps``), and return the last visible state for binary units or its
    conditional mean ``E[v | h] = mu + sigma^2 W h`` for Gaussian units, unless the training set a
    ``sample_output``. The shipped checkpoints: the binary DBM and QiDBM 50 sweeps read out as the
    visible mode, the GRBM 20 sweeps and its local mode, the QGRBM 20 sweeps and the conditional
    mean. A machine without a trained
    protocol (persistent chains, a bare machine): 1,000 Gibbs sweeps from uniform noise, conditional mean.
    The random numbers come from ``torch.Generator(device).manual_seed(seed)``.

    Overrides (None: as the default): ``num_steps`` (sweeps per chain), ``start`` (``"noise"``,
    ``"data"``, ``"local_mode"``: the latter two start at ``data`` or the first training images),
    ``output`` (read-out: ``"sample"``, ``"mean"``, ``"mode"``, ``"mean_field"``, ``"local_mode"``,
    ``"local_search"``), ``quantum_step`` (``"paper"``, ``"exact"``), ``matmul_precision``,
    ``replica_betas`` / ``replica_field_scales`` (replica exchange), ``noise_density`` (``(lo, hi)``),
    ``anneal_from`` (first sweep's inverse temperature); docs/maths.md explains each. ``sampling``: a
    whole :class:`~qidbm.samplers.drawing.SamplingSpec` in place of the default (the overrides apply on
    top). ``batch_size``: chains run at once (1,000; does not change the samples). ``progress``: a bar.

    Raises :class:`SettingError` for a bad ``n`` or device and :class:`SampleMemoryError` when ``n``
    samples cannot fit in memory, both before any sampling.
    """
    return draw_samples(source, n, seed, sampling=sampling, batch_size=batch_size, device=device, data=data,
                        data_root=data_root, progress=progress, num_steps=num_steps, start=start, output=output,
                        quantum_step=quantum_step, matmul_precision=matmul_precision, replica_betas=replica_betas,
                        replica_field_scales=replica_field_scales, noise_density=noise_density,
                        anneal_from=anneal_from).images


# --------------------------------------------------------------------------- evaluation settings
#: :func:`evaluate`'s settings with no preset (``qidbm evaluate``'s defaults): FID of 10,000 samples
#: against the whole test set, precision/recall on 2,000, the copying check on 1,000, AIS with 100
#: chains x 10,000 intermediate distributions and the log-likelihood of 10,000 test images
EVALUATION_DEFAULTS: dict[str, Any] = {
    "num_samples": 10_000, "fid_reference_size": None, "prc_samples": 2_000, "copy_samples": 1_000,
    "ais_runs": 100, "ais_betas": 10_000, "ais_test_examples": 10_000, "samplings": "default",
}

#: the presets of :func:`evaluate` (and ``qidbm evaluate --preset``): each replaces some of
#: :data:`EVALUATION_DEFAULTS`; settings passed explicitly win over the preset's
PRESETS: dict[str, dict[str, Any]] = {
    # minutes on a 2-core CPU for the shipped 784-498-498 DBM; figures comparable with each other,
    # not with published 10,000-sample FIDs (FID is biased upwards at small sizes)
    "quick": {"num_samples": 1_000, "fid_reference_size": 1_000, "prc_samples": 0, "copy_samples": 1_000,
              "ais_runs": 16, "ais_betas": 1_000, "ais_test_examples": 1_000},
    # the DO-EM paper's: 10,000 samples scored under Taniguchi et al.'s sampler (noise, local search,
    # visible mode) and under 1,000 Gibbs sweeps from noise (conditional mean), both reported
    "paper": {"samplings": "paper"},
}

_FID_BACKENDS = ("pytorch-fid", "torchmetrics")
_FID_METHODS = ("sqrtm", "eigh")


def _paper_samplings(quantum_step: str | None, batch_size: int) -> list[SamplingSpec]:
    step = quantum_step or "paper"
    return [SamplingSpec(num_steps=0, start="noise", output="local_search", quantum_step=step, batch_size=batch_size),
            SamplingSpec(num_steps=1000, start="noise", output="mean", quantum_step=step, batch_size=batch_size)]


def _resolve_settings(preset: str | None, given: dict[str, Any]) -> dict[str, Any]:
    if preset is not None and preset not in PRESETS:
        raise SettingError(lambda name: f"{name('preset')} must be one of {sorted(PRESETS)} (or None), got {preset!r}")
    s = {**EVALUATION_DEFAULTS, **(PRESETS[preset] if preset else {})}
    s.update({k: v for k, v in given.items() if v is not None})
    return s


def _setting_problems(s: dict[str, Any]) -> None:
    """Raise :class:`SettingError` for the first setting that cannot work (before any loading or sampling)."""
    prc, cp, n, ref = s["prc_samples"], s["copy_samples"], s["num_samples"], s["fid_reference_size"]
    runs, betas, tests = s["ais_runs"], s["ais_betas"], s["ais_test_examples"]
    if prc < 0 or cp < 0:
        raise SettingError(lambda name: f"{name('prc_samples')} and {name('copy_samples')} must be >= 0 (0 skips), "
                                        f"got {prc} and {cp}")
    if s["fid"] and n < 2:
        raise SettingError(lambda name: f"{name('num_samples')} must be at least 2 for FID, got {n}")
    if ref is not None and ref < 2:
        raise SettingError(lambda name: f"{name('fid_reference_size')} must be at least 2 images (FID statistics), "
                                        f"got {ref}")
    if runs < 0 or runs == 1:
        raise SettingError(lambda name: f"{name('ais_runs')} must be 0 (no AIS) or at least 2, got {runs}")
    if runs and betas < 2:
        raise SettingError(lambda name: f"{name('ais_betas')} must be at least 2 (intermediate distributions, "
                                        f"e.g. 10000), got {betas}")
    if runs and tests < 1:
        raise SettingError(lambda name: f"{name('ais_test_examples')} must be a positive number of test images for "
                                        f"the log-likelihood (e.g. 10000; more than the test set uses all of it), got "
                                        f"{tests}; {name('ais_runs')} 0 skips AIS")
    if s.get("raise_runs", 0) < 0 or (s.get("raise_runs", 0) and not runs):
        raise SettingError(lambda name: f"{name('raise_runs')} must be 0 (no RAISE) or a positive number of reverse "
                                        f"chains per test image, with {name('ais_runs')} > 0 (RAISE is reported beside "
                                        f"AIS), got {s['raise_runs']} and {runs}")
    if s.get("binarization") not in (None, "threshold", "stochastic"):
        raise SettingError(lambda name: f"{name('binarization')} must be 'threshold' or 'stochastic' (or unset: as "
                                        f"trained), got {s['binarization']!r}")
    for key, choices in (("fid_backend", _FID_BACKENDS), ("fid_method", _FID_METHODS)):
        if s[key] not in choices:
            raise SettingError(lambda name, key=key, choices=choices: f"{name(key)} must be one of {list(choices)}, "
                                                                      f"got {s[key]!r}")
    if s["fid"]:
        from qidbm.metrics.fid_reference import REFERENCE_SPLITS

        if s["fid_reference"] not in REFERENCE_SPLITS:
            raise SettingError(lambda name: f"{name('fid_reference')} must be one of {list(REFERENCE_SPLITS)}, "
                                            f"got {s['fid_reference']!r}")
    _check_device(s["device"])
    if s["save_samples"]:
        from qidbm.preflight import output_path_problem

        path = s["save_samples"]
        problem = output_path_problem(path, folder=True)
        if problem:
            raise SettingError(lambda name: f"{name('save_samples')} {path}: {problem}; choose another path "
                                            "(nothing was computed)")


# --------------------------------------------------------------------------- run-time estimate
def _seconds(t: float) -> str:
    return "<1 s" if t < 0.5 else f"{t:.0f} s" if t < 90 else f"{t / 60:.1f} min" if t < 5400 else f"{t / 3600:.1f} h"


def _timed(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def _estimate(loaded: Loaded, specs: list[SamplingSpec], s: dict[str, Any], *, num_checkpoints: int,
              inception_images: int, inception, dm) -> dict[str, float]:
    """Seconds each part of an evaluation will take, from timings of small pieces of it on this machine.

    Cost model (``k`` chains timed; every piece timed on a generator of its own, so the seeded
    evaluation draws the same numbers as without the estimate):

    * sampling, per sampling ``spec`` and checkpoint: ``(n / k) * (t0 + S * (t_s - t0) / s)``, with ``t0``
      the time of ``k`` chains started and read out with no sweep, ``t_s`` the same with ``s`` sweeps,
      and ``S`` the sampling's sweeps;
    * Inception (FID, precision/recall): ``images * t_img``, ``t_img`` timed on a small batch;
    * the Frechet distance, per FID: ``(2048 / 256)^3 * t_256``, ``t_256`` its time on 256 features
      (its eigendecompositions or matrix square root cost ``O(d^3)``);
    * AIS: ``(B - 1) * (t_11 / 10)`` for ``B`` intermediate distributions, ``t_11`` the time of the same
      number of chains through 11;
    * log-likelihood: ``M * t_m / m``, ``t_m`` the time of ``m`` examples, for ``M`` test examples.

    Loading the data, the class coverage and the copying check are not counted (seconds each).
    """
    import numpy as np

    model, dev, n = loaded.model, loaded.device, s["num_samples"]
    g = _generator(12345, dev)
    parts: dict[str, float] = {}
    if s["fid"]:
        total = 0.0
        for spec in specs:
            k = max(1, min(n, spec.batch_size, 200))
            steps = min(spec.num_steps, 5)
            t0 = _timed(lambda: _draw(model, k, replace(spec, num_steps=0, batch_size=k), None if spec.start == "noise"
                                      else _start_data(loaded, k, None, s["data_root"], dm), g, False), dev)
            t_s = t0
            if steps:
                t_s = _timed(lambda: _draw(model, k, replace(spec, num_steps=steps, batch_size=k), None if spec.start ==
                                           "noise" else _start_data(loaded, k, None, s["data_root"], dm), g, False), dev)
            total += (n / k) * (t0 + spec.num_steps * max(t_s - t0, 0.0) / max(steps, 1))
        parts["sampling"] = total * num_checkpoints
        if inception is not None and inception_images:
            shape = (4, *(loaded.data_info or {}).get("image_shape", (1, 28, 28)))
            x = torch.rand(shape)
            inception(x)  # the first call allocates
            parts["inception"] = _timed(lambda: inception(x), dev) / 4 * inception_images
        if inception is not None:
            from qidbm.metrics.frechet import frechet_distance

            a = torch.randn(512, 256, generator=g, device=dev).double().cpu().numpy()
            sig = a.T @ a / 512
            t = _timed(lambda: frechet_distance(a[0], sig, a[1], sig + 0.1 * np.eye(256), method=s["fid_method"]),
                       torch.device("cpu"))
            parts["frechet"] = t * (2048 / 256) ** 3 * (len(specs) + num_checkpoints - 1)
    if s["ais_runs"]:
        from qidbm.metrics.likelihood import ais_log_likelihood, ais_log_partition

        m64 = copy.deepcopy(model).double()
        t = _timed(lambda: ais_log_partition(m64, num_runs=s["ais_runs"], num_betas=11, generator=g), dev)
        parts["ais"] = t / 10 * (s["ais_betas"] - 1)
        if loaded.data_info is not None:
            m = min(50, s["ais_test_examples"])
            v = (torch.randn(m, model.n_visible, generator=g, device=dev, dtype=torch.float64) if model.gaussian_visible
                 else torch.randint(0, 2, (m, model.n_visible), generator=g, device=dev).double())
            parts["log_likelihood"] = _timed(lambda: ais_log_likelihood(m64, v, 0.0, generator=g), dev) / m * \
                min(s["ais_test_examples"], _test_size(dm, s["ais_test_examples"]))
            if s.get("raise_runs"):  # timed on one full batch of chains (small batches cost more per chain)
                from qidbm.metrics.likelihood import raise_log_likelihood

                n_test = min(s["ais_test_examples"], _test_size(dm, s["ais_test_examples"]))
                b = max(1, min(n_test, 1000 // s["raise_runs"]))
                vb = v[torch.arange(b, device=dev) % m]
                t = _timed(lambda: raise_log_likelihood(m64, vb, num_runs=s["raise_runs"], num_betas=11, generator=g), dev)
                parts["raise"] = t / 10 * (s["ais_betas"] - 1) * math.ceil(n_test / b)
    parts["total"] = sum(parts.values())
    return parts


def _test_size(dm, wanted: int) -> int:
    try:
        return dm.split_pixels("test").shape[0] if dm is not None else wanted
    except Exception:  # a data module without a test split: the log-likelihood is skipped or fails later
        return wanted


def _describe_estimate(parts: dict[str, float], s: dict[str, Any], specs: list[SamplingSpec], inception_images: int,
                       num_checkpoints: int) -> str:
    words = []
    if "sampling" in parts:
        sweeps = " and ".join(str(sp.num_steps) for sp in specs)
        ck = f" x {num_checkpoints} checkpoints" if num_checkpoints > 1 else ""
        words.append(f"sampling {s['num_samples']:,} x {sweeps} sweeps{ck}: {_seconds(parts['sampling'])}")
    if "inception" in parts:
        words.append(f"Inception on {inception_images:,} images: {_seconds(parts['inception'])}")
    if "frechet" in parts:
        words.append(f"Frechet distances: {_seconds(parts['frechet'])}")
    if "ais" in parts:
        words.append(f"AIS {s['ais_runs']} chains x {s['ais_betas']:,} distributions: {_seconds(parts['ais'])}")
    if "log_likelihood" in parts:
        words.append(f"log-likelihood of up to {s['ais_test_examples']:,} test images: {_seconds(parts['log_likelihood'])}")
    if "raise" in parts:
        words.append(f"RAISE {s['raise_runs']} chain(s) per test image: {_seconds(parts['raise'])}")
    return (f"estimated run time: about {_seconds(parts['total'])} ({'; '.join(words) or 'nothing to compute'}; "
            "timed on small pieces just now)")


# --------------------------------------------------------------------------- evaluation
def checkpoint_files(folder: str | os.PathLike, problems: list | None = None) -> list[Path]:
    """The checkpoints of a run folder (or its checkpoints/), one per training step, in step order.

    Every ``*.ckpt`` is read as data only (:func:`qidbm.checkpoint.read_checkpoint`: a file that holds
    code is refused before any of it runs) and checked: a ``qidbm fit`` checkpoint with finite
    parameters. A file that fails raises a ``ValueError`` naming it, or, with a ``problems`` list, is
    left out and appended to it as ``(path, message)``; a folder with no usable checkpoint raises
    ``FileNotFoundError`` naming the files and why each was left out.
    """
    from qidbm.checkpoint import (CheckpointError, check_checkpoint, check_finite, not_a_checkpoint_message,
                                  read_checkpoint)

    folder = Path(folder)
    sub = folder / "checkpoints"
    files = sorted((sub if sub.is_dir() else folder).glob("*.ckpt"))
    if not files:
        raise FileNotFoundError(f"no .ckpt files in {folder} (or its checkpoints/); pass a checkpoint or a run's folder")
    by_step: dict = {}
    left_out: list[tuple[Path, str]] = []
    for f in files:
        try:
            ckpt = read_checkpoint(f, map_location="cpu", mmap=True)
            if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
                raise CheckpointError(not_a_checkpoint_message(f, " (no 'state_dict')"))
            try:
                check_checkpoint(ckpt)
            except ValueError as e:
                raise CheckpointError(f"{f}: {e}") from e
            check_finite({"state_dict": ckpt["state_dict"]}, f)
        except (OSError, ValueError) as e:
            if problems is None:
                raise
            left_out.append((f, str(e)))
            continue
        step = ckpt.get("global_step", -1)
        if step not in by_step or f.name != "last.ckpt":
            by_step[step] = f
    if problems is not None:
        problems.extend(left_out)
    if not by_step:
        raise FileNotFoundError(f"no readable checkpoint in {folder}: " + "; ".join(f"{f.name} left out ({why})"
                                                                                      for f, why in left_out))
    return [by_step[k] for k in sorted(by_step)]


def evaluate(
    source: Any,
    *,
    preset: str | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    fid: bool = True,
    fid_weights: str | os.PathLike | None = None,
    fid_backend: str = "pytorch-fid",
    fid_batch_size: int | None = None,
    fid_reference: str = "test",
    fid_reference_size: int | None = None,
    fid_method: str = "eigh",
    prc_samples: int | None = None,
    copy_samples: int | None = None,
    ais_runs: int | None = None,
    ais_betas: int | None = None,
    ais_test_examples: int | None = None,
    raise_runs: int | None = None,
    binarization: str | None = None,
    binarize_seed: int = 0,
    batch_size: int | None = None,
    save_samples: str | os.PathLike | None = None,
    data_root: str | None = None,
    estimate: bool = True,
    progress: bool = False,
    log: Log | None = None,
    **sampling: Any,
) -> dict[str, Any]:
    """FID, sample diagnostics and the AIS log-likelihood of a machine: what ``qidbm evaluate`` computes.

    ``source``: a checkpoint path, a run folder (FID of every checkpoint in it, everything else on the
    last), a :class:`Loaded`, a trained ``BoltzmannModule`` or a ``BoltzmannMachine``.

    Presets (:data:`PRESETS`; explicit settings win over them):

    * ``None`` (``qidbm evaluate``'s defaults, :data:`EVALUATION_DEFAULTS`): FID of 10,000 samples
      drawn the machine's default way (:func:`sample`) against the whole test set, precision/recall on
      2,000 samples, the copying check on 1,000, AIS with 100 chains x 10,000 distributions and the
      log-likelihood of 10,000 test images;
    * ``"quick"``: 1,000 samples against the first 1,000 test images, no precision/recall, the copying
      check on 1,000, AIS with 16 chains x 1,000 distributions, 1,000 test images: minutes on a CPU;
    * ``"paper"``: the defaults, with the samples drawn twice, by Taniguchi et al.'s sampler (noise,
      0 sweeps, local search to the visible mode) and by 1,000 Gibbs sweeps from noise (conditional
      mean), both scored (``"samplings"``; the first at the top level).

    Settings: ``num_samples`` (for FID), ``fid`` (False skips sampling and FID), ``fid_weights``
    (Inception weights file, else ``$QIDBM_FID_WEIGHTS``, else pytorch-fid's download),
    ``fid_backend`` (``"pytorch-fid"`` or ``"torchmetrics"``), ``fid_batch_size`` (50 on CPU, 200 on
    GPU), ``fid_reference`` (``"test"``, ``"train"`` or ``"val"``), ``fid_reference_size`` (its first N
    images), ``fid_method`` (``"eigh"`` or ``"sqrtm"``), ``prc_samples`` / ``copy_samples`` (0
    skips), ``ais_runs`` (0 skips AIS), ``ais_betas``, ``ais_test_examples``, ``raise_runs`` (reverse
    chains per test image of RAISE, the conservative estimate reported beside AIS on the same test images and
    path; 0 or None skips it; :func:`qidbm.metrics.likelihood.raise_log_likelihood`), ``binarization``
    (MNIST / Fashion-MNIST: ``"threshold"`` or ``"stochastic"``, the test set the machine is scored on,
    default the one it was trained on) with ``binarize_seed`` (the stochastic test set's seed), ``save_samples`` (a folder
    for ``samples.npy`` and ``samples.png``), ``data_root``. Sampling options (``num_steps``, ``start``,
    ``output``, ...; ``batch_size``): as :func:`sample`'s; the paper preset fixes its samplings
    (``quantum_step`` and ``batch_size`` apart). ``estimate``: time small pieces first and report
    the expected run time (``"estimated_seconds"``). ``log``: called with each line of the report (``print``
    prints what ``qidbm evaluate`` prints); ``progress``: progress bars.

    Returns a dict (JSON-able): ``checkpoint``, ``model``, ``model_config``, ``epoch``,
    ``global_step``, ``preset``; with FID: ``fid``, ``fid_backend``, ``fid_reference``,
    ``sampling`` (the sampling, in words), ``num_samples``, ``sampling_seconds``, ``fid_seconds``,
    ``acceptance_layer<l>`` (quantum machines, exact step), ``class_coverage`` (MNIST, Fashion-MNIST:
    ``classes``, ``fractions``, ``classes_in_range`` = classes within 4-20 % by the shipped classifier, ...),
    ``precision_recall``, ``copying``, ``samplings`` (paper preset), ``fid_per_checkpoint``,
    ``fid_min``, ``fid_min_checkpoint``, ``fid_final`` (a run folder); with AIS: ``log_z``,
    ``log_z_stderr``, ``ais_runs``, ``ais_betas``, ``test_log_likelihood`` (nats per example: the mean
    of ``log p(v) = log p~(v) - log Z`` over the test images; optimistic), ``test_log_likelihood_sem``,
    ``test_examples``; with RAISE: ``test_log_likelihood_raise`` (conservative), ``test_log_likelihood_raise_sem``,
    ``raise_runs``; ``binarization`` (the test set's record, when the data has one); ``estimated_seconds`` (per part and ``total``) and ``seconds`` (the run).

    A run folder adds ``evaluated_checkpoint`` and, for files it left out (damaged, holding code, NaN/Inf
    parameters: each named in the report), ``skipped_checkpoints`` (``checkpoint``, ``error``); a
    ``save_samples`` write that failed (a full disk: the previous files are kept) adds
    ``save_samples_error`` and the evaluation goes on.

    Raises :class:`SettingError` / :class:`SampleMemoryError` before any expensive step when a setting
    (the seed included) cannot work, ``FIDWeightsError`` when the Inception weights cannot be found, a
    ``ValueError`` for a checkpoint that cannot be used (damaged, holding code, NaN/Inf parameters).
    """
    unknown = sorted(set(sampling) - set(SAMPLING_OPTIONS))
    if unknown:
        raise TypeError(f"evaluate() got unknown argument(s) {unknown}; the sampling options are {list(SAMPLING_OPTIONS)}")
    s = _resolve_settings(preset, {
        "num_samples": num_samples, "fid_reference_size": fid_reference_size, "prc_samples": prc_samples,
        "copy_samples": copy_samples, "ais_runs": ais_runs, "ais_betas": ais_betas, "ais_test_examples": ais_test_examples})
    s.update(fid=bool(fid), fid_weights=fid_weights, fid_backend=fid_backend, fid_reference=fid_reference,
             fid_method=fid_method, device=device, save_samples=save_samples, data_root=data_root,
             raise_runs=int(raise_runs or 0), binarization=binarization, binarize_seed=binarize_seed)
    if s["samplings"] == "paper":
        fixed = sorted(k for k, v in sampling.items() if v is not None and k != "quantum_step")
        if fixed:
            raise SettingError(lambda name: f"the paper preset fixes its two samplings; leave "
                                            f"{', '.join(name(k) for k in fixed)} unset or drop the preset")
    _setting_problems(s)
    check_seed(seed)
    say = log or (lambda line: None)
    t_start = time.perf_counter()
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    skipped: list[tuple[Path, str]] = []
    files = checkpoint_files(path, problems=skipped) if path is not None and path.is_dir() else None
    for f, why in skipped:
        say(f"skipped {f}: {why}")
    if files:
        say(f"{len(files)} checkpoint(s) of {path} read{f' ({len(skipped)} skipped)' if skipped else ''}; "
            f"evaluating the last, {files[-1].name}" + (" (FID of each)" if len(files) > 1 and s["fid"] else ""))
    loaded = _as_loaded(files[-1] if files else source, device)
    model, dev, data_info = loaded.model, loaded.device, loaded.data_info
    if fid_batch_size is None:  # measured by bench/fid_speed.py: small batches are faster on CPU
        fid_batch_size = 200 if dev.type == "cuda" else 50
    s["fid_batch_size"] = fid_batch_size
    if s["fid"]:
        _check_memory(s["num_samples"], model, dev, "num_samples")
    if s["samplings"] == "paper":
        specs = _paper_samplings(sampling.get("quantum_step"), batch_size or SamplingSpec().batch_size)
    else:
        specs = [resolve_sampling(loaded.sampling, batch_size=batch_size, **sampling)]
    results: dict[str, Any] = {
        "checkpoint": str(source) if path is not None else None, "model": loaded.info.get("model_class"),
        "model_config": loaded.info.get("model_config"), "epoch": loaded.info.get("epoch"),
        "global_step": loaded.info.get("global_step"), "preset": preset}
    if files is not None:
        results["evaluated_checkpoint"] = str(files[-1])
    if skipped:
        results["skipped_checkpoints"] = [{"checkpoint": str(f), "error": why} for f, why in skipped]
    say(f"model: {results['model']} {results['model_config']} (epoch {results['epoch']})")
    dm = None
    if data_info is not None and (s["fid"] or s["ais_runs"] > 0 or any(sp.start != "noise" for sp in specs)):
        from qidbm.data import datamodule_from_info

        over = {} if s["binarization"] is None else {"binarization": s["binarization"], "binarize_seed": s["binarize_seed"]}
        try:
            dm = datamodule_from_info(data_info, s["data_root"], **over)
        except TypeError:  # only the MNIST-format modules take a binarisation
            raise SettingError(lambda name: f"{name('binarization')} applies to MNIST and Fashion-MNIST; this machine "
                                            f"was trained on {data_info['dataset']}") from None
        dm.setup("fit")
        if over:  # scored on another binarisation: FID keys, decoding and the report follow the data module
            data_info = dm.data_info()
            loaded = replace(loaded, data_info=data_info)
        if "binarization" in dm.data_info():
            results["binarization"] = dm.data_info()["binarization"]
            say(f"test set: stochastically binarised, seed {results['binarization']['seed']} "
                f"(digest {results['binarization']['test_sha256']})")
    g = _generator(seed, dev)
    acc = None
    if s["fid"] and s["fid_backend"] == "pytorch-fid":
        from qidbm.metrics.fid import FIDAccumulator

        # load the Inception weights first: a missing or wrong file fails before any sampling
        # (fuse_bn folds batch norms into the convolutions: the same features to ~1e-6, tested)
        acc = FIDAccumulator(s["fid_weights"], batch_size=fid_batch_size, device=dev, progress=progress, fuse_bn=True)
    n_ref = None
    if s["fid"]:
        if dm is None:
            raise ValueError("FID needs the test set: this machine has no data info (a checkpoint written by "
                             "`qidbm fit` has it); pass fid=False (--no-fid) or a checkpoint")
        ref = s["fid_reference"]
        try:  # a missing split fails here, before any sampling
            available = dm.split_pixels(ref).shape[0]
        except ValueError as e:
            msg = str(e)
            raise SettingError(lambda name: f"{name('fid_reference')} {ref}: {msg}; the run held out no images, "
                                            f"use {name('fid_reference')} train") from None
        from qidbm.metrics import reference_size

        n_ref = reference_size(ref, s["fid_reference_size"], available)
    num_ckpts = len(files) if files else 1
    if estimate:
        images = 0
        if s["fid"]:
            images = s["num_samples"] * (len(specs) + num_ckpts - 1)
            images += min(s["prc_samples"], s["num_samples"]) if acc is not None else 0  # test images of precision/recall
            if acc is None or not _reference_cached(data_info, s, n_ref):
                images += n_ref if n_ref is not None else available
        inception = acc
        if s["fid"] and inception is None:  # torchmetrics: the same network, timed through an accumulator
            from qidbm.metrics.fid import FIDAccumulator

            inception = FIDAccumulator(s["fid_weights"], batch_size=fid_batch_size, device=dev, fuse_bn=True)
        parts = _estimate(loaded, specs, s, num_checkpoints=num_ckpts, inception_images=images,
                          inception=None if inception is None else inception.features, dm=dm)
        results["estimated_seconds"] = {k: round(v, 1) for k, v in parts.items()}
        say(_describe_estimate(parts, s, specs, images, num_ckpts))
    if s["fid"]:
        if files is not None and len(files) > 1:  # FID of every checkpoint, the primary sampling
            per = []
            for f in files[:-1]:
                loaded_i = load(f, dev)
                r_i = _sample_and_score(loaded_i, dm, specs[0], s, n_ref, acc, g, progress, say, diagnostics=False)
                per.append({"checkpoint": str(f), "global_step": loaded_i.info.get("global_step"), "fid": r_i["fid"]})
                say(f"{f.name} (step {loaded_i.info.get('global_step')}): FID {r_i['fid']:.3f}")
            results["fid_per_checkpoint"] = per
        scored = [_sample_and_score(loaded, dm, spec, s, n_ref, acc, g, progress, say, diagnostics=True,
                                    save=s["save_samples"] if i == 0 else None) for i, spec in enumerate(specs)]
        results.update(scored[0])  # the primary sampling at the top level
        if len(scored) > 1:
            results["samplings"] = scored
        if "fid_per_checkpoint" in results:
            results["fid_per_checkpoint"].append({"checkpoint": str(files[-1]), "global_step": loaded.info.get("global_step"),
                                                   "fid": scored[0]["fid"]})
            best = min(results["fid_per_checkpoint"], key=lambda r: r["fid"])
            results.update(fid_final=scored[0]["fid"], fid_min=best["fid"], fid_min_checkpoint=best["checkpoint"])
            say(f"FID over {len(files)} checkpoints: minimum {best['fid']:.3f} ({Path(best['checkpoint']).name}), "
                f"final {scored[0]['fid']:.3f}")
    if s["ais_runs"] > 0:
        results.update(_log_likelihood(model, dm, s, g, progress, say))
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    if estimate:
        say(f"done in {_seconds(results['seconds'])} (estimated {_seconds(results['estimated_seconds']['total'])})")
    return results


def _reference_cached(data_info: dict | None, s: dict[str, Any], n_ref: int | None) -> bool:
    """Whether the FID reference statistics are on disk already (their Inception pass is then free)."""
    from qidbm.metrics import data_reference_key, reference_stats_path

    try:
        key = data_reference_key(data_info, s["fid_reference"], n_ref)
        return reference_stats_path(key, weights_path=s["fid_weights"]).is_file()
    except Exception:  # the weights cannot be identified: count the pass
        return False


def _log_likelihood(model: BoltzmannMachine, dm, s: dict[str, Any], g, progress: bool, say: Log) -> dict[str, Any]:
    """AIS estimate of log Z and the mean test log-likelihood (docs/maths.md, 'AIS'), and with ``raise_runs``
    RAISE's on the same images ('RAISE'), in float64 on a copy."""
    from qidbm.metrics.likelihood import ais_log_likelihood, ais_log_partition, base_rate_visible_bias

    out: dict[str, Any] = {}
    train = test = None
    if dm is not None:
        train = torch.cat([b[0] if isinstance(b, (list, tuple)) else b for _, b in zip(range(20), dm.train_dataloader())])
        test = torch.cat([b[0] if isinstance(b, (list, tuple)) else b for b in dm.test_dataloader()])[: s["ais_test_examples"]]
    base = None if (train is None or model.gaussian_visible) else base_rate_visible_bias(train)
    model64 = copy.deepcopy(model).double()  # the caller's machine keeps its precision
    r = ais_log_partition(model64, num_runs=s["ais_runs"], num_betas=s["ais_betas"], base_visible_bias=base,
                          generator=g, progress=progress)
    out.update(log_z=r.log_z, log_z_stderr=r.stderr, ais_runs=r.num_runs, ais_betas=r.num_betas)
    say(str(r))
    if test is not None:
        ll = ais_log_likelihood(model64, test.double(), r, generator=g)
        out.update(test_log_likelihood=float(ll.mean()), test_log_likelihood_sem=float(ll.std() / math.sqrt(len(ll))),
                   test_examples=len(ll))
        kind = "exact -F(v)" if not [l for l in range(1, model.num_layers) if l not in model.default_summed_layers()] \
            else "importance-sampled posterior"
        say(f"test log-likelihood: {float(ll.mean()):.3f} nats/example ({len(ll)} examples; {kind}; "
            f"uncertainty of log Z {r.stderr:.3f})")
        if s.get("raise_runs"):  # the conservative side, on the same test images and annealing path
            from qidbm.metrics.likelihood import raise_log_likelihood

            rl = raise_log_likelihood(model64, test.double(), num_runs=s["raise_runs"], num_betas=s["ais_betas"],
                                      base_visible_bias=base, generator=g, progress=progress)
            out.update(test_log_likelihood_raise=float(rl.mean()), raise_runs=s["raise_runs"],
                       test_log_likelihood_raise_sem=float(rl.std() / math.sqrt(len(rl))) if len(rl) > 1 else 0.0)
            say(f"test log-likelihood, RAISE: {float(rl.mean()):.3f} nats/example ({len(rl)} examples, "
                f"{s['raise_runs']} reverse chain(s) x {s['ais_betas']:,} distributions; conservative: AIS errs high, "
                f"RAISE low)")
    return out


def _sample_and_score(loaded: Loaded, dm, spec: SamplingSpec, s: dict[str, Any], n_ref: int | None, acc, g,
                      progress: bool, say: Log, *, diagnostics: bool, save=None) -> dict[str, Any]:
    """Draw ``num_samples`` samples with ``spec``; FID against the reference and, with ``diagnostics``,
    class coverage, precision/recall and the copying check."""
    import numpy as np

    from qidbm.images import visible_to_images
    from qidbm.metrics import compute_fid, data_reference_key, frechet_distance, reference_stats

    n, data_info = s["num_samples"], loaded.data_info
    data = _start_data(loaded, n, None, s["data_root"], dm) if spec.start != "noise" else None
    t0 = time.time()
    x, stats = _draw(loaded.model, n, spec, data, g, progress)
    out: dict[str, Any] = {"sampling": spec.describe(), "num_samples": n, "sampling_seconds": round(time.time() - t0, 2)}
    images = visible_to_images(x, data_info)
    for l, rate in stats.acceptance().items():
        say(f"acceptance rate (quantum layer {l}): {float(rate):.4f}")
        out[f"acceptance_layer{l}"] = float(rate)
    if stats.swap_rates():
        out["replica_swap_rates"] = [float(r) for r in stats.swap_rates().values()]
        say("replica swap acceptance (pairs 0-1, 1-2, ...): " + ", ".join(f"{r:.3f}" for r in out["replica_swap_rates"]))
    if save:
        from qidbm.atomic import OutputWriteError, atomic_write_set, npy_writer

        folder = Path(save)
        arr = images.numpy()
        try:  # the array and its grid as one set; a failed write (a full disk) does not stop the evaluation
            atomic_write_set([(folder / "samples.npy", npy_writer(arr)),
                              (folder / "samples.png", grid_png_writer(images[:100], nrow=10))], what="samples")
        except OutputWriteError as e:
            out["save_samples_error"] = e.strerror
            say(f"error: {e.strerror}; the evaluation goes on")
    t0 = time.time()
    n_pr = min(s["prc_samples"], len(images)) if diagnostics and acc is not None else 0
    gen_features = None
    split, bs = s["fid_reference"], s["fid_batch_size"]
    if s["fid_backend"] == "pytorch-fid":
        key = data_reference_key(data_info, split, n_ref)
        mu_r, sigma_r = reference_stats(key, lambda: dm.reference_images(split, n_ref), accumulator=acc)
        acc.reset()
        if n_pr:  # the first n_pr samples' features serve FID and precision/recall alike
            gen_features = torch.cat([acc.features(b) for b in images[:n_pr].split(bs)])
            acc.update_features(gen_features)
        if n_pr < len(images):
            acc.update(images[n_pr:])
        mu, sigma = acc.compute_stats()
        fid = float(frechet_distance(mu, sigma, mu_r, sigma_r, method=s["fid_method"]))
    else:
        fid = compute_fid(images, dm.reference_images(split, n_ref), backend="torchmetrics", weights_path=s["fid_weights"],
                          batch_size=bs, device=loaded.device, progress=progress)
    reference = split if n_ref is None else f"{split} (first {n_ref})"
    out.update(fid=fid, fid_backend=s["fid_backend"], fid_reference=reference, fid_seconds=round(time.time() - t0, 2))
    say(f"FID ({s['fid_backend']}, {n} samples vs {data_info['dataset']} {reference}, "
        f"{data_info['encoding']}): {fid:.3f}   [sampling: {spec.describe()}]")
    if not diagnostics:
        return out
    from qidbm.metrics.classifier import CLASSIFIER_FILES, class_coverage

    if data_info["dataset"] in CLASSIFIER_FILES and images.shape[-2:] == (28, 28):
        cov = class_coverage(images, data_info["dataset"])
        out["class_coverage"] = cov
        say("class coverage: " + ", ".join(f"{c} {100 * f:.1f}%" for c, f in zip(cov["classes"], cov["fractions"]))
            + f" ({cov['classes_in_range']}/10 within 4-20 %)")
    if gen_features is not None and n_pr > 3:
        from qidbm.metrics.precision_recall import precision_recall

        test = dm.test_images()[:n_pr]
        real_features = torch.cat([acc.features(b) for b in test.split(bs)])
        pr = precision_recall(gen_features, real_features)
        out["precision_recall"] = {**pr, "samples": n_pr, "features": "Inception pool3"}
        say(f"precision {pr['precision']:.3f}, recall {pr['recall']:.3f} ({n_pr} samples vs {n_pr} test images, "
            "Inception features, k=3)")
    if s["copy_samples"]:
        from qidbm.metrics.precision_recall import copying_report

        k = min(s["copy_samples"], len(images))
        train = torch.cat([dm.decode(b[0] if isinstance(b, (list, tuple)) else b) for b in dm.train_dataloader()])
        test = dm.test_images()[:k]
        rep = copying_report(images[:k].flatten(1), train.flatten(1), test.flatten(1))
        out["copying"] = {**rep, "samples": k}
        say(f"nearest training image: median distance {rep['sample_nn_median']:.2f} for samples vs "
            f"{rep['test_nn_median']:.2f} for test images (ratio {rep['ratio']:.2f}; "
            f"{100 * rep['fraction_closer_than_test_1pct']:.1f}% of samples closer than 99% of test images)")
    return out
