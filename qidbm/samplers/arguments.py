"""The sampling options of ``qidbm sample`` and ``qidbm evaluate`` as command-line arguments."""

from __future__ import annotations

import argparse
from dataclasses import asdict

from qidbm.samplers.drawing import OUTPUTS, SamplingSpec, trained_sampling


def add_sampling_arguments(p) -> None:
    """Add the sampling options to an argparse parser.

    Options left unset take the checkpoint's trained protocol (:func:`~qidbm.samplers.drawing.trained_sampling`),
    else the :class:`~qidbm.samplers.drawing.SamplingSpec` defaults; :func:`spec_from_arguments` resolves them.
    """
    d = SamplingSpec()
    p.add_argument("--num-steps", type=int, default=None,
                   help=f"Gibbs sweeps per chain (default: as trained, else {d.num_steps})")
    p.add_argument("--start", choices=["noise", "data", "local_mode"], default=None,
                   help=f"chain start (default: as trained, else {d.start})")
    p.add_argument("--output", choices=list(OUTPUTS), default=None,
                   help=f"what is returned (default: as trained, else {d.output})")
    p.add_argument("--quantum-step", choices=["paper", "exact"], default=None,
                   help=f"quantum Gibbs step (default: as trained, else {d.quantum_step})")
    p.add_argument("--matmul-precision", choices=["float32", "bfloat16"], default=None,
                   help=f"precision of the chains' matrix products (default: as trained, else {d.matmul_precision})")
    p.add_argument("--replica-betas", type=_ladder, default=None, metavar="1,B1,B2,...",
                   help="replica exchange over these inverse temperatures (comma-separated, from 1 down; "
                        "samples from the first replica; default: none)")
    p.add_argument("--replica-field-scales", type=_ladder, default=None, metavar="1,S1,...,0",
                   help="replica exchange over transverse fields scaled by these factors (quantum machines; "
                        "comma-separated, from 1 down to >= 0; default: none)")
    p.add_argument("--noise-density", type=_density, default=None, metavar="LO,HI",
                   help="a noise start's binary visible units are Bernoulli(q), q ~ U(LO, HI) per chain "
                        "(default: as trained, else 0.5,0.5: uniform noise)")
    p.add_argument("--anneal-from", type=float, default=None, metavar="BETA",
                   help="simulated annealing: the first sweep's inverse temperature, rising geometrically to 1 "
                        "at the last (default: as trained, else 1: no annealing)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"chains run at once (default {d.batch_size})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--data-root", default=None, help="data root for --start data/local_mode")


def _ladder(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers such as 1,0.8,0.6, got {text!r}") from None


def _density(text: str) -> tuple[float, float]:
    from qidbm.models.base import check_density_range

    try:
        lo, hi = (float(x) for x in text.split(","))
        return check_density_range((lo, hi))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO,HI with 0 <= LO <= HI <= 1 such as 0.3,0.7, got {text!r}") from None


#: the sampling options that replace parts of a machine's default sampling: the fields of
#: :class:`~qidbm.samplers.drawing.SamplingSpec` that ``qidbm sample``/``evaluate`` take as ``--num-steps``, ...
#: and :func:`qidbm.sample`/:func:`qidbm.evaluate` as keyword arguments (``batch_size`` apart: it never changes
#: the samples' distribution)
SAMPLING_OPTIONS: tuple[str, ...] = ("num_steps", "start", "output", "quantum_step", "matmul_precision",
                                     "replica_betas", "replica_field_scales", "noise_density", "anneal_from")


def resolve_sampling(base: SamplingSpec | None, batch_size: int | None = None, **given) -> SamplingSpec:
    """``base`` (a machine's default sampling; None: the :class:`SamplingSpec` defaults) with the
    options in ``given`` (names from :data:`SAMPLING_OPTIONS`; None means "as in ``base``").

    A start other than noise drops the base's noise density and annealing (both describe a noise start),
    and a replica ladder drops the base's annealing, unless those are given too. ``batch_size``: chains
    run at once (None: the base's).
    """
    unknown = sorted(set(given) - set(SAMPLING_OPTIONS))
    if unknown:
        raise TypeError(f"unknown sampling option(s) {unknown}; the options are {list(SAMPLING_OPTIONS)} and batch_size")
    base = base or SamplingSpec()
    given = {k: v for k, v in given.items() if v is not None}
    if given.get("start", "noise") != "noise" and "noise_density" not in given:
        given["noise_density"] = None  # a trained noise start's density does not apply to data starts
    if given.get("start", "noise") != "noise" and "anneal_from" not in given:
        given["anneal_from"] = 1.0  # nor does the trained annealing from noise
    if (given.get("replica_betas") or given.get("replica_field_scales")) and "anneal_from" not in given:
        given["anneal_from"] = 1.0  # a ladder replaces the trained annealing
    if batch_size is not None:
        given["batch_size"] = batch_size
    return SamplingSpec(**{**asdict(base), **given})


def spec_from_arguments(args, hparams: dict | None, gaussian_visible: bool = False) -> SamplingSpec:
    """The :class:`SamplingSpec` of parsed :func:`add_sampling_arguments`: the options given, the rest
    from the checkpoint's trained protocol (``hparams``: its training hyperparameters; ``gaussian_visible``:
    the machine's visible units), else the defaults (:func:`resolve_sampling`)."""
    return resolve_sampling(trained_sampling(hparams, gaussian_visible), batch_size=args.batch_size,
                            **{k: getattr(args, k, None) for k in SAMPLING_OPTIONS})
