"""The DO-EM/CD Lightning module: gradients, learning, checkpoints, resume, DDP."""

import functools
import math
import os

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from qidbm.estimators import (
    ClampedGibbs, FromData, FromNoise, MeanField, Mixture, Persistent, TaniguchiChains,
    TemperedPersistent,
)
from qidbm.models import DBM, GRBM, QRBM, RBM, QiDBM
from qidbm.lightning import BoltzmannModule
from qidbm.lightning.centering import Centering
from qidbm.lightning.data_init import DataInit
from qidbm.samplers import ExactStep
from qidbm.samplers.chain import ChainStats
from tests.dense import bits


def trainer(tmp_path, **kw):
    opts = dict(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=str(tmp_path), deterministic=True,
    )
    opts.update(kw)
    return L.Trainer(**opts)


def bars_and_stripes_2x2():
    pats = torch.tensor(
        [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1], [1, 0, 1, 0], [0, 1, 0, 1]], dtype=torch.float64
    )
    p = torch.zeros(16, dtype=torch.float64)
    idx = (pats * torch.tensor([8, 4, 2, 1], dtype=torch.float64)).sum(1).long()
    p[idx] = 1 / 6
    return pats, p


def exact_kl(model, target):
    with torch.no_grad():
        logp = torch.log_softmax(-model.free_energy(bits(4).to(model.weight.dtype)).double(), 0)
    m = target > 0
    return (target[m] * (torch.log(target[m]) - logp[m])).sum().item()


@pytest.mark.parametrize("make", [lambda: RBM(4, 3), lambda: QRBM(4, 3, coupled_field=True)])
def test_loss_gradient_is_cd_statistics(make):
    torch.manual_seed(0)
    model = make().double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    vp, vn = torch.rand(7, 4).round().double(), torch.rand(5, 4).round().double()
    loss = model.free_energy(vp).mean() - model.free_energy(vn).mean()
    loss.backward()
    with torch.no_grad():
        sp, sn = model.hidden_statistics(vp), model.hidden_statistics(vn)
        gW = -(vp.T @ sp["n"]) / 7 + (vn.T @ sn["n"]) / 5
        assert torch.allclose(model.weight.grad, gW, atol=1e-12)
        assert torch.allclose(model.hidden_bias.grad, -sp["n"].mean(0) + sn["n"].mean(0), atol=1e-12)
        assert torch.allclose(model.visible_bias.grad, -vp.mean(0) + vn.mean(0), atol=1e-12)
        if model.is_quantum:
            # d F / d gamma_j = -sign(gamma_j + v.U_j) <X_j>;  d F / d U_ij = v_i * that
            gp = model.field(1, [vp, None])
            gn = model.field(1, [vn, None])
            xp, xn = torch.sign(gp) * sp["x"], torch.sign(gn) * sn["x"]
            assert torch.allclose(model.transverse_field.grad, -xp.mean(0) + xn.mean(0), atol=1e-12)
            assert torch.allclose(model.transverse_weight.grad, -(vp.T @ xp) / 7 + (vn.T @ xn) / 5, atol=1e-12)


def test_qidbm_loss_gradient_and_finite_differences():
    torch.manual_seed(1)
    model = QiDBM([4, 3, 2], [1], coupled_field=True).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.7)
    pos = [torch.rand(6, 4).round().double(), None, torch.rand(6, 2).round().double()]
    neg = [torch.rand(5, 4).round().double(), None, torch.rand(5, 2).round().double()]

    def loss_fn():
        return model.marginal_free_energy(pos).mean() - model.marginal_free_energy(neg).mean()

    loss_fn().backward()
    with torch.no_grad():
        st_p, st_n = model.quantum_statistics(1, pos), model.quantum_statistics(1, neg)
        gW1 = -(st_p["n"].T @ pos[2]) / 6 + (st_n["n"].T @ neg[2]) / 5
        assert torch.allclose(model.weights[1].grad, gW1, atol=1e-12)
        assert torch.allclose(model.biases[2].grad, -pos[2].mean(0) + neg[2].mean(0), atol=1e-12)
    # every parameter against central finite differences
    params = dict(model.named_parameters())
    grads = {k: p.grad.clone() for k, p in params.items()}
    eps = 1e-6
    for name, p in params.items():
        for i in range(min(p.numel(), 4)):
            with torch.no_grad():
                flat = p.view(-1)
                old = flat[i].item()
                flat[i] = old + eps
                up = loss_fn().item()
                flat[i] = old - eps
                down = loss_fn().item()
                flat[i] = old
            assert (up - down) / (2 * eps) == pytest.approx(grads[name].view(-1)[i].item(), abs=1e-7), name


def sgd(lr, momentum=0.0):
    return functools.partial(torch.optim.SGD, lr=lr, momentum=momentum)


@pytest.mark.parametrize(
    "negative,lr,momentum,bound",
    # CD-5 from the data learns fast; PCD needs a small step size to keep its chains mixing.
    [(lambda: FromData(5), 0.3, 0.8, 0.3), (lambda: Persistent(sweeps=5), 0.1, 0.5, 0.85)], ids=["data", "persistent"],
)
def test_tiny_qrbm_learns_bars_and_stripes(tmp_path, negative, lr, momentum, bound):
    torch.manual_seed(0)
    pats, target = bars_and_stripes_2x2()
    data = pats.repeat(100, 1).float()
    model = QRBM(4, 6, transverse_field_init=0.5, weight_std=0.5)
    module = BoltzmannModule(model, negative=negative(), optimizer=sgd(lr, momentum), chain_seed=0)
    kl0 = exact_kl(model, target)
    dl = DataLoader(TensorDataset(data), batch_size=60, shuffle=True, drop_last=True)
    trainer(tmp_path, max_epochs=60).fit(module, dl)
    kl1 = exact_kl(model, target)
    assert math.isfinite(kl1) and kl1 < bound * kl0, (kl0, kl1)


def test_dbm_positive_phase_and_local_mode_run(tmp_path):
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    dl = DataLoader(TensorDataset(pats.repeat(20, 1).float()), batch_size=20, drop_last=True)
    for model, neg, pos in ((DBM([4, 3, 2]), TaniguchiChains(), ClampedGibbs()),
                            (QiDBM([4, 3, 2], [1]), FromData(), MeanField())):
        module = BoltzmannModule(model, negative=neg, positive=pos, optimizer=sgd(0.05))
        trainer(tmp_path, max_steps=5).fit(module, dl)
        assert all(torch.isfinite(p).all() for p in model.parameters())


def _fit_with_checkpoints(tmp_path, max_epochs, ckpt_path=None, name="run"):
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    # a fixed order: the data modules of qidbm.data reshuffle by epoch number, so they resume too
    dl = DataLoader(TensorDataset(pats.repeat(20, 1).float()[torch.randperm(120)]), batch_size=30, drop_last=True)
    module = BoltzmannModule(QiDBM([4, 3, 2], [1]), negative=Persistent(sweeps=2), kernel=ExactStep(),
                             optimizer=sgd(0.05, 0.9), chain_seed=3)
    ckpt = L.pytorch.callbacks.ModelCheckpoint(dirpath=tmp_path / name, save_last=True, save_top_k=0)
    t = trainer(tmp_path, max_epochs=max_epochs, enable_checkpointing=True, callbacks=[ckpt])
    t.fit(module, dl, ckpt_path=ckpt_path)
    return module, tmp_path / name / "last.ckpt"


def test_resume_restores_chains_optimizer_and_rng(tmp_path):
    straight, _ = _fit_with_checkpoints(tmp_path, 4, name="straight")
    half, last = _fit_with_checkpoints(tmp_path, 2, name="half")
    ck = torch.load(last, weights_only=True)
    saved = ck["qidbm"]["chains_per_rank"][0]
    assert saved is not None and torch.equal(saved[0], half.chains[0].cpu())
    resumed, _ = _fit_with_checkpoints(tmp_path, 4, ckpt_path=last, name="half")
    for (n, a), b in zip(straight.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), n
    for a, b in zip(straight.chains, resumed.chains):
        assert torch.equal(a, b)


def test_checkpoint_of_another_model_class_is_rejected(tmp_path):
    _, last = _fit_with_checkpoints(tmp_path, 1, name="a")
    other = BoltzmannModule(DBM([4, 3, 2]))
    with pytest.raises(ValueError, match="holds a QiDBM"):
        other.on_load_checkpoint(torch.load(last, weights_only=True))
    with pytest.raises(ValueError, match="no 'qidbm' section"):
        other.on_load_checkpoint({"state_dict": {}})
    from qidbm import load_checkpoint

    model, info = load_checkpoint(last)
    assert isinstance(model, QiDBM) and info["model_class"] == "QiDBM"


class _RecordParams(L.Callback):
    def __init__(self, out):
        self.out = out

    def on_train_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.parameters()])
        torch.save({"params": flat, "chains": [c.cpu() for c in pl_module.chains], "steps": trainer.global_step},
                   os.path.join(self.out, f"rank{trainer.global_rank}.pt"))


def test_ddp_two_cpu_processes_keep_replicas_identical(tmp_path):
    torch.manual_seed(0)
    pats, _ = bars_and_stripes_2x2()
    dl = DataLoader(TensorDataset(pats.repeat(40, 1).float()), batch_size=20, shuffle=True, drop_last=True)
    module = BoltzmannModule(QiDBM([4, 3, 2], [1]), negative=Persistent(), optimizer=sgd(0.05), chain_seed=0)
    t = trainer(tmp_path, max_steps=4, devices=2, strategy="ddp_spawn", callbacks=[_RecordParams(str(tmp_path))])
    t.fit(module, dl)
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["steps"] == r1["steps"] == 4
    assert torch.equal(r0["params"], r1["params"])
    # persistent chains are per rank: different random streams
    assert not torch.equal(r0["chains"][0], r1["chains"][0])


def test_module_rejects_bad_arguments():
    with pytest.raises(TypeError, match="BoltzmannMachine"):
        BoltzmannModule(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="sweeps must be an integer >= 1"):
        BoltzmannModule(RBM(3, 2), negative=FromData(0))
    with pytest.raises(TypeError, match="expected a NegativePhase"):
        BoltzmannModule(RBM(3, 2), negative="random")
    with pytest.raises(TypeError, match="is not a NegativePhase"):
        BoltzmannModule(RBM(3, 2), negative={"class_path": "qidbm.estimators.MeanField", "init_args": {}})
    with pytest.raises(ValueError, match="matmul_precision"):
        BoltzmannModule(RBM(3, 2), matmul_precision="float16")


def test_exported_checkpoint_samples_without_data(tmp_path):
    from qidbm import load_checkpoint
    from qidbm.checkpoint import export_checkpoint
    from qidbm.samplers.drawing import SamplingSpec, draw

    _, last = _fit_with_checkpoints(tmp_path, 1, name="x")
    slim = export_checkpoint(last, tmp_path / "slim.ckpt")
    assert slim.stat().st_size < last.stat().st_size
    m1, _ = load_checkpoint(last)
    m2, info = load_checkpoint(slim)
    for a, b in zip(m1.parameters(), m2.parameters()):
        assert torch.equal(a, b)
    x, _ = draw(m2, 5, SamplingSpec(num_steps=3), generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 4)
    assert torch.load(slim, weights_only=True)["hyper_parameters"]["sample_output"] is None


def test_export_records_a_read_out_chosen_after_training(tmp_path):
    import argparse

    from qidbm import load_checkpoint
    from qidbm.checkpoint import export_checkpoint
    from qidbm.samplers.arguments import add_sampling_arguments, spec_from_arguments

    _, last = _fit_with_checkpoints(tmp_path, 1, name="x")
    slim = export_checkpoint(last, tmp_path / "slim.ckpt", sample_output="mean_field", sample_steps=7)
    _, info = load_checkpoint(slim)
    p = argparse.ArgumentParser()
    add_sampling_arguments(p)
    assert spec_from_arguments(p.parse_args([]), info["hyper_parameters"]).output == "mean_field"
    assert spec_from_arguments(p.parse_args([]), info["hyper_parameters"]).num_steps == 7
    assert spec_from_arguments(p.parse_args(["--num-steps", "3"]), info["hyper_parameters"]).num_steps == 3
    assert spec_from_arguments(p.parse_args(["--output", "sample"]), info["hyper_parameters"]).output == "sample"
    with pytest.raises(ValueError, match="sample_output must be one of"):
        export_checkpoint(last, tmp_path / "bad.ckpt", sample_output="median")
    with pytest.raises(ValueError, match="sample_steps must be"):
        export_checkpoint(last, tmp_path / "bad.ckpt", sample_steps=0)
    assert not (tmp_path / "bad.ckpt").exists()


@pytest.mark.parametrize("kind,gamma", [("dbm", 0.0), ("qidbm", 2.0), ("qrbm", 3.0)])
def test_pcd_chains_drawn_from_free_energy_fields_have_the_right_stationary_law(kind, gamma):
    # PCD updates the even layers, then draws the odd ones from the fields of F(x-): the chains
    # must still follow the block Gibbs kernel's stationary law: exact p(v) for the DBM, the paper
    # kernel's enumerated stationary law for the QRBM at Gamma = 3, and (two-sample test) the same
    # law as plain paper-step sweeps for the QiDBM at Gamma = 2
    from scipy import stats

    from tests.dense import dense_marginal
    from tests.samplers.test_gibbs import chi2_pvalue, paper_step_stationary, random_model, visible_counts

    if kind == "dbm":
        m = random_model("qidbm", 0.0, False, seed=11)
        target = dense_marginal(m, [0])
    elif kind == "qidbm":
        m = random_model("qidbm", gamma, False, seed=11)
        target = None  # compared with the unfused paper-step chains below
    else:
        m = random_model("qrbm", gamma, False, seed=11)
        target = paper_step_stationary(m)
    data = torch.rand(8, 3, dtype=torch.float64).round()
    pvals, fused_counts = [], 0
    for r in range(2):
        module = BoltzmannModule(m, negative=Persistent(4000, update="fused"), chain_seed=100 + r)
        assert module.negative.update == "fused"
        assert BoltzmannModule(m).negative.update == "sweep"  # opt-in
        for _ in range(40):
            module.loss(data)
        counts = visible_counts(module.chains[0], 3)
        fused_counts = fused_counts + counts
        if target is not None:
            pvals.append(chi2_pvalue(counts, target))
    if target is None:  # two-sample test against the plain sweeps of the same kernel
        from qidbm.samplers import PaperStep

        gen = torch.Generator().manual_seed(7)
        plain = visible_counts(PaperStep().run(m, m.random_state(8000, gen), 40, generator=gen)[0][0], 3)
        table = torch.stack([fused_counts, plain]).numpy()
        table = table[:, table.sum(0) > 0]
        pvals.append(stats.chi2_contingency(table).pvalue)
    assert stats.combine_pvalues(pvals, method="fisher").pvalue > 0.01 if len(pvals) > 1 else pvals[0] > 0.01, pvals


@pytest.mark.parametrize("cls", ["GRBM", "QGRBM"])
def test_fixed_variance_stays_at_its_data_value_while_the_rest_trains(tmp_path, cls):
    import qidbm.models as models

    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=torch.float64) * torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    model = getattr(models, cls)(6, 3, learn_variance=False).double()
    module = BoltzmannModule(model, negative=FromNoise(2), optimizer=sgd(0.05, 0.9), chain_seed=0)
    w0 = model.weight.detach().clone()
    dm = L.LightningDataModule.from_datasets(train_dataset=TensorDataset(x), batch_size=16)
    trainer(tmp_path, max_steps=5).fit(module, datamodule=dm)
    # set once from the data (each pixel's variance, floored at the mean), then never stepped
    var = x.var(0)
    assert torch.allclose(model.log_variance, torch.log(var.clamp_min(var.mean())))
    assert model.log_variance.grad is None and not torch.equal(model.weight, w0)
    assert model.config()["learn_variance"] is False


@pytest.mark.parametrize("cls", ["GRBM", "QGRBM"])
def test_centered_gaussian_machines_center_the_hidden_layer_only(tmp_path, cls):
    import qidbm.models as models

    torch.manual_seed(0)
    x = torch.randn(64, 6) + 2.0  # a visible mean far from 0: it must not become an offset
    model = getattr(models, cls)(6, 3, learn_variance=False)
    module = BoltzmannModule(model, negative=FromNoise(2), optimizer=sgd(0.05, 0.9), chain_seed=0,
                             centering=Centering(0.5))
    dm = L.LightningDataModule.from_datasets(train_dataset=TensorDataset(x), batch_size=16)
    trainer(tmp_path, max_steps=4).fit(module, datamodule=dm)
    vis, hid = module.centering.offsets
    assert torch.equal(vis, torch.zeros(6))
    assert not torch.allclose(hid, torch.full((3,), 0.5))  # follows the hidden means
    assert torch.isfinite(model.weight).all()


@pytest.mark.parametrize("learn", [False, True])
def test_visible_variance_scale_sets_the_variances_to_a_fraction_of_the_datas(tmp_path, learn):
    torch.manual_seed(0)
    x = torch.randn(64, 6, dtype=torch.float64) * torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    model = GRBM(6, 3, learn_variance=learn).double()
    module = BoltzmannModule(model, negative=FromNoise(2), optimizer=sgd(0.05), chain_seed=0,
                             init_visible=DataInit(variance_scale=0.25))
    dm = L.LightningDataModule.from_datasets(train_dataset=TensorDataset(x), batch_size=16)
    module.init_visible(module.model, dm.train_dataloader())
    var = x.var(0)
    torch.testing.assert_close(model.log_variance.detach(), torch.log(0.25 * var.clamp_min(var.mean())))


@pytest.mark.parametrize("scale", [0.0, float("nan")])
def test_visible_variance_scale_rejects_what_it_cannot_scale(scale):
    with pytest.raises(ValueError, match="positive number"):
        DataInit(variance_scale=scale)
    with pytest.raises(ValueError, match="Gaussian visible units"):
        BoltzmannModule(RBM(4, 3), init_visible=DataInit(variance_scale=0.5))


def test_fixed_variance_needs_gaussian_visible_units():
    with pytest.raises(ValueError, match="GRBM or QGRBM"):
        QRBM(4, 3, learn_variance=False)


def negatives(module, v):
    return module.negative.sample(module.model, v, module.kernel, module.generator)


def test_noise_and_persistent_negatives_carry_the_persistent_rows_and_redraw_the_noise_rows():
    torch.manual_seed(0)
    module = BoltzmannModule(RBM(4, 3).double(), negative=Mixture(FromNoise(1), Persistent(5)))
    v = bits(4)[:8].double()
    first, _ = negatives(module, v)
    assert first[0].shape == (13, 4) and torch.equal(module.chains[0], first[0][8:])
    kept = [x.clone() for x in module.chains]
    # with a kernel that does not move, the next negatives are fresh noise rows + the stored chains
    module.kernel.run = lambda m, state, k, **kw: (state, ChainStats())
    second, _ = negatives(module, v)
    assert torch.equal(second[0][8:], kept[0]) and torch.equal(second[1][8:], kept[1])
    assert not torch.equal(second[0][:8], first[0][:8])
    _, terms = module.loss(v)
    assert torch.allclose(terms["free_energy_data"], module.model.free_energy(v).mean())


def test_persistent_weight_mixes_the_noise_and_persistent_means():
    torch.manual_seed(0)
    module = BoltzmannModule(RBM(4, 3).double(), negative=Mixture(FromNoise(1), Persistent(5), weight=0.2))
    v = bits(4)[:8].double()
    neg, _ = negatives(module, v)
    module.negative.sample = lambda *args: (neg, ChainStats())  # the same negatives again
    loss, terms = module.loss(v)
    f = module.model.free_energy
    f_neg = 0.8 * f(neg[0][:8]).mean() + 0.2 * f(neg[0][8:]).mean()  # 8 noise rows, then 5 persistent
    assert torch.allclose(terms["free_energy_model"], f_neg) and torch.allclose(loss, f(v).mean() - f_neg)
    assert not torch.allclose(f_neg, f(neg[0]).mean())  # not the per-row mean


@pytest.mark.parametrize("weight", [0.0, 1.0, -0.5])
def test_persistent_weight_rejects_what_it_cannot_weigh(weight):
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        Mixture(FromNoise(1), Persistent(5), weight=weight)


def test_noise_density_starts_the_noise_rows_and_nothing_else():
    torch.manual_seed(0)
    module = BoltzmannModule(RBM(4, 3).double(), negative=Mixture(FromNoise(1, density=[0.0, 0.0]), Persistent(5)))
    module.kernel.run = lambda m, state, k, **kw: (state, ChainStats())  # a kernel that does not move
    neg, _ = negatives(module, bits(4)[:8].double())
    assert torch.equal(neg[0][:8], torch.zeros(8, 4))  # the noise rows start empty
    assert neg[0][8:].sum() > 0  # the persistent chains start as uniform noise


def test_noise_density_rejects_what_it_cannot_start():
    with pytest.raises(ValueError, match="start density range"):
        FromNoise(2, density=[0.7, 0.3])
    with pytest.raises(TypeError):
        Persistent(5, density=[0.3, 0.7])  # only noise-started rows have a start density
    # Gaussian visible units start from Gaussian noise: refused when the module is built
    with pytest.raises(ValueError, match="leave density unset"):
        BoltzmannModule(GRBM(4, 3), negative=FromNoise(2, density=[0.3, 0.7]))


def test_noise_and_persistent_machines_sample_as_noise_trained_ones():
    from qidbm.samplers.drawing import trained_sampling

    module = BoltzmannModule(RBM(4, 3), negative=Mixture(FromNoise(20), Persistent(5)))
    spec = trained_sampling(dict(module.hparams))
    assert (spec.start, spec.num_steps, spec.output) == ("noise", 20, "sample")
    assert module.sampling() == spec


def test_tempered_persistent_chains_draw_the_exact_distribution_and_keep_their_replicas():
    from tests.dense import dense_marginal
    from tests.samplers.test_gibbs import chi2_pvalue, visible_counts

    torch.manual_seed(0)
    model = RBM(3, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, dtype=p.dtype) * 1.5)
    module = BoltzmannModule(model, negative=TemperedPersistent([1.0, 0.6, 0.3], num_chains=4000, sweeps=30),
                             chain_seed=1)
    v = bits(3)[:8].double()
    neg, neg_stats = negatives(module, v)
    assert neg[0].shape == (4000, 3) and neg[0] is module.chains[0]
    hot = module.negative._hot  # the hotter replicas, kept across steps (internal)
    assert len(hot) == 2 and hot[0][0].shape == (4000, 3)
    assert chi2_pvalue(visible_counts(neg[0], 3), dense_marginal(model, [0])) > 1e-3
    assert set(neg_stats.swap_rates()) == {0, 1}
    # noise_and_persistent: the noise rows first, then the tempered persistent rows
    module = BoltzmannModule(RBM(4, 3).double(), negative=Mixture(FromNoise(2), TemperedPersistent([1.0, 0.5], 5, 2)),
                             chain_seed=2)
    neg, _ = negatives(module, bits(4)[:8].double())
    assert neg[0].shape == (13, 4) and torch.equal(neg[0][8:], module.chains[0])
    _, terms = module.loss(bits(4)[:8].double())
    assert "swap_rate/pair0" in terms


def test_persistent_betas_reject_what_they_cannot_temper():
    with pytest.raises(ValueError, match="first beta must be 1"):
        TemperedPersistent([0.9, 0.5])
    with pytest.raises(ValueError, match="at least two betas"):
        TemperedPersistent([1.0])
    with pytest.raises(TypeError):
        TemperedPersistent([1.0, 0.5], update="fused")  # tempered chains are advanced by sweeps only
    with pytest.raises(TypeError):
        FromNoise(2, betas=[1.0, 0.5])  # fresh noise rows have no replicas to temper
