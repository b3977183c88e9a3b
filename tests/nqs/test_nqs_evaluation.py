"""The final evaluation of a VMC run: evaluate_energy (estimate), FinalEvaluation (callback), plots."""

import json

import lightning.pytorch as pl
import pytest
import torch

from qidbm.nqs import (
    FinalEvaluation,
    HarmonicTrap,
    MetropolisSampler,
    RBMWaveFunction,
    VMCModule,
    blocking_chains,
    evaluate_energy,
    local_energy,
)
from qidbm.nqs.plots import run_title

D = torch.float64



def _interacting_wf(seed=0, **kw):
    torch.manual_seed(seed)
    return RBMWaveFunction(2, 2, 3, init_std=0.2, **kw)


def test_evaluate_energy_is_the_blocking_estimate_of_the_chains_local_energies():
    wf, ham = _interacting_wf(), HarmonicTrap(2, 2, interaction=True)
    start = torch.randn(5, 4, dtype=D)
    before = start.clone()
    summary, density = evaluate_energy(
        wf, ham, MetropolisSampler(1.0, torch.Generator().manual_seed(3)), start,
        n_samples=32, n_chains=8, thin=2, burn_in=10,
    )
    assert torch.equal(start, before)  # the caller's chains are not advanced
    # replay: 8 chains taking the 5 starts in turn, 10 burn-in sweeps, 32 samples 2 sweeps apart
    sampler = MetropolisSampler(1.0, torch.Generator().manual_seed(3))
    x = start[torch.arange(8) % 5].clone()
    for _ in range(10):
        x, _ = sampler.sweep(wf, x)
    e, acc = [], torch.zeros(8, dtype=D)
    for _ in range(32):
        for _ in range(2):
            x, a = sampler.sweep(wf, x)
            acc += a
        e.append(local_energy(ham, wf, x).detach())
    res, chain_err = blocking_chains(torch.stack(e))
    assert summary["energy"] == pytest.approx(res.mean, rel=1e-12)
    assert summary["energy_err"] == pytest.approx(res.error, rel=1e-9)
    assert summary["energy_err_chains"] == pytest.approx(chain_err, rel=1e-9)
    assert summary["variance"] == pytest.approx(res.variance, rel=1e-9)
    assert summary["blocking_level"] == res.level
    assert summary["acceptance"] == pytest.approx(float(acc.mean()) / 64, rel=1e-12)
    assert (summary["n_samples"], summary["n_chains"], summary["samples_per_chain"], summary["thin"]) == (256, 8, 32, 2)
    assert summary["exact"] == 3.0 and summary["rel_error"] == pytest.approx((res.mean - 3.0) / 3.0)
    edges, rho = density
    assert edges.shape == (61,) and rho.shape == (60,) and edges[-1] == pytest.approx(4.0)


def test_evaluate_energy_analytic_and_autograd_laplacians_agree():
    wf, ham = _interacting_wf(1, jastrow=True), HarmonicTrap(2, 2, interaction=True)
    start = torch.randn(4, 4, dtype=D)
    out = [
        evaluate_energy(wf, ham, MetropolisSampler(1.0, torch.Generator().manual_seed(0)), start, 8, laplacian=lap)[0]
        for lap in ("analytic", "autograd")
    ]
    assert out[0]["energy"] == pytest.approx(out[1]["energy"], rel=1e-10)
    assert out[0]["variance"] == pytest.approx(out[1]["variance"], rel=1e-8)


def test_evaluate_energy_refuses_too_few_chains_or_samples():
    wf, ham, s = _interacting_wf(), HarmonicTrap(2, 2), MetropolisSampler()
    with pytest.raises(ValueError, match="n_chains >= 2"):
        evaluate_energy(wf, ham, s, torch.zeros(4, 4, dtype=D), n_samples=8, n_chains=1)
    with pytest.raises(ValueError, match="n_samples >= 4"):
        evaluate_energy(wf, ham, s, torch.zeros(4, 4, dtype=D), n_samples=3)
    with pytest.raises(ValueError, match="n_chains >= 2"):
        FinalEvaluation(n_chains=1)
    with pytest.raises(ValueError, match="n_samples >= 4"):
        FinalEvaluation(n_samples=2)


def _fit(tmp_path, ev, steps=2, wf=None):
    pl.seed_everything(0)
    wf = RBMWaveFunction(2, 2, 3, init_std=0.1, jastrow=True) if wf is None else wf
    m = VMCModule(wf, HarmonicTrap(2, 2, interaction=True), MetropolisSampler(), n_chains=8, samples_per_chain=4,
                  burn_in=5)
    pl.Trainer(max_steps=steps, accelerator="cpu", logger=pl.loggers.CSVLogger(tmp_path, name="nqs"),
               log_every_n_steps=1, enable_checkpointing=False, enable_progress_bar=False,
               enable_model_summary=False, callbacks=[ev]).fit(m)
    return m


def test_final_evaluation_writes_json_and_logs_final_metrics(tmp_path):
    ev = FinalEvaluation(n_chains=4, n_samples=8, burn_in=2, out_dir=str(tmp_path / "out"), make_plots=False,
                         progress=False)
    m = _fit(tmp_path, ev)
    saved = json.loads((tmp_path / "out" / "nqs_result.json").read_text())
    assert saved["energy"] == pytest.approx(ev.result["energy"]) and saved["train_steps"] == 2
    assert saved["jastrow_beta"] == pytest.approx(float(m.wavefunction.jastrow.beta.detach()))
    assert saved["evaluation"]["n_samples"] == 8 and saved["hparams"]["n_chains"] == 8
    assert ev.density is not None and not (tmp_path / "out" / "energy.png").exists()
    header = (tmp_path / "nqs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "final_energy" in header and "final_jastrow_beta" in header


def test_final_evaluation_with_no_samples_writes_nothing(tmp_path):
    ev = FinalEvaluation(n_samples=0, out_dir=str(tmp_path / "out"))
    _fit(tmp_path, ev)
    assert ev.result is None and not (tmp_path / "out").exists()


def test_final_evaluation_needs_a_vmc_module(tmp_path):
    class Other(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, batch_idx):
            return self.w.sum()

        def train_dataloader(self):
            return torch.utils.data.DataLoader(torch.zeros(2, 1))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    trainer = pl.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[FinalEvaluation()])
    with pytest.raises(TypeError, match="evaluates a qidbm.nqs.VMCModule"):
        trainer.fit(Other())


def test_plot_title_names_system_ansatz_and_sampler():
    wf = RBMWaveFunction(2, 2, 8, jastrow=True)
    assert run_title(wf, HarmonicTrap(2, 2, interaction=True), MetropolisSampler()) == (
        "N=2, d=2, omega=1.0, Coulomb, RBM H=8 x Pade-Jastrow, metropolis"
    )
    g = RBMWaveFunction(2, 2, 8, gaussian_only=True)
    assert run_title(g, HarmonicTrap(2, 2), MetropolisSampler()).endswith("no interaction, Gaussian, metropolis")
