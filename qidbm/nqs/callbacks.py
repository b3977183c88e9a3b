"""The report of a VMC run: a Lightning callback that evaluates the trained wave function.

At the end of training :class:`FinalEvaluation` runs :func:`~qidbm.nqs.evaluate_energy` on
long fresh chains (started from the module's chains), then writes ``<out_dir>/nqs_result.json``,
sends the numbers to the logger as ``final_*`` metrics, prints one line and (``make_plots``)
writes ``energy.png`` and ``density.png`` (:func:`~qidbm.nqs.plots.save_plots`). In a config::

    trainer:
      callbacks:
        - class_path: qidbm.nqs.FinalEvaluation
          init_args: {n_chains: 256, n_samples: 4096}
"""

from __future__ import annotations

import json
import os
import time
from typing import Optional

import lightning.pytorch as pl
import torch

from .evaluation import RadialDensity, evaluate_energy
from .plots import save_plots

__all__ = ["FinalEvaluation"]


class FinalEvaluation(pl.Callback):
    """Evaluate a :class:`~qidbm.nqs.VMCModule`'s final wave function and write the run's results.

    Args:
        n_chains: evaluation chains (started from the module's chains, taken in turn).
        n_samples: samples per chain (0: no evaluation, nothing written).
        thin: sweeps between samples; burn_in: sweeps before the first sample.
        density_bins, density_rmax: radial one-body density histogram (rmax None: 4/sqrt(omega)).
        out_dir: folder for ``nqs_result.json`` and the plots (None: the trainer's log_dir, else
            ``runs/nqs``).
        make_plots: write ``energy.png`` and ``density.png``.
        progress: show the evaluation's progress bars.

    After the fit, ``result`` holds the dictionary written to ``nqs_result.json`` and ``density``
    the :class:`~qidbm.nqs.evaluation.RadialDensity`.
    """

    def __init__(
        self,
        n_chains: int = 256,
        n_samples: int = 4096,
        thin: int = 1,
        burn_in: int = 200,
        density_bins: int = 60,
        density_rmax: Optional[float] = None,
        out_dir: Optional[str] = None,
        make_plots: bool = True,
        progress: bool = True,
    ):
        super().__init__()
        if n_samples and (n_chains < 2 or n_samples < 4):
            raise ValueError("the final evaluation needs n_chains >= 2 and n_samples >= 4 (or n_samples=0).")
        if thin < 1 or burn_in < 0 or density_bins < 1:
            raise ValueError(f"need thin >= 1, burn_in >= 0, density_bins >= 1; got {thin}, {burn_in}, {density_bins}.")
        self.n_chains, self.n_samples, self.thin, self.burn_in = n_chains, n_samples, thin, burn_in
        self.density_bins, self.density_rmax = density_bins, density_rmax
        self.out_dir, self.make_plots, self.progress = out_dir, make_plots, progress
        self.result: Optional[dict] = None
        self.density: Optional[RadialDensity] = None
        self._t0: Optional[float] = None

    def settings(self) -> dict:
        return {
            "n_chains": self.n_chains, "n_samples": self.n_samples, "thin": self.thin, "burn_in": self.burn_in,
            "density_bins": self.density_bins, "density_rmax": self.density_rmax,
        }

    def output_dir(self, trainer: Optional[pl.Trainer]) -> str:
        if self.out_dir:
            return self.out_dir
        if trainer is not None and trainer.log_dir:
            return trainer.log_dir
        return os.path.join("runs", "nqs")

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        needed = ("wavefunction", "hamiltonian", "sampler", "chains", "history")
        missing = [a for a in needed if not hasattr(pl_module, a)]
        if missing:
            raise TypeError(
                f"FinalEvaluation evaluates a qidbm.nqs.VMCModule; {type(pl_module).__name__} has no "
                f"{', '.join(missing)}."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train_wall = None if self._t0 is None else time.perf_counter() - self._t0
        if not self.n_samples:
            return
        m = pl_module
        result, self.density = evaluate_energy(
            m.wavefunction, m.hamiltonian, m.sampler, m.chains,
            n_samples=self.n_samples, n_chains=self.n_chains, thin=self.thin, burn_in=self.burn_in,
            laplacian=m.hparams.laplacian, density_bins=self.density_bins, density_rmax=self.density_rmax,
            progress=self.progress,
        )
        jastrow = getattr(m.wavefunction, "jastrow", None)
        if jastrow is not None:
            result["jastrow_beta"] = float(jastrow.beta.detach())
        result["train_wall_s"] = train_wall
        result["train_steps"] = int(m.global_step)
        result["torch"] = torch.__version__
        result["hparams"] = {k: v for k, v in m.hparams.items()}
        result["evaluation"] = self.settings()
        self.result = result
        out = self.output_dir(trainer)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "nqs_result.json"), "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        if m.logger is not None:
            metrics = {f"final_{k}": v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
            m.logger.log_metrics(metrics, step=int(m.global_step))
            m.logger.save()
        if self.make_plots:
            save_plots(out, m.history, self.density, m.wavefunction, m.hamiltonian, m.sampler, final=result["energy"])
        msg = f"final energy {result['energy']:.6f} +- {result['energy_err']:.6f}, var(E_L) {result['variance']:.3e}"
        if result["exact"] is not None:
            msg += f" (exact {result['exact']}, rel. error {100 * result['rel_error']:+.3f}%)"
        print(msg)
