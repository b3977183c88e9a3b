"""VMCModule: training with Lightning, configs through LightningCLI, outputs and errors."""

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.cli import LightningCLI

from qidbm.nqs import (
    FinalEvaluation,
    GibbsSampler,
    HarmonicTrap,
    MetropolisHastingsSampler,
    MetropolisSampler,
    RBMWaveFunction,
    VMCModule,
    evaluate_energy,
)

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("nqs_*.yaml"))
assert CONFIGS, "no configs/nqs_*.yaml found"



def _trainer(steps, tmp_path, *callbacks):
    return pl.Trainer(
        max_steps=steps,
        accelerator="cpu",
        logger=pl.loggers.CSVLogger(tmp_path, name="nqs"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
    )


def _module(sampler=None, wf=None, **kw):
    """A VMCModule for 2 particles in a 2D trap with the former defaults (RBM H=4, Metropolis step 1)."""
    wf = RBMWaveFunction(2, 2, 4) if wf is None else wf
    return VMCModule(wf, HarmonicTrap(2, 2), MetropolisSampler() if sampler is None else sampler, **kw)


def test_noninteracting_fit_reaches_exact_energy_and_zero_variance(tmp_path):
    pl.seed_everything(0)
    m = VMCModule(
        RBMWaveFunction(2, 2, 4, omega=1.0, sigma2=1.0, train_variance=True, init_std=0.3),
        HarmonicTrap(2, 2, omega=1.0), GibbsSampler(),
        n_chains=128, samples_per_chain=8, burn_in=50, optimizer="sgd", lr=0.2, sr=True,
    )
    ev = FinalEvaluation(n_chains=128, n_samples=1024, burn_in=50, out_dir=str(tmp_path / "out"))
    _trainer(150, tmp_path, ev).fit(m)
    r = ev.result
    assert r["exact"] == 2.0
    assert abs(r["energy"] - 2.0) < 3 * r["energy_err"] + 1e-6
    assert r["variance"] < 1e-4
    assert m.history[0]["variance"] > 100 * r["variance"]  # it started far from the answer
    saved = json.loads((tmp_path / "out" / "nqs_result.json").read_text())
    assert saved["energy"] == pytest.approx(r["energy"])
    assert (tmp_path / "out" / "energy.png").stat().st_size > 1000
    assert (tmp_path / "out" / "density.png").stat().st_size > 1000
    metrics = (tmp_path / "nqs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("energy", "energy_err", "energy_blocking_err", "variance", "acceptance", "final_energy"):
        assert key in metrics


def test_one_body_density_integrates_to_n_particles(tmp_path):
    pl.seed_everything(1)
    m = _module(wf=RBMWaveFunction(2, 2, 4, init_std=0.0), n_chains=64)
    res, (edges, rho) = evaluate_energy(
        m.wavefunction, m.hamiltonian, m.sampler, m.chains, n_samples=256, n_chains=64, burn_in=50, progress=False
    )
    shell = math.pi * (edges[1:] ** 2 - edges[:-1] ** 2)
    assert (rho * shell).sum() == pytest.approx(2.0, abs=1e-3)  # r_max = 4 holds all but e^-16
    # exact Gaussian: E_L is constant, so the error bar is zero
    assert res["energy"] == pytest.approx(2.0, abs=1e-12) and res["energy_err"] < 1e-12


@pytest.mark.parametrize(
    "wf_kw, sampler, kw",
    [
        (dict(jastrow=True), lambda: MetropolisHastingsSampler(time_step=0.2), dict(optimizer="adam", lr=0.01)),
        (dict(jastrow=True), MetropolisSampler, dict(sr=True, optimizer="sgd", lr=0.05, laplacian="autograd")),
        (dict(form="amplitude", train_variance=True), MetropolisSampler, dict(lr_final_factor=0.1)),
    ],
    ids=["importance-adam-jastrow", "sr-autograd", "amplitude-decay"],
)
def test_interacting_training_paths_lower_the_energy(wf_kw, sampler, kw, tmp_path):
    pl.seed_everything(2)
    m = VMCModule(
        RBMWaveFunction(2, 2, 3, init_std=0.1, **wf_kw), HarmonicTrap(2, 2, interaction=True), sampler(),
        n_chains=64, samples_per_chain=8, burn_in=50, **kw,
    )
    _trainer(30, tmp_path).fit(m)
    first = sum(h["energy"] for h in m.history[:5]) / 5
    last = sum(h["energy"] for h in m.history[-5:]) / 5
    assert math.isfinite(last) and last < first
    assert all(0.0 < h["acceptance"] <= 1.0 for h in m.history)


def test_chains_are_checkpointed():
    m = _module(n_chains=8)
    sd = m.state_dict()
    assert sd["chains"].shape == (8, 4) and sd["chains"].dtype == torch.float64 and "thermalized" in sd
    m2 = _module(n_chains=8)
    m2.load_state_dict(sd)
    torch.testing.assert_close(m2.chains, m.chains)


def test_bad_configurations_fail_early():
    with pytest.raises(ValueError, match="Gibbs"):
        _module(sampler=GibbsSampler(), wf=RBMWaveFunction(2, 2, 4, jastrow=True))
    with pytest.raises(ValueError, match="optimizer"):
        _module(optimizer="lbfgs")
    with pytest.raises(ValueError, match="n_chains >= 2"):
        _module(n_chains=1)
    with pytest.raises(ValueError, match="lr_final_factor"):
        _module(lr_final_factor=0.0)


def test_objects_must_fit_together():
    with pytest.raises(ValueError, match="n_particles=3, dim=2 but the Hamiltonian for n_particles=2"):
        VMCModule(RBMWaveFunction(3, 2, 4), HarmonicTrap(2, 2), MetropolisSampler())
    with pytest.raises(TypeError, match="wavefunction must be an nn.Module"):
        VMCModule(HarmonicTrap(2, 2), HarmonicTrap(2, 2), MetropolisSampler())
    with pytest.raises(TypeError, match="sampler must be"):
        VMCModule(RBMWaveFunction(2, 2, 4), HarmonicTrap(2, 2), "metropolis")
    # the chains take the wave function's dtype and the trap's width
    m = VMCModule(RBMWaveFunction(2, 2, 4, dtype=torch.float32), HarmonicTrap(2, 2, omega=4.0), MetropolisSampler(),
                  n_chains=4000)
    assert m.chains.dtype == torch.float32 and m.chains.std().item() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_config_runs_through_lightning_cli(config, tmp_path, monkeypatch):
    """What `qidbm fit --config configs/nqs_*.yaml` does, shortened to 2 steps."""
    monkeypatch.setattr("sys.argv", ["qidbm"])  # LightningCLI gets its arguments from args=
    cli = LightningCLI(
        model_class=None,
        datamodule_class=None,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=[
            "fit",
            "--config", str(config),
            "--trainer.max_steps=2",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--model.n_chains=8",
            "--model.burn_in=2",
            "--trainer.callbacks.n_chains=4",
            "--trainer.callbacks.n_samples=8",
            "--trainer.callbacks.burn_in=2",
            f"--trainer.callbacks.out_dir={tmp_path / 'out'}",
        ],
    )
    assert isinstance(cli.model, VMCModule)
    assert cli.trainer.global_step == 2
    assert (tmp_path / "out" / "nqs_result.json").exists()
