"""Checkpoints and configs of the flat options (qidbm 0.1): the shipped checkpoints sample exactly as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qidbm.checkpoint import load_checkpoint
from qidbm.estimators import FromNoise, Mixture, TaniguchiChains, TemperedPersistent, build
from qidbm.legacy import is_legacy, legacy_config_message, upgrade_hparams
from qidbm.samplers.drawing import SamplingSpec, draw, trained_sampling

SHIPPED = sorted((Path(__file__).resolve().parents[2] / "checkpoints").glob("*.ckpt"))
# the shipped checkpoints written with the flat options (the others record estimator objects)
FLAT = [p for p in SHIPPED if is_legacy(torch.load(p, weights_only=True)["hyper_parameters"])]


def flat_trained_sampling(hp: dict, gaussian_visible: bool) -> SamplingSpec | None:
    """The oracle: how qidbm 0.1 read a checkpoint's sampling from its flat options (kept verbatim)."""
    readout = hp.get("sample_output")
    start, step = hp.get("negative_start"), hp.get("quantum_step", "paper")
    precision = hp.get("matmul_precision", "float32")
    if start in ("noise", "noise_and_persistent"):
        return SamplingSpec(num_steps=int(hp.get("cd_steps", 1)), start="noise",
                            output=readout or ("mean" if gaussian_visible else "sample"), quantum_step=step,
                            visible_step=hp.get("visible_step", "gibbs"), matmul_precision=precision,
                            noise_density=hp.get("noise_density"), anneal_from=float(hp.get("noise_anneal", 1.0)))
    if start == "local_mode":
        return SamplingSpec(num_steps=0, start="noise", output=readout or "local_search", quantum_step=step,
                            matmul_precision=precision)
    return SamplingSpec(output=readout) if readout else None


def test_four_checkpoints_are_shipped():
    assert {p.stem for p in SHIPPED} >= {"dbm_mnist_binary", "qidbm_mnist_binary", "grbm_mnist", "qgrbm_mnist"}


def test_flat_checkpoints_are_still_shipped():
    assert {p.stem for p in FLAT} >= {"grbm_mnist", "qgrbm_mnist"}  # the fixtures of the tests below


@pytest.mark.parametrize("path", FLAT, ids=lambda p: p.stem)
def test_shipped_checkpoints_sample_bit_identically(path):
    model, info = load_checkpoint(path)
    raw = torch.load(path, weights_only=True)["hyper_parameters"]
    assert is_legacy(raw) and not is_legacy(info["hyper_parameters"])
    old = flat_trained_sampling(raw, model.gaussian_visible)
    new = trained_sampling(info["hyper_parameters"], model.gaussian_visible)
    assert new == old
    # and the draws of both protocols, same seed: the same samples, bit for bit
    draws = []
    for spec in (old, new):
        g = torch.Generator().manual_seed(5)
        draws.append(draw(model, 8, spec, generator=g)[0])
    assert torch.equal(draws[0], draws[1])


def test_flat_options_map_onto_the_objects():
    hp = upgrade_hparams({"negative_start": "noise_and_persistent", "cd_steps": 20, "num_chains": 50,
                          "persistent_betas": [1.0, 0.9], "noise_density": [0.2, 0.8], "lr": 0.001, "momentum": 0.9,
                          "centering": True, "lr_cooldown_steps": 100, "quantum_step": "exact"})
    neg = build(hp["negative"])
    assert isinstance(neg, Mixture) and isinstance(neg.fresh, FromNoise) and isinstance(neg.persistent, TemperedPersistent)
    assert (neg.fresh.sweeps, neg.fresh.density, neg.persistent.num_chains) == (20, [0.2, 0.8], 50)
    assert hp["optimizer"] == {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.001, "momentum": 0.9,
                                                                             "weight_decay": 0.0}}
    assert hp["kernel"]["class_path"].endswith("ExactStep")
    assert hp["lr_schedule"]["init_args"]["cooldown_steps"] == 100 and hp["centering"]["init_args"]["rate"] == 0.01
    assert isinstance(build(upgrade_hparams({"negative_start": "local_mode"})["negative"]), TaniguchiChains)
    with pytest.raises(ValueError, match="data_local_mode was removed"):
        upgrade_hparams({"negative_start": "data_local_mode"})


def test_a_flat_config_gets_the_new_form_to_paste():
    msg = legacy_config_message({"cd_steps": 20, "negative_start": "noise", "lr": 0.005})
    assert "cd_steps, lr, negative_start" in msg
    assert "qidbm.estimators.FromNoise" in msg and "sweeps: 20" in msg and "lr: 0.005" in msg


def test_the_cli_refuses_a_flat_config_with_the_new_form(tmp_path, capsys):
    from qidbm.cli import main

    cfg = tmp_path / "old.yaml"
    cfg.write_text("model:\n  class_path: qidbm.lightning.BoltzmannModule\n  init_args:\n"
                   "    model: {class_path: qidbm.models.RBM, init_args: {n_visible: 784, n_hidden: 10}}\n"
                   "    cd_steps: 20\n    negative_start: noise\n")
    assert main(["fit", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "flat training options" in err and "qidbm.estimators.FromNoise" in err and "sweeps: 20" in err
    assert main(["fit", "--config", str(cfg.parent / "missing.yaml"), "--model.init_args.cd_steps", "3"]) == 2
    assert "--model.init_args.negative.sweeps" in capsys.readouterr().err


def test_class_paths_are_not_mistaken_for_flat_options():
    assert not is_legacy({"positive": "qidbm.estimators.MeanField", "centering": "qidbm.lightning.centering.Centering"})
    assert is_legacy({"positive": "mean_field"})


def test_lightning_load_from_checkpoint_upgrades_a_flat_checkpoint():
    from qidbm.lightning import BoltzmannModule

    path = next(p for p in FLAT if p.stem == "qgrbm_mnist")
    model, _ = load_checkpoint(path)
    module = BoltzmannModule.load_from_checkpoint(path, model=model)
    assert isinstance(module.negative, FromNoise) and module.negative.sweeps == 20
    raw = torch.load(path, weights_only=True)["hyper_parameters"]
    assert module.sampling() == flat_trained_sampling(raw, model.gaussian_visible)
