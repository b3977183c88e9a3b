"""Your own data: ArrayDataModule (.npy / .npz / in-memory arrays) and ImageFolderDataModule (torchvision
ImageFolder): data_info, bad-data errors, and `qidbm fit` -> sample grid -> `qidbm sample` end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from qidbm.cli import main
from qidbm.data import ArrayDataModule, ImageFolderDataModule, datamodule_from_info, decode
from qidbm.images import save_grid

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return (load_digits().data / 16.0).astype(np.float64)  # [1797, 64] in [0, 1]


@pytest.fixture
def digits_npy(tmp_path, digits) -> Path:
    path = tmp_path / "digits.npy"
    np.save(path, digits)
    return path


def make_image_folder(root: Path, mode: str = "L", size: int = 12, per_class: int = 10, sizes=None) -> Path:
    """2 classes x ``per_class`` PNGs: class a has a bright top half, class b a bright left half."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(("a", "b")):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            s = sizes[(c * per_class + i) % len(sizes)] if sizes else size
            x = (rng.random((s, s)) * 60).astype(np.uint8)
            if c == 0:
                x[: s // 2] += 180
            else:
                x[:, : s // 2] += 180
            if mode == "RGB":
                x = np.stack([x, x[::-1], x[:, ::-1]], -1)
            Image.fromarray(x, mode=mode).save(root / cls / f"{i}.png")
    return root


# ---------------------------------------------------------------------------- data_info
def test_array_data_info_binary_with_image_shape(digits_npy, digits):
    dm = ArrayDataModule(str(digits_npy), image_shape=[8, 8], val_fraction=0.1, batch_size=50)
    info = dm.data_info()
    assert info["dataset"] == "digits" and info["encoding"] == "binary"
    assert info["image_shape"] == [1, 8, 8] and info["n_visible"] == 64 and info["has_image_shape"] is True
    assert info["normalization"]["kind"] == "none"
    assert info["split_sizes"] == {"train": 1617, "val": 180, "test": 180} and info["test_source"] == "val"
    assert info["preprocessing"].startswith("array of floats in [0, 1]; data sha1 ")
    rec = info["datamodule"]
    assert rec["class_path"].endswith("ArrayDataModule")
    assert rec["init_args"]["path"] == str(digits_npy.resolve()) and rec["init_args"]["image_shape"] == [8, 8]
    assert json.loads(json.dumps(info)) == info
    # binary: thresholded at 0.5, as the built-in binary encoding
    b = next(iter(dm.train_dataloader()))
    assert b.shape == (50, 64) and set(b.unique().tolist()) <= {0.0, 1.0}
    train, val = dm.split_pixels("train"), dm.split_pixels("val")
    assert train.shape[0] + val.shape[0] == len(digits)
    assert torch.equal(dm.encode(val[:5]), (val[:5].reshape(5, -1) > 0.5).float())
    assert dm.test_images().shape == (180, 1, 8, 8)


def test_array_continuous_normalisation_is_recorded_and_maps_back(digits_npy, digits):
    dm = ArrayDataModule(str(digits_npy), encoding="continuous", batch_size=1797, shuffle=False)
    info = dm.data_info()
    norm = info["normalization"]
    assert norm["kind"] == "pixel" and len(norm["mean"]) == len(norm["std"]) == 64
    np.testing.assert_allclose(norm["mean"], digits.mean(0), atol=1e-6)
    x = next(iter(dm.train_dataloader()))
    assert abs(float(x.mean())) < 1e-4
    # samples map back to the data's scale with nothing but the info
    np.testing.assert_allclose(decode(x, info).reshape(len(digits), -1).numpy(), digits, atol=1e-5)


def test_features_without_image_shape_draw_strips_and_refuse_fid(tmp_path):
    x = np.random.default_rng(0).random((30, 5))
    np.save(tmp_path / "table.npy", x)
    dm = ArrayDataModule(str(tmp_path / "table.npy"), encoding="continuous", batch_size=10)
    info = dm.data_info()
    assert info["image_shape"] == [1, 1, 5] and info["has_image_shape"] is False and info["test_source"] == "train"
    png = save_grid(decode(torch.zeros(7, 5), info), tmp_path / "g.png")
    assert Image.open(png).size == (5, 7)  # one sample per line
    with pytest.raises(ValueError, match=r"FID needs images: give image_shape"):
        dm.test_images()


def test_array_shapes_and_value_kinds(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "imgs.npy", rng.random((6, 3, 4, 5)))  # [N, C, H, W]: drawn as it is
    assert ArrayDataModule(str(tmp_path / "imgs.npy"), batch_size=2).data_info()["image_shape"] == [3, 4, 5]
    np.save(tmp_path / "grey.npy", rng.random((6, 4, 5)))  # [N, H, W]
    assert ArrayDataModule(str(tmp_path / "grey.npy"), batch_size=2).data_info()["image_shape"] == [1, 4, 5]
    np.save(tmp_path / "bits.npy", rng.integers(0, 2, (6, 16)))  # 0/1 integers kept as they are
    dm = ArrayDataModule(str(tmp_path / "bits.npy"), image_shape=[4, 4], batch_size=6, shuffle=False)
    assert torch.equal(next(iter(dm.train_dataloader())), torch.from_numpy(np.load(tmp_path / "bits.npy")).float())
    u8 = rng.integers(0, 256, (6, 16)).astype(np.uint8)  # 8-bit pixels: b / 255, thresholded at 128
    np.save(tmp_path / "u8.npy", u8)
    dm = ArrayDataModule(str(tmp_path / "u8.npy"), batch_size=6, shuffle=False)
    assert torch.equal(next(iter(dm.train_dataloader())), torch.from_numpy(u8 >= 128).float())
    np.savez(tmp_path / "two.npz", x=rng.random((6, 16)), y=rng.random((3, 16)))
    assert ArrayDataModule(str(tmp_path / "two.npz"), key="y", batch_size=3).data_info()["split_sizes"]["train"] == 3


def test_separate_val_and_test_files_and_relative_paths(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    for name, n in (("tr", 20), ("va", 6), ("te", 8)):
        np.save(tmp_path / f"{name}.npy", rng.random((n, 16)))
    dm = ArrayDataModule("tr.npy", val_path="va.npy", test_path="te.npy", image_shape=[4, 4], batch_size=5,
                         root=str(tmp_path))
    info = dm.data_info()
    assert info["split_sizes"] == {"train": 20, "val": 6, "test": 8} and info["test_source"] == "test_path"
    assert info["datamodule"]["init_args"]["test_path"] == str(tmp_path / "te.npy")
    assert len(dm.val_dataloader()) == 2 and len(dm.test_dataloader()) == 2
    # the recorded (absolute) paths rebuild the module from any folder, pinned to the recorded info
    monkeypatch.chdir(tmp_path.parent)
    again = datamodule_from_info(info)
    assert again.data_info() == info and torch.equal(again.split_pixels("test"), dm.split_pixels("test"))


def test_same_name_other_data_gets_another_fingerprint(tmp_path):
    # the FID reference cache is keyed by dataset, encoding and preprocessing: other data must not share a key
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    np.save(a / "x.npy", np.zeros((4, 4)))
    np.save(b / "x.npy", np.ones((4, 4)))
    ia, ib = (ArrayDataModule(str(d / "x.npy"), batch_size=2).data_info() for d in (a, b))
    assert ia["dataset"] == ib["dataset"] == "x" and ia["preprocessing"] != ib["preprocessing"]


def test_from_arrays(digits):
    x = torch.from_numpy(digits[:100]).float()
    dm = ArrayDataModule.from_arrays(x, test=x[:10], image_shape=[8, 8], batch_size=20)
    info = dm.data_info()
    assert info["dataset"] == "arrays" and info["split_sizes"] == {"train": 100, "test": 10}
    assert info["datamodule"]["init_args"]["path"] is None
    assert next(iter(dm.train_dataloader())).shape == (20, 64)
    with pytest.raises(ValueError, match="numpy.save the arrays and pass path= to datamodule_from_info"):
        datamodule_from_info(info).setup()
    with pytest.raises(ValueError, match="path is for files"):
        ArrayDataModule.from_arrays(x, path="x.npy")


def test_image_folder_data_info_grey_and_rgb(tmp_path):
    grey = ImageFolderDataModule(str(make_image_folder(tmp_path / "grey")), batch_size=5, val_fraction=0.2)
    info = grey.data_info()
    assert info["dataset"] == "grey" and info["image_shape"] == [1, 12, 12] and info["n_visible"] == 144
    assert info["split_sizes"] == {"train": 16, "val": 4, "test": 4} and info["has_image_shape"] is True
    assert info["preprocessing"].startswith("image_folder_own_size_grayscale; data sha1 ")
    assert info["datamodule"]["init_args"]["path"] == str((tmp_path / "grey").resolve())
    assert next(iter(grey.train_dataloader())).shape == (5, 144)
    rgb = ImageFolderDataModule(str(make_image_folder(tmp_path / "rgb", "RGB")), channels=3, image_size=8,
                                encoding="continuous", batch_size=4)
    info = rgb.data_info()
    assert info["image_shape"] == [3, 8, 8] and len(info["normalization"]["mean"]) == 192
    assert "resize_8x8_bilinear_rgb" in info["preprocessing"]
    assert rgb.test_images().shape == (20, 3, 8, 8)
    assert datamodule_from_info(info).data_info() == info
    # images of several sizes are fine once resized to one
    mixed = make_image_folder(tmp_path / "mixed", sizes=[12, 16])
    assert ImageFolderDataModule(str(mixed), image_size=[6, 10]).data_info()["image_shape"] == [1, 6, 10]


# ---------------------------------------------------------------------------- bad data
def _array_error(tmp_path, array=None, name="bad.npy", **kwargs):
    path = tmp_path / name
    if array is not None:
        np.save(path, array)
    return ArrayDataModule(str(path), batch_size=2, **kwargs).data_info


@pytest.mark.parametrize(
    "array, kwargs, message",
    [
        (np.zeros(5), {}, r"bad.npy has shape \[5\]; it must be 2-D .*x.reshape\(1, -1\); one feature per row\? x.reshape\(-1, 1\)"),
        (np.zeros((0, 5)), {}, r"bad.npy is empty \(shape \[0, 5\]\)"),
        (np.zeros((2, 2, 2, 2, 2)), {}, r"5 axes"),
        (np.zeros((4, 65)), {"image_shape": [8, 8]}, r"image_shape \[8, 8\] has 64 values but the rows of .*bad.npy have 65"),
        (np.zeros((4, 64)), {"image_shape": [2, 4, 8]}, r"2 channels; images are grey \(1\) or RGB \(3\)"),
        (np.zeros((4, 5, 5, 3)), {}, r"moveaxis"),
        (np.array([[0.0, np.nan], [np.inf, 1.0]]), {}, r"bad.npy has 1 NaN and 1 infinite values \(first: row 0, feature 1"),
        (np.array([[0.0, 1.5], [0.2, 1.0]]), {}, r"bad.npy has values in \[0, 1.5\], but every encoding takes values in \[0, 1\]; scale"),
        (np.array([[0.0, 255.0], [3.0, 1.0]]), {}, r"look like 8-bit pixels: divide by 255"),
        (np.array([[0, 7], [3, 1]]), {}, r"holds integers \(int64\) in \[0, 7\]"),
        (np.array([[0.0, -0.5]]), {"encoding": "continuous"}, r"values in \[-0.5, 0\]"),
    ],
    ids=["1d", "no-rows", "5d", "image-shape-mismatch", "channels", "channels-last", "nan-inf", "above-one",
         "8-bit-floats", "other-ints", "negative-continuous"],
)
def test_bad_arrays_are_clear_errors(tmp_path, array, kwargs, message):
    with pytest.raises(ValueError, match=message):
        _array_error(tmp_path, array, **kwargs)()


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing.npy: no such file; check data.path"):
        _array_error(tmp_path, name="missing.npy")()
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty.npy is empty \(0 bytes\)"):
        _array_error(tmp_path, name="empty.npy")()
    (tmp_path / "junk.npy").write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match=r"junk.npy cannot be read as a NumPy .npy file"):
        _array_error(tmp_path, name="junk.npy")()
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj.npy holds Python objects"):
        _array_error(tmp_path, name="obj.npy")()
    (tmp_path / "x.csv").write_text("0,1\n")
    with pytest.raises(ValueError, match=r"reads .npy or .npz files .* not .csv"):
        _array_error(tmp_path, name="x.csv")()
    np.savez(tmp_path / "two.npz", x=np.zeros((2, 2)), y=np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"two.npz holds 2 arrays \(x, y\); choose one with key"):
        _array_error(tmp_path, name="two.npz")()
    with pytest.raises(ValueError, match=r"two.npz has no array 'z'; it holds x, y"):
        _array_error(tmp_path, name="two.npz", key="z")()
    np.save(tmp_path / "v.npy", np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"v.npy has rows of shape \[1, 1, 5\] but the training data .*bad.npy has \[1, 1, 4\]"):
        _array_error(tmp_path, np.zeros((4, 4)), val_path=str(tmp_path / "v.npy"))()
    with pytest.raises(ValueError, match=r"holds out 4 of the 4 training rows .* lower val_fraction"):
        _array_error(tmp_path, np.zeros((4, 4)), val_fraction=0.9)()
    with pytest.raises(ValueError, match=r"either val_path .* or val_fraction"):
        _array_error(tmp_path, np.zeros((4, 4)), val_path="v.npy", val_fraction=0.1)
    with pytest.raises(ValueError, match=r"needs path, a .npy or .npz file"):
        ArrayDataModule(None).data_info()


def test_bad_image_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image folder .*nowhere does not exist; check data.path"):
        ImageFolderDataModule(str(tmp_path / "nowhere")).data_info()
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"empty holds no images"):
        ImageFolderDataModule(str(tmp_path / "empty")).data_info()
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(flat / "0.png")
    with pytest.raises(ValueError, match=r"flat holds images directly .* move them into a subfolder"):
        ImageFolderDataModule(str(flat)).data_info()
    mixed = make_image_folder(tmp_path / "mixed", sizes=[12, 16], per_class=2)
    with pytest.raises(ValueError, match=r"mixed holds images of different sizes \(.*12x12.*16x16\); set image_size"):
        ImageFolderDataModule(str(mixed)).data_info()
    broken = make_image_folder(tmp_path / "broken", per_class=2)
    (broken / "a" / "1.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"1.png cannot be read as an image"):
        ImageFolderDataModule(str(broken)).data_info()
    with pytest.raises(ValueError, match="channels must be 1"):
        ImageFolderDataModule(str(broken), channels=2)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- qidbm fit / sample
RUN = """
seed_everything: 0
trainer:
  accelerator: cpu
  max_steps: 3
  limit_train_batches: 3
  logger: false
  enable_model_summary: false
  enable_progress_bar: false
  default_root_dir: {out}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {out}/checkpoints, save_last: true, save_top_k: 0}}
    - class_path: qidbm.lightning.SampleGrid
      init_args: {{dirpath: {out}/samples, num_samples: 16, num_steps: 3}}
model:
  class_path: qidbm.lightning.BoltzmannModule
  init_args:
    model: {model}
"""

RBM = "{class_path: qidbm.models.RBM, init_args: {n_visible: %d, n_hidden: 16}}"
QIDBM = "{class_path: qidbm.models.QiDBM, init_args: {layer_sizes: [%d, 32, 16], quantum_layers: [1]}}"


def _fit_then_sample(tmp_path, model: str, data_args: list[str], cell: tuple[int, int, int]):
    out = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text(RUN.format(out=out, model=model))
    main(["fit", "--config", str(cfg), *data_args])
    c, h, w = cell
    grid = Image.open(out / "samples" / "last.png")
    assert grid.size == (4 * (w + 2) + 2, 4 * (h + 2) + 2)  # 16 samples: 4 x 4 cells of h x w, padding 2
    ckpt = out / "checkpoints" / "last.ckpt"
    assert main(["sample", "--ckpt", str(ckpt), "--num-samples", "9", "--num-steps", "2", "--out",
                 str(tmp_path / "s")]) == 0
    assert Image.open(tmp_path / "s" / "samples.png").size == (3 * (w + 2) + 2, 3 * (h + 2) + 2)
    assert np.load(tmp_path / "s" / "samples.npy").shape == (9, c, h, w)
    return torch.load(ckpt, weights_only=True)["qidbm"]["data_info"]


@pytest.mark.parametrize("model", [RBM % 64, QIDBM % 64], ids=["RBM", "QiDBM"])
def test_fit_and_sample_on_digits_npy(tmp_path, digits_npy, model):
    info = _fit_then_sample(tmp_path, model, ["--data", "qidbm.data.ArrayDataModule", "--data.path", str(digits_npy),
                                              "--data.image_shape", "[8, 8]", "--data.batch_size", "50"], (1, 8, 8))
    assert info["dataset"] == "digits" and info["image_shape"] == [1, 8, 8]


@pytest.mark.parametrize("channels", [1, 3], ids=["grey", "rgb"])
def test_fit_and_sample_on_an_image_folder(tmp_path, channels):
    folder = make_image_folder(tmp_path / "pics", "L" if channels == 1 else "RGB")
    info = _fit_then_sample(tmp_path, RBM % (channels * 144), ["--data", "qidbm.data.ImageFolderDataModule",
                                                                "--data.path", str(folder), "--data.channels",
                                                                str(channels), "--data.batch_size", "5"],
                            (channels, 12, 12))
    assert info["image_shape"] == [channels, 12, 12] and info["dataset"] == "pics"


def test_shipped_own_data_config_trains(tmp_path, digits, monkeypatch):
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "digits8x8.npy", digits)
    monkeypatch.chdir(tmp_path)  # the config's paths are relative to the working folder
    main(["fit", "--config", str(REPO / "configs/own_data/digits8x8.yaml"), "--trainer.max_steps", "2",
          "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.logger", "false"])
    info = torch.load(tmp_path / "runs/digits8x8/checkpoints/last.ckpt", weights_only=True)["qidbm"]["data_info"]
    assert info["image_shape"] == [1, 8, 8] and info["split_sizes"]["val"] == 180


def test_short_class_name_resolves_on_the_command_line(tmp_path, digits_npy):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("model:\n  class_path: qidbm.lightning.BoltzmannModule\n  init_args:\n    model: "
                   + RBM % 64 + "\n")
    # a fresh process: this test module has imported qidbm.data already, which would hide the problem
    r = subprocess.run([sys.executable, "-m", "qidbm.cli", "fit", "--config", str(cfg), "--data", "ArrayDataModule",
                        "--data.path", str(digits_npy), "--print_config"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "class_path: qidbm.data.own.ArrayDataModule" in r.stdout or "qidbm.data.ArrayDataModule" in r.stdout


FID_WEIGHTS = REPO.parent / "shared" / "fid" / "pt_inception-2015-12-05-6726825d.pth"


@pytest.mark.slow  # Inception on a CPU: about a minute
@pytest.mark.skipif(not FID_WEIGHTS.is_file(), reason=f"FID weights not found at {FID_WEIGHTS}")
def test_evaluate_rebuilds_the_array_module_for_fid_and_refuses_features(tmp_path, digits_npy, capsys):
    fit = ["--data", "qidbm.data.ArrayDataModule", "--data.path", str(digits_npy), "--data.batch_size", "50"]
    evaluate = ["--num-samples", "10", "--num-steps", "2", "--fid-weights", str(FID_WEIGHTS), "--fid-reference-size",
                "10", "--ais-runs", "0", "--prc-samples", "0", "--copy-samples", "0"]
    for name, shape in (("img", ["--data.image_shape", "[8, 8]", "--data.val_fraction", "0.1"]), ("features", [])):
        out = tmp_path / name
        (tmp_path / f"{name}.yaml").write_text(RUN.format(out=out, model=RBM % 64))
        main(["fit", "--config", str(tmp_path / f"{name}.yaml"), *fit, *shape])
    res = tmp_path / "eval.json"
    assert main(["evaluate", "--ckpt", str(tmp_path / "img/checkpoints/last.ckpt"), *evaluate, "--json", str(res)]) == 0
    assert json.loads(res.read_text())["fid"] > 0 and "vs digits test" in capsys.readouterr().out
    try:
        rc = main(["evaluate", "--ckpt", str(tmp_path / "features/checkpoints/last.ckpt"), *evaluate])
    except ValueError as e:  # raised by the data module when the reference images are asked for
        assert "FID needs images: give image_shape" in str(e)
    else:  # or refused by `qidbm evaluate` before sampling
        assert rc == 2 and "FID needs images" in capsys.readouterr().err
