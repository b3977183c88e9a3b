"""CelebA 32x32 end to end on a generated folder in torchvision's layout: the shipped CPU recipe
(configs/cpu/grbm/base.yaml + celeba32_{grbm,qgrbm}.yaml) trains, `qidbm sample` maps the Gaussian
visibles back to RGB pixels with the recorded normalisation, `qidbm evaluate` scores them by FID."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qidbm.cli import main
from qidbm.data.testing import make_celeba_folder
from tests.data.test_data_celeba import pil_oracle

REPO = Path(__file__).resolve().parents[1]
FID_WEIGHTS = REPO.parent / "shared" / "fid" / "pt_inception-2015-12-05-6726825d.pth"


def fit_tiny(tmp_path, model):
    root = tmp_path / "data"
    files = make_celeba_folder(root, partition=(0,) * 12 + (1,) * 2 + (2,) * 6)
    out = tmp_path / "run"
    main(["fit", "--config", str(REPO / "configs/cpu/grbm/base.yaml"), "--config", str(REPO / f"configs/cpu/grbm/celeba32_{model}.yaml"),
          "--trainer.max_time", "null", "--trainer.max_epochs", "2", "--trainer.default_root_dir", str(out),
          "--trainer.enable_progress_bar", "false", "--model.init_args.model.init_args.n_hidden", "8",
          "--model.init_args.negative.init_args.sweeps", "2", "--model.init_args.optimizer.init_args.lr", "0.003", "--data.init_args.root", str(root), "--data.init_args.download", "false",
          "--data.init_args.batch_size", "4"])
    ckpts = list(out.rglob("last.ckpt"))
    assert len(ckpts) == 1
    return root, files, ckpts[0]


@pytest.mark.parametrize("model", ["grbm", "qgrbm"])
def test_celeba_recipe_trains_and_samples_rgb_in_the_data_colours(tmp_path, model):
    root, files, ckpt = fit_tiny(tmp_path, model)
    info = torch.load(ckpt, weights_only=True)["qidbm"]
    assert info["data_info"]["dataset"] == "CelebA" and info["data_info"]["image_shape"] == [3, 32, 32]
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "6", "--out", str(tmp_path / "s")]) == 0
    x = np.load(tmp_path / "s" / "samples.npy")
    assert x.shape == (6, 3, 32, 32) and x.min() >= 0 and x.max() <= 1 and (tmp_path / "s" / "samples.png").is_file()
    # Colour mapping oracle: after a few steps of lr 0.003 from 0.01-std weights, the conditional mean
    # mu + W h of every chain is still the training images' mean image (the visible bias starts at
    # the data mean): decoded samples must match it pixel by pixel and channel by channel, the mean
    # computed from the JPEG files by PIL (crop 140, resize 32), not by the package.
    mean_image = torch.stack([pil_oracle(f, 32) for f in files["train"]]).double().mean(0).numpy() / 255
    assert np.abs(x.mean(0) - mean_image).max() < 0.05
    assert np.abs(x.mean(0) - x.mean(0).mean()).max() > 0.05  # the oracle image has structure (not flat grey)


@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_celeba_evaluate_reports_fid_without_a_class_diagnostic(tmp_path, capsys):
    root, _, ckpt = fit_tiny(tmp_path, "qgrbm")
    res = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(ckpt), "--num-samples", "8", "--fid-weights", str(FID_WEIGHTS), "--ais-runs", "0",
                 "--prc-samples", "0", "--copy-samples", "4", "--json", str(res), "--data-root", str(root)]) == 0
    r = json.loads(res.read_text())
    assert r["fid"] > 0 and np.isfinite(r["fid"]) and r["num_samples"] == 8
    assert r.get("class_coverage") is None
    assert "FID (pytorch-fid" in capsys.readouterr().out
