"""Variational Monte Carlo of an RBM neural-network quantum state as a LightningModule.

``qidbm fit --config configs/nqs_*.yaml`` (LightningCLI with ``model_class=None``) builds
:class:`VMCModule`; the module provides its own ``train_dataloader`` (a range of step
indices: there is no data, every training step draws fresh samples from the module's
persistent Markov chains).

Each training step:

1. continue the ``n_chains`` chains (positions are a buffer, saved in checkpoints;
   ``burn_in`` sweeps before the first step), collecting ``samples_per_chain`` samples
   ``thin`` sweeps apart;
2. compute the local energies E_L (analytic or ``torch.func`` Laplacian);
3. update the parameters with the lecture's gradient

       dE/dtheta = 2 ( <E_L dlnPsi/dtheta> - <E_L> <dlnPsi/dtheta> ),

   obtained by autograd from the surrogate loss ``2 <(E_L - <E_L>) ln Psi(x)>`` with E_L
   and x detached (so any torch optimizer, clipping and schedulers work unchanged); or,
   with ``sr=True``, by stochastic reconfiguration: ``delta = (S + shift I)^{-1} F`` with
   ``S = <O O^T> - <O><O>^T``, ``F = <E_L O> - <E_L><O>``, ``O = dlnPsi/dtheta`` per sample
   (``torch.func`` Jacobian), written into ``.grad`` and applied by the optimizer
   (plain SGD gives theta -= lr * delta). SR uses Lightning's manual optimization, so the
   Trainer's ``gradient_clip_val`` is not available with it.

Logged per step (``self.log``): ``energy`` (mean E_L), ``energy_err`` (standard error from
the spread of the per-chain means: the chains are independent, so this includes the
autocorrelation inside each chain), ``energy_blocking_err`` (blocking of the chain-averaged
series; meaningful only for ``samples_per_chain`` >= 16), ``variance`` (var E_L),
``acceptance``, and the loss. At the end of training a long evaluation run with the final
parameters gives the reported energy with a blocking error bar; it is written to
``<out_dir>/nqs_result.json`` and to the logger, with ``energy.png`` (energy and var E_L
against iteration) and ``density.png`` (radial one-body density, with the non-interacting
density and, for two electrons in 2D at omega = 1, the exact one from Taut's solution).
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Optional

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .blocking import blocking, blocking_chains
from .hamiltonians import HarmonicTrap, local_energy, taut_one_body_density
from .samplers import make_sampler, sample_chains
from .wavefunction import RBMWaveFunction

__all__ = ["VMCModule", "radial_density", "sr_direction", "vmc_loss"]

_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def vmc_loss(e_loc: Tensor, log_psi: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """Surrogate loss whose parameter gradient is the VMC energy gradient.

    ``loss = 2 <(E_L - <E_L>) ln Psi>`` with E_L treated as a constant, so
    ``d loss / d theta = 2 (<E_L dlnPsi> - <E_L><dlnPsi>)`` (the lecture's C_i; real Psi).
    ``weights`` (normalised, default uniform 1/M) allow exact quadrature in tests.
    """
    e = e_loc.detach()
    if weights is None:
        weights = torch.full_like(e, 1.0 / e.numel())
    w = weights.detach()
    e_mean = (w * e).sum()
    return 2.0 * (w * (e - e_mean) * log_psi).sum()


def sr_direction(O: Tensor, e_loc: Tensor, shift: float = 1e-3) -> Tensor:
    """Stochastic-reconfiguration update direction ``(S + shift I)^{-1} F``.

    ``O`` [M, P] holds dlnPsi/dtheta per sample, ``e_loc`` [M] the local energies;
    ``S = <(O - <O>)(O - <O>)^T>`` and ``F = <(O - <O>)(E_L - <E_L>)>`` (half the energy gradient).
    """
    Oc = O - O.mean(0)
    Ec = e_loc - e_loc.mean()
    M = O.shape[0]
    S = Oc.T @ Oc / M
    F = Oc.T @ Ec / M
    S = S + shift * torch.eye(S.shape[0], dtype=S.dtype, device=S.device)
    return torch.linalg.solve(S, F)


def radial_density(r_counts: Tensor, edges: Tensor, n_configs: int, dim: int) -> np.ndarray:
    """One-body density rho(r) from a histogram of all particles' distances to the trap centre.

    ``rho(r_bin) = counts / (n_configs * shell volume)``, shell volume
    ``V_d(r2) - V_d(r1)``, ``V_d(r) = pi^(d/2) r^d / Gamma(d/2 + 1)``, so that the integral of
    rho over space is the number of particles.
    """
    e = edges.double().cpu().numpy()
    vd = math.pi ** (dim / 2) / math.gamma(dim / 2 + 1)
    shell = vd * (e[1:] ** dim - e[:-1] ** dim)
    return r_counts.double().cpu().numpy() / (n_configs * shell)


class VMCModule(pl.LightningModule):
    """Variational Monte Carlo for N particles in a d-dimensional harmonic trap.

    Physics: ``n_particles``, ``dim``, ``omega``, ``interaction`` (Coulomb 1/r_ij).
    Ansatz (:class:`~qidbm.nqs.RBMWaveFunction`): ``n_hidden``, ``psi_form`` ("sqrt":
    |Psi|^2 = P(x), the lecture's NQS; "amplitude": Psi = P(x), the course's choice),
    ``sigma2`` (None: the oscillator width for the chosen form), ``train_variance``
    (False: s^2 frozen), ``init_std``, ``jastrow`` (Pade-Jastrow factor), ``jastrow_a``
    (None: cusp value 1/(d-1)), ``jastrow_beta`` (initial beta), ``gaussian_only`` (freeze
    W = b = 0: the bare-Gaussian baseline).
    Sampling: ``sampler`` ("metropolis", "importance" = Metropolis-Hastings with drift,
    "gibbs" for psi_form="sqrt" without Jastrow), ``step_size`` (Metropolis),
    ``time_step`` (importance), ``n_chains``, ``samples_per_chain``, ``thin`` (sweeps
    between samples), ``burn_in`` (sweeps before the first step).
    Optimisation: ``optimizer`` ("adam" or "sgd", used unless the CLI's ``optimizer:``
    section overrides ``configure_optimizers``), ``lr``, ``lr_final_factor`` (exponential
    decay per step to ``lr * lr_final_factor`` at the Trainer's ``max_steps``; 1 = constant),
    ``sr`` and ``sr_shift``
    (stochastic reconfiguration), ``laplacian`` ("analytic" or "autograd").
    Loop: ``steps_per_epoch`` (length of the dummy dataloader; the Trainer's
    ``max_steps`` sets the run length).
    Final evaluation: ``eval_chains``, ``eval_samples`` (per chain; 0 disables), ``eval_thin``,
    ``eval_burn_in``, ``density_bins``, ``density_rmax`` (None: 4/sqrt(omega)),
    ``out_dir`` (None: the logger's log_dir, else ``runs/nqs``), ``make_plots``.
    Numerics: ``dtype`` ("float64" default), ``num_threads`` (if set, ``torch.set_num_threads``
    at the start of training: the tensors are tiny, and on a shared CPU one intra-op thread
    is often 10x faster than oversubscribed ones).
    """

    def __init__(
        self,
        n_particles: int = 2,
        dim: int = 2,
        omega: float = 1.0,
        interaction: bool = False,
        n_hidden: int = 4,
        psi_form: str = "sqrt",
        sigma2: Optional[float] = None,
        train_variance: bool = False,
        init_std: float = 0.01,
        jastrow: bool = False,
        jastrow_a: Optional[float] = None,
        jastrow_beta: float = 1.0,
        gaussian_only: bool = False,
        sampler: str = "metropolis",
        step_size: float = 1.0,
        time_step: float = 0.05,
        n_chains: int = 256,
        samples_per_chain: int = 16,
        thin: int = 1,
        burn_in: int = 200,
        optimizer: str = "adam",
        lr: float = 0.01,
        lr_final_factor: float = 1.0,
        sr: bool = False,
        sr_shift: float = 1e-3,
        laplacian: str = "analytic",
        steps_per_epoch: int = 100,
        eval_chains: int = 256,
        eval_samples: int = 4096,
        eval_thin: int = 1,
        eval_burn_in: int = 200,
        density_bins: int = 60,
        density_rmax: Optional[float] = None,
        out_dir: Optional[str] = None,
        make_plots: bool = True,
        dtype: str = "float64",
        num_threads: Optional[int] = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {list(_DTYPES)}, got {dtype!r}.")
        if optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}.")
        if laplacian not in ("analytic", "autograd"):
            raise ValueError(f"laplacian must be 'analytic' or 'autograd', got {laplacian!r}.")
        if n_chains < 2 or samples_per_chain < 1 or thin < 1 or burn_in < 0 or steps_per_epoch < 1:
            raise ValueError(
                "need n_chains >= 2 (the error bar uses the spread of independent chains), samples_per_chain >= 1, "
                f"thin >= 1, burn_in >= 0, steps_per_epoch >= 1; got {n_chains}, {samples_per_chain}, {thin}, "
                f"{burn_in}, {steps_per_epoch}."
            )
        if not 0 < lr_final_factor <= 1:
            raise ValueError(f"lr_final_factor must be in (0, 1], got {lr_final_factor}.")
        if eval_samples and (eval_chains < 2 or eval_samples < 4):
            raise ValueError("the final evaluation needs eval_chains >= 2 and eval_samples >= 4 (or eval_samples=0).")
        dt = _DTYPES[dtype]
        self.wf = RBMWaveFunction(
            n_particles,
            dim,
            n_hidden,
            form=psi_form,
            sigma2=sigma2,
            omega=omega,
            train_variance=train_variance,
            init_std=init_std,
            jastrow=jastrow,
            jastrow_a=jastrow_a,
            jastrow_beta=jastrow_beta,
            gaussian_only=gaussian_only,
            dtype=dt,
        )
        self.hamiltonian = HarmonicTrap(n_particles, dim, omega, interaction)
        self.sampler = make_sampler(sampler, step_size=step_size, time_step=time_step)
        self.sampler.check(self.wf)  # fail at construction, not at step 1
        self.register_buffer("chains", torch.randn(n_chains, n_particles * dim, dtype=dt) / math.sqrt(omega))
        self.register_buffer("thermalized", torch.tensor(False))
        self.automatic_optimization = not sr
        self.history: list[dict] = []
        self.final: Optional[dict] = None
        self._t0: Optional[float] = None

    # ---------------------------------------------------------------- data / optim
    def train_dataloader(self) -> DataLoader:
        """Dummy loader over step indices; each step samples fresh configurations itself."""
        return DataLoader(torch.arange(self.hparams.steps_per_epoch), batch_size=1, num_workers=0)

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.parameters() if p.requires_grad]
        cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.SGD
        opt = cls(params, lr=hp.lr)
        if hp.lr_final_factor == 1.0:
            return opt
        steps = self.trainer.max_steps if self._trainer is not None else -1
        if steps is None or steps < 1:
            raise ValueError("lr_final_factor != 1 needs the Trainer's max_steps (the decay is spread over it).")
        sch = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=hp.lr_final_factor ** (1.0 / steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sch, "interval": "step"}}

    # ---------------------------------------------------------------- VMC pieces
    def local_energy(self, x: Tensor) -> Tensor:
        """E_L for a batch of positions [B, N*d] (no graph kept)."""
        with torch.no_grad() if self.hparams.laplacian == "analytic" else torch.enable_grad():
            e = local_energy(self.hamiltonian, self.wf, x, self.hparams.laplacian)
        return e.detach()

    def draw(self, n_samples: int, thin: int, burn_in: int = 0, progress: bool = False):
        """Advance the module's chains; returns (samples [T, C, n], acceptance [C])."""
        samples, last, acc = sample_chains(
            self.sampler, self.wf, self.chains, n_samples, thin=thin, burn_in=burn_in, progress=progress
        )
        self.chains.copy_(last)
        return samples, acc

    def per_sample_log_psi_grads(self, x: Tensor) -> Tensor:
        """O_k(x_s) = dlnPsi(x_s)/dtheta_k for every trainable parameter, [M, P] (torch.func)."""
        names = [n for n, p in self.wf.named_parameters() if p.requires_grad]
        params = {n: p.detach() for n, p in self.wf.named_parameters() if p.requires_grad}

        def f(p, xs):
            return torch.func.functional_call(self.wf, p, (xs.unsqueeze(0),)).squeeze(0)

        jac = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, x)
        return torch.cat([jac[n].reshape(x.shape[0], -1) for n in names], dim=1)

    # ---------------------------------------------------------------- training
    def on_train_start(self) -> None:
        if self.hparams.num_threads:
            torch.set_num_threads(self.hparams.num_threads)
        self._t0 = time.perf_counter()

    def training_step(self, batch, batch_idx):
        hp = self.hparams
        step = int(self.global_step)  # before the optimizer step (manual mode increments it)
        burn = 0 if bool(self.thermalized) else hp.burn_in
        samples, acc = self.draw(hp.samples_per_chain, hp.thin, burn)
        self.thermalized.fill_(True)
        T, C, n = samples.shape
        x = samples.reshape(T * C, n)
        e = self.local_energy(x)
        if not torch.isfinite(e).all():
            raise FloatingPointError(
                "non-finite local energy: the wave function diverged; lower lr, or use sr=True with a larger sr_shift."
            )
        e_mean = e.mean()
        e_tc = e.reshape(T, C)
        chain_means = e_tc.mean(0)
        err = chain_means.std() / math.sqrt(C)
        var = e.var(unbiased=False)
        stats = {
            "energy": e_mean,
            "energy_err": err,
            "variance": var,
            "acceptance": acc.mean(),
        }
        if T >= 4:
            stats["energy_blocking_err"] = torch.tensor(blocking(e_tc.mean(1)).error)
        if hp.sr:
            opt = self.optimizers()
            opt.zero_grad()
            O = self.per_sample_log_psi_grads(x)
            delta = sr_direction(O, e, hp.sr_shift)
            i = 0
            for p in (p for p in self.wf.parameters() if p.requires_grad):
                k = p.numel()
                p.grad = delta[i : i + k].reshape(p.shape).to(p.dtype)
                i += k
            opt.step()
            sch = self.lr_schedulers()
            if sch is not None:
                sch.step()
            loss = None
        else:
            # surrogate whose gradient is 2(<E_L dlnPsi> - <E_L><dlnPsi>)
            loss = vmc_loss(e, self.wf.log_psi(x))
            stats["loss"] = loss.detach()
        self.log_dict({k: v.to(torch.float32) for k, v in stats.items() if k not in ("energy",)}, on_step=True)
        self.log("energy", e_mean.to(torch.float32), on_step=True, prog_bar=True)
        row = {"step": step, **{k: float(v) for k, v in stats.items()}}
        self.history.append(row)
        return loss

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(
        self,
        n_samples: Optional[int] = None,
        n_chains: Optional[int] = None,
        thin: Optional[int] = None,
        burn_in: Optional[int] = None,
        progress: bool = True,
    ) -> dict:
        """Energy of the current wave function from long fresh chains, with blocking errors.

        Runs ``n_chains`` chains (started from the module's chains, resampled with
        replacement if the count differs) for ``burn_in`` sweeps, then ``n_samples`` samples
        ``thin`` sweeps apart. The local energies form [T, C]; the energy error is the
        blocking error of the chain-averaged series (``energy_err``), cross-checked by the
        spread of the chain means (``energy_err_chains``). Also accumulates the radial
        one-body density.
        """
        hp = self.hparams
        T = n_samples or hp.eval_samples
        C = n_chains or hp.eval_chains
        thin = thin or hp.eval_thin
        burn_in = hp.eval_burn_in if burn_in is None else burn_in
        idx = torch.arange(C, device=self.chains.device) % self.chains.shape[0]
        x = self.chains[idx].clone()
        t0 = time.perf_counter()
        for _ in tqdm(range(burn_in), desc="eval burn-in", disable=not progress, leave=False):
            x, _ = self.sampler.sweep(self.wf, x)
        rmax = hp.density_rmax or 4.0 / math.sqrt(hp.omega)
        edges = torch.linspace(0.0, rmax, hp.density_bins + 1, dtype=torch.float64)
        counts = torch.zeros(hp.density_bins, dtype=torch.float64)
        e_tc = torch.empty(T, C, dtype=torch.float64)
        acc = torch.zeros(C, dtype=x.dtype, device=x.device)
        for t in tqdm(range(T), desc="eval sampling", disable=not progress, leave=False):
            for _ in range(thin):
                x, a = self.sampler.sweep(self.wf, x)
                acc += a
            e_tc[t] = self.local_energy(x).double().cpu()
            r = x.reshape(C, hp.n_particles, hp.dim).norm(dim=-1).flatten().double().cpu()
            counts += torch.histc(r, bins=hp.density_bins, min=0.0, max=rmax)
        wall = time.perf_counter() - t0
        res, chain_err = blocking_chains(e_tc.numpy())
        exact = self.hamiltonian.exact_energy
        out = {
            "energy": res.mean,
            "energy_err": res.error,
            "energy_err_chains": chain_err,
            "variance": res.variance,
            "acceptance": float(acc.mean() / (T * thin)),
            "blocking_level": res.level,
            "n_samples": T * C,
            "n_chains": C,
            "samples_per_chain": T,
            "thin": thin,
            "exact": exact,
            "rel_error": None if exact is None else (res.mean - exact) / exact,
            "eval_wall_s": wall,
        }
        if hp.jastrow:
            out["jastrow_beta"] = float(self.wf.jastrow.beta)
        self._density = (edges.numpy(), radial_density(counts, edges, T * C, hp.dim))
        return out

    def _out_dir(self) -> str:
        if self.hparams.out_dir:
            return self.hparams.out_dir
        trainer = self._trainer
        if trainer is not None and trainer.log_dir:
            return trainer.log_dir
        return os.path.join("runs", "nqs")

    def on_train_end(self) -> None:
        train_wall = None if self._t0 is None else time.perf_counter() - self._t0
        if not self.hparams.eval_samples:
            return
        result = self.evaluate()
        result["train_wall_s"] = train_wall
        result["train_steps"] = int(self.global_step)
        result["torch"] = torch.__version__
        result["hparams"] = {k: v for k, v in self.hparams.items()}
        self.final = result
        out = self._out_dir()
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "nqs_result.json"), "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        if self.logger is not None:
            metrics = {f"final_{k}": v for k, v in result.items() if isinstance(v, (int, float)) and v is not None}
            self.logger.log_metrics(metrics, step=int(self.global_step))
            self.logger.save()
        if self.hparams.make_plots:
            self.save_plots(out)
        msg = f"final energy {result['energy']:.6f} +- {result['energy_err']:.6f}, var(E_L) {result['variance']:.3e}"
        if result["exact"] is not None:
            msg += f" (exact {result['exact']}, rel. error {100 * result['rel_error']:+.3f}%)"
        print(msg)

    def save_plots(self, out: str) -> list[str]:
        """Write ``energy.png`` (energy +- error and var E_L per step) and ``density.png``."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        paths = []
        hp = self.hparams
        exact = self.hamiltonian.exact_energy
        title = (
            f"N={hp.n_particles}, d={hp.dim}, omega={hp.omega}, "
            f"{'Coulomb' if hp.interaction else 'no interaction'}, "
            f"{'Gaussian' if hp.gaussian_only else f'RBM H={hp.n_hidden}'}"
            f"{' x Pade-Jastrow' if hp.jastrow else ''}, {hp.sampler}"
        )
        if self.history:
            steps = np.array([h["step"] for h in self.history])
            en = np.array([h["energy"] for h in self.history])
            er = np.array([h["energy_err"] for h in self.history])
            va = np.array([h["variance"] for h in self.history])
            fig, (a0, a1) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
            a0.errorbar(steps, en, yerr=er, fmt=".", ms=2, lw=0.5, label="<E_L> per step")
            if exact is not None:
                a0.axhline(exact, color="k", ls="--", lw=1, label=f"exact {exact}")
            if self.final is not None:
                a0.axhline(self.final["energy"], color="r", lw=1, label=f"final {self.final['energy']:.5f}")
            lo = np.percentile(en, 1)
            a0.set_ylim(min(lo, exact if exact is not None else lo) - 0.02, np.percentile(en, 99) + 0.05)
            a0.set_ylabel("energy (hbar omega units, a.u.)")
            a0.legend(fontsize=8)
            a0.set_title(title, fontsize=9)
            a1.semilogy(steps, np.maximum(va, 1e-16), ".", ms=2)
            a1.set_ylabel("var(E_L)")
            a1.set_xlabel("iteration")
            fig.tight_layout()
            p = os.path.join(out, "energy.png")
            fig.savefig(p, dpi=120)
            plt.close(fig)
            paths.append(p)
        if getattr(self, "_density", None) is not None:
            edges, rho = self._density
            rc = 0.5 * (edges[1:] + edges[:-1])
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.step(rc, rho, where="mid", label="VMC (RBM NQS)")
            rho0 = hp.n_particles * (hp.omega / math.pi) ** (hp.dim / 2) * np.exp(-hp.omega * rc**2)
            ax.plot(rc, rho0, "k--", lw=1, label="non-interacting ground state")
            if hp.interaction and hp.n_particles == 2 and hp.dim == 2 and hp.omega == 1.0:
                ax.plot(rc, taut_one_body_density(rc), "r-", lw=1, label="exact (Taut 1993)")
            ax.set_xlabel("r")
            ax.set_ylabel("one-body density rho(r)")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=8)
            fig.tight_layout()
            p = os.path.join(out, "density.png")
            fig.savefig(p, dpi=120)
            plt.close(fig)
            paths.append(p)
        return paths
