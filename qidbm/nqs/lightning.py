"""Variational Monte Carlo of a neural-network quantum state as a LightningModule.

``qidbm fit --config configs/nqs_*.yaml`` (LightningCLI with ``model_class=None``) builds
:class:`VMCModule` from three objects, each configured by ``class_path``/``init_args``: the
wave function (an ``nn.Module``, e.g. :class:`~qidbm.nqs.RBMWaveFunction`), the Hamiltonian
(e.g. :class:`~qidbm.nqs.HarmonicTrap`) and the sampler (e.g.
:class:`~qidbm.nqs.MetropolisSampler`). The module provides its own ``train_dataloader`` (a
range of step indices: there is no data, every training step draws fresh samples from the
module's persistent Markov chains).

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
``acceptance``, and the loss; the same numbers per step are kept in ``history``. The reported
energy (a long evaluation run with the final parameters, blocking error bar, JSON and plots)
is the job of the callback :class:`~qidbm.nqs.FinalEvaluation`
(:mod:`qidbm.nqs.callbacks`, :mod:`qidbm.nqs.evaluation`, :mod:`qidbm.nqs.plots`).
"""

from __future__ import annotations

import math
from typing import Optional

import lightning.pytorch as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from .blocking import blocking
from .hamiltonians import HarmonicTrap, local_energy_samples
from .samplers import Sampler, sample_chains

__all__ = ["VMCModule", "sr_direction", "vmc_loss"]

# checkpoint layout: 2 = wave function, Hamiltonian and sampler given as objects (state_dict keys
# "wavefunction.*"); checkpoints without the key were written by the earlier VMCModule of loose
# arguments (keys "wf.*"), which this one cannot resume
CHECKPOINT_FORMAT = 2
_OBJECTS = ("wavefunction", "hamiltonian", "sampler")


def _objects_from_config() -> bool:
    """True while LightningCLI instantiates the module from a config.

    ``save_hyperparameters`` then records the configuration (``class_path``/``init_args`` of the
    wave function, Hamiltonian and sampler), from which ``VMCModule.load_from_checkpoint(PATH)``
    rebuilds them. Objects built in Python are not recorded (like BoltzmannModule's ``model``;
    nor are those of a module rebuilt by ``load_from_checkpoint``): pass them again to
    ``load_from_checkpoint(PATH, wavefunction=..., hamiltonian=..., sampler=...)``.
    """
    try:
        from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
    except ImportError:  # pragma: no cover - other Lightning versions: record no objects
        return False
    return _given_hyperparameters.get() is not None


def _float_dtype(module: nn.Module) -> torch.dtype:
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


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


class VMCModule(pl.LightningModule):
    """Variational Monte Carlo of a wave function for a Hamiltonian, sampled by a sampler.

    Args:
        wavefunction: the trial state, an ``nn.Module`` with ``log_psi(x)`` ([B, N*d] -> [B]),
            ``log_prob``, ``n_particles`` and ``dim`` (and ``derivatives(x)`` for
            ``laplacian="analytic"``, ``grad_log_psi`` for importance sampling), e.g.
            :class:`~qidbm.nqs.RBMWaveFunction`. Its parameters (``requires_grad``) are trained;
            its dtype is the chains' dtype.
        hamiltonian: e.g. :class:`~qidbm.nqs.HarmonicTrap` (``n_particles`` and ``dim`` must match
            the wave function's; ``omega`` sets the width of the chains' random start).
        sampler: a :class:`~qidbm.nqs.Sampler` (``MetropolisSampler``,
            ``MetropolisHastingsSampler``, ``GibbsSampler``); checked against the wave function here.
        n_chains, samples_per_chain, thin, burn_in: the training chains: ``n_chains`` persistent
            chains, ``samples_per_chain`` samples ``thin`` sweeps apart per step, ``burn_in`` sweeps
            before the first step.
        optimizer: ``"adam"`` or ``"sgd"`` (used unless the CLI's ``optimizer:`` section overrides
            ``configure_optimizers``); ``lr``; ``lr_final_factor``: exponential decay per step to
            ``lr * lr_final_factor`` at the Trainer's ``max_steps`` (1 = constant).
        sr, sr_shift: stochastic reconfiguration and its diagonal shift.
        laplacian: ``"analytic"`` or ``"autograd"`` local energies.
        steps_per_epoch: length of the dummy dataloader (the Trainer's ``max_steps`` sets the run length).
        num_threads: if set, ``torch.set_num_threads`` at the start of training (the tensors are
            tiny, and on a shared CPU one intra-op thread is often 10x faster than oversubscribed ones).
    """

    def __init__(
        self,
        wavefunction: nn.Module,
        hamiltonian: HarmonicTrap,
        sampler: Sampler,
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
        num_threads: Optional[int] = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=[] if _objects_from_config() else list(_OBJECTS))
        if not isinstance(wavefunction, nn.Module) or not hasattr(wavefunction, "log_psi"):
            raise TypeError(
                f"wavefunction must be an nn.Module with log_psi(x) (e.g. qidbm.nqs.RBMWaveFunction), "
                f"got {type(wavefunction).__name__}."
            )
        for obj, name in ((wavefunction, "wavefunction"), (hamiltonian, "hamiltonian")):
            if not (hasattr(obj, "n_particles") and hasattr(obj, "dim")):
                raise TypeError(f"{name} must have n_particles and dim, got {type(obj).__name__}.")
        if (wavefunction.n_particles, wavefunction.dim) != (hamiltonian.n_particles, hamiltonian.dim):
            raise ValueError(
                f"the wave function is for n_particles={wavefunction.n_particles}, dim={wavefunction.dim} but the "
                f"Hamiltonian for n_particles={hamiltonian.n_particles}, dim={hamiltonian.dim}; set both alike."
            )
        if not hasattr(sampler, "sweep"):
            raise TypeError(f"sampler must be a qidbm.nqs.Sampler (sweep(wf, x)), got {type(sampler).__name__}.")
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
        self.wavefunction = wavefunction
        self.hamiltonian = hamiltonian
        self.sampler = sampler
        self.sampler.check(self.wavefunction)  # fail at construction, not at step 1
        n_visible = wavefunction.n_particles * wavefunction.dim
        omega = float(getattr(hamiltonian, "omega", 1.0))
        dt = _float_dtype(wavefunction)
        self.register_buffer("chains", torch.randn(n_chains, n_visible, dtype=dt) / math.sqrt(omega))
        self.register_buffer("thermalized", torch.tensor(False))
        self.automatic_optimization = not sr
        self.history: list[dict] = []

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
        return local_energy_samples(self.hamiltonian, self.wavefunction, x, self.hparams.laplacian)

    def draw(self, n_samples: int, thin: int, burn_in: int = 0, progress: bool = False):
        """Advance the module's chains; returns (samples [T, C, n], acceptance [C])."""
        samples, last, acc = sample_chains(
            self.sampler, self.wavefunction, self.chains, n_samples, thin=thin, burn_in=burn_in, progress=progress
        )
        self.chains.copy_(last)
        return samples, acc

    def per_sample_log_psi_grads(self, x: Tensor) -> Tensor:
        """O_k(x_s) = dlnPsi(x_s)/dtheta_k for every trainable parameter, [M, P] (torch.func)."""
        names = [n for n, p in self.wavefunction.named_parameters() if p.requires_grad]
        params = {n: p.detach() for n, p in self.wavefunction.named_parameters() if p.requires_grad}

        def f(p, xs):
            return torch.func.functional_call(self.wavefunction, p, (xs.unsqueeze(0),)).squeeze(0)

        jac = torch.func.vmap(torch.func.jacrev(f), in_dims=(None, 0))(params, x)
        return torch.cat([jac[n].reshape(x.shape[0], -1) for n in names], dim=1)

    # ---------------------------------------------------------------- training
    def on_train_start(self) -> None:
        if self.hparams.num_threads:
            torch.set_num_threads(self.hparams.num_threads)

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
            for p in (p for p in self.wavefunction.parameters() if p.requires_grad):
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
            loss = vmc_loss(e, self.wavefunction.log_psi(x))
            stats["loss"] = loss.detach()
        self.log_dict({k: v.to(torch.float32) for k, v in stats.items() if k not in ("energy",)}, on_step=True)
        self.log("energy", e_mean.to(torch.float32), on_step=True, prog_bar=True)
        row = {"step": step, **{k: float(v) for k, v in stats.items()}}
        self.history.append(row)
        return loss

    # ---------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["nqs_checkpoint_format"] = CHECKPOINT_FORMAT

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        fmt = checkpoint.get("nqs_checkpoint_format")
        if fmt is None and any(k.startswith("wf.") for k in checkpoint.get("state_dict", {})):
            raise ValueError(
                "this checkpoint was written by the earlier VMCModule that took loose arguments (n_particles, "
                "n_hidden, sampler: metropolis, ...; its wave function is stored as 'wf.*'); this VMCModule takes "
                "wavefunction, hamiltonian and sampler objects (see configs/nqs_*.yaml) and cannot resume it. "
                "Start a new run with the current config (without --ckpt_path)"
            )
        if fmt is not None and fmt > CHECKPOINT_FORMAT:
            raise ValueError(
                f"this checkpoint has NQS checkpoint format {fmt}, newer than this qidbm's {CHECKPOINT_FORMAT}; "
                "update qidbm to resume it"
            )
