"""The sampling options of ``qidbm sample`` and ``qidbm evaluate`` as command-line arguments."""

from __future__ import annotations

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
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"chains run at once (default {d.batch_size})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--data-root", default=None, help="data root for --start data/local_mode")


def spec_from_arguments(args, hparams: dict | None, gaussian_visible: bool = False) -> SamplingSpec:
    """The :class:`SamplingSpec` of parsed :func:`add_sampling_arguments`: the options given, the rest
    from the checkpoint's trained protocol (``hparams``: its training hyperparameters; ``gaussian_visible``:
    the machine's visible units), else the defaults."""
    base = trained_sampling(hparams, gaussian_visible) or SamplingSpec()
    given = {k: getattr(args, k) for k in ("num_steps", "start", "output", "quantum_step", "matmul_precision") if getattr(args, k, None) is not None}
    return SamplingSpec(**{**asdict(base), **given, "batch_size": args.batch_size})
