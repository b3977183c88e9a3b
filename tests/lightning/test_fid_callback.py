"""FIDCallback: best checkpoint by FID (never a non-finite score), grids, a real Inception pass."""

from pathlib import Path

import lightning as L
import pytest
import torch

from qidbm.data import MNISTDataModule
from qidbm.estimators import FromNoise
from qidbm.lightning import BoltzmannModule, FIDCallback
from qidbm.models import QiDBM
from tests.test_cli import FID_WEIGHTS, make_tiny_mnist


def test_best_checkpoint_skips_non_finite_scores(tmp_path, monkeypatch):
    scores = iter([float("nan"), 50.0, 60.0, 40.0, float("inf")])
    saved = []

    def fake_compute(self, trainer, pl_module):
        self._last_images = torch.zeros(4, 1, 28, 28)
        return next(scores)

    monkeypatch.setattr(FIDCallback, "compute", fake_compute)
    cb = FIDCallback(every_n_epochs=1, num_samples=4, dirpath=str(tmp_path / "fid"))
    orig = L.Trainer.save_checkpoint

    def spy(self, path, *a, **k):
        saved.append((self.current_epoch, Path(path).name))
        return orig(self, path, *a, **k)

    monkeypatch.setattr(L.Trainer, "save_checkpoint", spy)
    root = make_tiny_mnist(tmp_path / "data")
    dm = MNISTDataModule(root=str(root), batch_size=40, download=False)
    t = L.Trainer(max_epochs=5, limit_train_batches=1, logger=False, enable_checkpointing=False, callbacks=[cb],
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    t.fit(BoltzmannModule(QiDBM([784, 8, 4], [1])), dm)
    assert saved == [(1, "best_fid.ckpt"), (3, "best_fid.ckpt")]
    assert cb.best_fid == 40.0 and len(cb.history) == 5
    assert (tmp_path / "fid" / "best_fid.ckpt").is_file()
    assert (tmp_path / "fid" / "fid_samples" / "epoch=004.png").is_file()
    assert cb.state_dict()["best_fid"] == 40.0


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_real_fid_is_finite_and_logged(tmp_path):
    cb = FIDCallback(every_n_epochs=1, num_samples=16, num_steps=2, fid_weights=str(FID_WEIGHTS),
                     dirpath=str(tmp_path / "fid"), batch_size=16)
    root = make_tiny_mnist(tmp_path / "data")
    dm = MNISTDataModule(root=str(root), batch_size=40, download=False)
    t = L.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False, callbacks=[cb],
                  enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    t.fit(BoltzmannModule(QiDBM([784, 8, 4], [1])), dm)
    assert len(cb.history) == 1 and cb.history[0][1] > 0 and cb.best_fid == cb.history[0][1]
    assert "fid" in t.callback_metrics


def test_callbacks_draw_from_the_noise_start_and_annealing_they_are_given():
    from qidbm.lightning import SampleGrid

    assert SampleGrid(noise_density=[0.2, 0.8]).spec.noise_density == (0.2, 0.8)
    assert FIDCallback(noise_density=[0.2, 0.8]).spec.noise_density == (0.2, 0.8)
    assert FIDCallback().spec.noise_density is None
    assert SampleGrid(anneal_from=0.1).spec.anneal_from == 0.1 == FIDCallback(anneal_from=0.1).spec.anneal_from
    assert SampleGrid().spec.anneal_from == 1.0
    with pytest.raises(ValueError, match="start density range"):
        SampleGrid(noise_density=[0.9, 0.1])


def test_callbacks_follow_the_modules_annealing_unless_told():
    """Left at None, a grid anneals as the module's FromNoise(anneal_from=...) does (what `qidbm sample`
    draws); a given anneal_from wins; a module without annealing is drawn plainly."""
    import dataclasses

    from qidbm.lightning import SampleGrid
    from qidbm.lightning.callbacks import draw_eval_samples
    from qidbm.models import RBM
    from qidbm.samplers.drawing import draw

    torch.manual_seed(0)
    model = RBM(12, 6, weight_std=1.0)
    annealed = BoltzmannModule(model, negative=FromNoise(5, anneal_from=0.2))
    plain = BoltzmannModule(model, negative=FromNoise(5))

    def reference(anneal_from):
        spec = dataclasses.replace(SampleGrid(num_steps=5).spec, anneal_from=anneal_from)
        return draw(model, 50, spec, generator=torch.Generator().manual_seed(3))[0]

    def grid(cb, module):
        return draw_eval_samples(None, module, 50, cb.spec, 3, cb.follow_training_anneal)

    follows, given = SampleGrid(num_steps=5), SampleGrid(num_steps=5, anneal_from=1.0)
    assert follows.follow_training_anneal and not given.follow_training_anneal
    assert FIDCallback().follow_training_anneal and not FIDCallback(anneal_from=0.5).follow_training_anneal
    assert torch.equal(grid(follows, annealed), reference(0.2))
    assert not torch.equal(reference(0.2), reference(1.0))  # the annealing changes the draws
    assert torch.equal(grid(given, annealed), reference(1.0))
    assert torch.equal(grid(follows, plain), reference(1.0))


def test_callbacks_read_samples_out_as_the_module_says_unless_told():
    import dataclasses

    from qidbm.lightning import SampleGrid
    from qidbm.lightning.callbacks import draw_eval_samples
    from qidbm.models import GRBM
    from qidbm.samplers.drawing import draw

    torch.manual_seed(0)
    model = GRBM(12, 6, weight_std=1.0)
    local = BoltzmannModule(model, negative=FromNoise(5), sample_output="local_mode")
    plain = BoltzmannModule(model, negative=FromNoise(5))

    def reference(output):
        spec = dataclasses.replace(SampleGrid(num_steps=5).spec, output=output)
        return draw(model, 50, spec, generator=torch.Generator().manual_seed(3))[0]

    def grid(cb, module):
        return draw_eval_samples(None, module, 50, cb.spec, 3, cb.follow_training_anneal, cb.follow_sample_output)

    follows, given = SampleGrid(num_steps=5), SampleGrid(num_steps=5, output="mean")
    assert follows.follow_sample_output and not given.follow_sample_output
    assert FIDCallback().follow_sample_output and not FIDCallback(output="sample").follow_sample_output
    assert not torch.equal(reference("local_mode"), reference("mean"))  # the read-out changes the images
    assert torch.equal(grid(follows, local), reference("local_mode"))
    assert torch.equal(grid(given, local), reference("mean"))
    assert torch.equal(grid(follows, plain), reference("mean"))
    with pytest.raises(ValueError, match="sample_output must be one of"):
        BoltzmannModule(model, negative=FromNoise(), sample_output="median")
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="sample_steps must be a number of Gibbs sweeps"):
            BoltzmannModule(model, negative=FromNoise(), sample_steps=bad)


def test_reference_split_is_checked_and_kept():
    cb = FIDCallback(reference="train", reference_size=500)
    assert (cb.reference, cb.reference_size) == ("train", 500)
    with pytest.raises(ValueError, match="reference must be one of"):
        FIDCallback(reference="validation")
    with pytest.raises(ValueError, match="reference must be one of"):
        FIDCallback(reference="train", reference_size=1)


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_fid_against_the_training_images_differs_from_the_test_score(tmp_path):
    root = make_tiny_mnist(tmp_path / "data")
    scores = {}
    for ref in ("test", "train"):
        cb = FIDCallback(every_n_epochs=1, num_samples=16, num_steps=2, fid_weights=str(FID_WEIGHTS),
                         dirpath=str(tmp_path / ref), batch_size=16, reference=ref)
        dm = MNISTDataModule(root=str(root), batch_size=40, download=False)
        t = L.Trainer(max_epochs=1, limit_train_batches=1, logger=False, enable_checkpointing=False, callbacks=[cb],
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
        torch.manual_seed(0)
        t.fit(BoltzmannModule(QiDBM([784, 8, 4], [1])), dm)
        scores[ref] = cb.history[0][1]
    assert scores["train"] > 0 and scores["test"] > 0 and scores["train"] != scores["test"]


def test_reference_size_defaults_and_caps_at_the_split():
    from qidbm.metrics import data_reference_key, reference_size

    assert reference_size("train", None, 60000) == 10000 and reference_size("train", None, 240) == 240
    assert reference_size("test", None, 10000) is None and reference_size("val", 500, 300) == 300
    assert "num_images" not in data_reference_key({"dataset": "MNIST", "encoding": "binary"})  # old test caches stay valid
    assert data_reference_key({"dataset": "MNIST", "encoding": "binary"}, "train", 10000)["num_images"] == 10000
    with pytest.raises(ValueError, match="must be one of"):
        data_reference_key({"dataset": "MNIST", "encoding": "binary"}, "validation")
