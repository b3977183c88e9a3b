"""Data modules for your own data: arrays in ``.npy`` / ``.npz`` files (or in memory) and folders of images.

- :class:`ArrayDataModule`: the rows of a NumPy array, any number of features, optionally drawn
  as images of a given ``image_shape``.
- :class:`ImageFolderDataModule`: a folder in torchvision's ``ImageFolder`` layout
  (``path/<class>/<image>.png``), grey or RGB, resized to one size.

Both are :class:`~qidbm.data.ImageDataModule` subclasses: the same encodings (``binary``,
``bitplanes``, ``continuous``; :mod:`qidbm.data.encodings`), loaders, checkpoint state and
``data_info()`` (with the ``datamodule`` record that ``qidbm sample`` / ``qidbm evaluate``
rebuild them from, with absolute file paths), so sample grids, ``qidbm sample``,
``qidbm evaluate`` and FID work on models trained with them::

    qidbm fit --config configs/own_data/digits8x8.yaml
    qidbm fit --config my.yaml --data qidbm.data.ArrayDataModule --data.path my.npy --data.image_shape "[8, 8]"
    qidbm fit --config my.yaml --data ImageFolderDataModule --data.path my_images/ --data.image_size 32

    dm = ArrayDataModule.from_arrays(x, image_shape=[8, 8])   # in Python, x: [N, 64] in [0, 1]

Splits. Training rows come from ``path``; validation rows from ``val_path``, or the share
``val_fraction`` of the training rows held out (drawn with ``seed``); test rows from
``test_path``, else the validation rows, else the training rows (``data_info()["test_source"]``
says which: FID and the test log-likelihood of ``qidbm evaluate`` use the test rows).

Every data set recorded in ``data_info()`` carries a fingerprint of its contents (in
``preprocessing``), so that FID statistics cached for one data set are never served for
another one of the same name.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .datamodules import ImageDataModule

__all__ = ["ArrayDataModule", "ImageFolderDataModule"]

PARTS = ("train", "val", "test")
_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK"}  # a .npz file is a zip archive
_CHUNK = 65536  # rows encoded at a time (bounds the float temporaries of a large split)


class EncodedRows(Dataset):
    """Batches gathered from rows that are already encoded: ``dataset[indices]`` is ``rows[indices]``.

    Data held as floats is encoded once per loader rather than per batch (8-bit data is
    encoded per batch by :class:`~qidbm.data.TensorBatchDataset`, which keeps it at one byte
    per value in memory).
    """

    def __init__(self, rows: Tensor):
        self.rows = rows

    def __len__(self) -> int:
        return self.rows.shape[0]

    def __getitem__(self, index: int | list[int] | Tensor) -> Tensor:
        if isinstance(index, int):
            return self.rows[index]
        return self.rows[torch.as_tensor(index, dtype=torch.long)]


class _OwnDataModule(ImageDataModule):
    """What both modules share: the train / val / test parts, paths relative to ``root``,
    the fingerprint and the extra ``data_info`` keys. Subclasses read one part with :meth:`_read`."""

    _holdout_option = "val_fraction"

    def __init__(
        self,
        path: str | None,
        val_path: str | None,
        test_path: str | None,
        val_fraction: float,
        name: str | None,
        root: str | None,
        encoding: str,
        batch_size: int,
        num_workers: int,
        seed: int,
        shuffle: bool,
        normalize: str,
        std_floor: float,
    ) -> None:
        super().__init__(
            root=root,
            encoding=encoding,  # type: ignore[arg-type]
            batch_size=batch_size,
            val_size=0,  # the hold-out is val_fraction's (set up in _load_parts)
            num_workers=num_workers,
            download=False,
            seed=seed,
            shuffle=shuffle,
            normalize=normalize,  # type: ignore[arg-type]
            std_floor=std_floor,
        )
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1) (the share of training rows held out), got {val_fraction}")
        if val_path is not None and val_fraction > 0:
            raise ValueError(
                f"give either val_path ({val_path}) or val_fraction ({val_fraction}), not both: the validation rows "
                "come from one of them"
            )
        self.path = path
        self.val_path = val_path
        self.test_path = test_path
        self.val_fraction = val_fraction
        # a relative path is taken from root, else from the folder the module is made in
        self._base_dir = Path(root).expanduser() if root else Path.cwd()
        self._parts: dict[str, Tensor] | None = None
        self._sources: dict[str, str] = {}
        self._test_source = "train"
        self.dataset_name = name or self._default_name()  # type: ignore[misc]  # per instance, not per class

    # ------------------------------------------------------------------ subclass hooks
    def _default_name(self) -> str:
        raise NotImplementedError

    def _read(self, part: str) -> Tensor:
        """Read ``part`` ("train", "val" or "test"): uint8 or float32 [N, C, H, W]; set ``self._sources[part]``."""
        raise NotImplementedError

    def _preprocessing(self) -> str:
        """How the files became the tensors (recorded in ``data_info()``; the fingerprint is added)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ paths
    def resolve(self, path: str) -> Path:
        """``path`` as an absolute path (a relative one is taken from ``root``, else the working folder)."""
        p = Path(path).expanduser()
        return (p if p.is_absolute() else self._base_dir / p).resolve()

    def _path_of(self, part: str) -> str | None:
        return {"train": self.path, "val": self.val_path, "test": self.test_path}[part]

    def _has_part(self, part: str) -> bool:
        """Whether ``part`` ("val", "test") has data of its own (else it is held out or falls back)."""
        return self._path_of(part) is not None

    def _recipe(self) -> dict[str, Any]:
        # absolute paths, so that `qidbm sample` / `qidbm evaluate` find the files from any folder
        recipe = super()._recipe()
        for key in ("path", "val_path", "test_path"):
            if recipe["init_args"].get(key) is not None:
                recipe["init_args"][key] = str(self.resolve(recipe["init_args"][key]))
        return recipe

    # ------------------------------------------------------------------ parts
    def _read_parts(self) -> dict[str, Tensor]:
        """All parts, read once: train, val (file or hold-out) and test (file, else val, else train)."""
        if self._parts is not None:
            return self._parts
        parts: dict[str, Tensor] = {"train": self._read("train")}
        for part in ("val", "test"):
            if self._has_part(part):
                x = self._read(part)
                if x.shape[1:] != parts["train"].shape[1:]:
                    raise ValueError(
                        f"{self._sources[part]} has rows of shape {list(x.shape[1:])} but the training data "
                        f"{self._sources['train']} has {list(parts['train'].shape[1:])}: train, val and test data "
                        "must have the same shape"
                    )
                parts[part] = x
        if any(x.is_floating_point() for x in parts.values()):  # one storage type for all parts
            parts = {k: x if x.is_floating_point() else x.to(torch.float32) / 255.0 for k, x in parts.items()}
        if self.val_fraction > 0:
            full = parts["train"]
            n = full.shape[0]
            n_val = max(1, round(self.val_fraction * n))
            if n_val >= n:
                raise ValueError(
                    f"val_fraction={self.val_fraction} holds out {n_val} of the {n} training rows of "
                    f"{self._sources['train']}, leaving none to train on: lower val_fraction"
                )
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            parts["val"] = full[perm[:n_val].sort().values]
            parts["train"] = full[perm[n_val:].sort().values]
            self._sources["val"] = (
                f"{n_val} rows held out of {self._sources['train']} (val_fraction {self.val_fraction}, seed {self.seed})"
            )
        if "test" in parts:
            self._test_source = "test_path"
        elif "val" in parts:
            parts["test"], self._test_source = parts["val"], "val"
        else:
            parts["test"], self._test_source = parts["train"], "train"
        self._parts = parts
        return parts

    def _load_parts(self) -> dict[str, Tensor]:
        return dict(self._read_parts())

    def _load_split(self, split: str) -> Tensor:
        return self._read_parts()[split]

    def _normalization_source(self) -> str:
        n = self._read_parts()["train"].shape[0]
        return f"{self.dataset_name}: the {n} training rows of {self._sources['train']}"

    def fingerprint(self) -> str:
        """sha1 (12 hex digits) of the parts' contents and layout: what FID caches are keyed by."""
        h = hashlib.sha1()
        parts = self._read_parts()
        for part in (p for p in PARTS if p in parts):
            x = parts[part].contiguous()
            h.update(f"{part}:{x.dtype}:{list(x.shape)};".encode())
            h.update(x.numpy().tobytes())
        return h.hexdigest()[:12]

    def _extra_info(self) -> dict[str, Any]:
        parts = self._read_parts()
        return {
            "preprocessing": f"{self._preprocessing()}; data sha1 {self.fingerprint()}",
            "source": {p: self._sources.get(p, "") for p in ("train", "val", "test") if p in self._sources},
            "split_sizes": {p: int(x.shape[0]) for p, x in parts.items()},
            "test_source": self._test_source,
            "has_image_shape": self.has_image_shape,
        }

    @property
    def has_image_shape(self) -> bool:
        """Whether the rows are images (grids, FID); False only for feature rows of :class:`ArrayDataModule`."""
        return True

    # ------------------------------------------------------------------ loaders and splits
    def _batch_dataset(self, pixels: Tensor, train: bool = False) -> Dataset:
        if pixels.dtype == torch.uint8:
            return super()._batch_dataset(pixels, train)
        enc = self.encoder
        return EncodedRows(torch.cat([enc.encode(pixels[i : i + _CHUNK]) for i in range(0, pixels.shape[0], _CHUNK)]))

    def split_pixels(self, split: Literal["train", "val", "test"]) -> Tensor:
        """The rows of a split as images [N, C, H, W] (uint8, or float32 in [0, 1]); ``test`` is the
        validation or the training part when there is no ``test_path`` (``data_info()["test_source"]``)."""
        self.setup()
        if split not in self._pixels:
            raise ValueError(
                f"no {split!r} split: set val_path or val_fraction (now val_fraction={self.val_fraction}) "
                "to hold out validation rows"
            )
        return self._pixels[split]


# ---------------------------------------------------------------------------- arrays
def _read_array_file(file: Path, key: str | None) -> np.ndarray:
    """Load a .npy file, or one array of a .npz file, with errors that name the file and the fix."""
    if not file.exists():
        raise FileNotFoundError(f"{file}: no such file; check data.path (a relative path is taken from root, else "
                                "the current folder)")
    if file.is_dir():
        raise ValueError(f"{file} is a folder; ArrayDataModule reads a .npy or .npz file (ImageFolderDataModule "
                         "reads folders of images)")
    suffix = file.suffix.lower()
    if suffix not in (".npy", ".npz"):
        raise ValueError(f"{file}: ArrayDataModule reads .npy or .npz files (numpy.save / numpy.savez), not "
                         f"{suffix or 'files without a suffix'}")
    if file.stat().st_size == 0:
        raise ValueError(f"{file} is empty (0 bytes); write the data with numpy.save(path, array)")
    with open(file, "rb") as f:  # np.load takes files of any other content for pickles
        magic = f.read(6)
    if magic[: len(_MAGIC[suffix])] != _MAGIC[suffix]:
        raise ValueError(f"{file} cannot be read as a NumPy {suffix} file (it does not start as one); write it with "
                         f"{'numpy.save' if suffix == '.npy' else 'numpy.savez'}")
    if suffix == ".npy" and key is not None:
        raise ValueError(f"key={key!r} names an array inside a .npz file, but {file} is a .npy file: leave key unset")
    try:
        if suffix == ".npy":
            return np.load(file, allow_pickle=False)
        with np.load(file, allow_pickle=False) as z:
            names = list(z.files)
            if not names:
                raise ValueError(f"{file} holds no arrays; write the data with numpy.savez(path, x=array)")
            if key is None:
                if len(names) > 1:
                    raise ValueError(f"{file} holds {len(names)} arrays ({', '.join(names)}); choose one with key "
                                     f"(data.key, e.g. --data.key {names[0]})")
                key = names[0]
            if key not in names:
                raise ValueError(f"{file} has no array {key!r}; it holds {', '.join(names)}: set key to one of them")
            return z[key]
    except ValueError as e:
        if "Object arrays" in str(e):
            raise ValueError(f"{file} holds Python objects, not a numeric array; save a numeric array "
                             "(numpy.save(path, np.asarray(x, dtype=np.float32)))") from e
        if str(e).startswith(str(file)):
            raise
        raise ValueError(f"{file} cannot be read as a NumPy {suffix} file ({e}); write it with numpy.save / "
                         "numpy.savez") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{file} cannot be read as a NumPy {suffix} file ({type(e).__name__}: {e}); write it with "
                         "numpy.save / numpy.savez") from e


def _rows(x: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    """Check the values of an array and bring it to storage form: (array, kind), where kind is
    ``"8bit"`` (uint8 0..255), ``"01"`` (0/1 stored as uint8 0/255) or ``"float"`` (float32 in [0, 1])."""
    if x.dtype == np.bool_:
        return x.astype(np.uint8) * 255, "01"
    if np.issubdtype(x.dtype, np.integer):
        lo, hi = int(x.min()), int(x.max())
        if lo >= 0 and hi <= 1:
            return x.astype(np.uint8) * 255, "01"  # exact, one byte per value
        if x.dtype == np.uint8:
            return x, "8bit"
        raise ValueError(
            f"{source} holds integers ({x.dtype}) in [{lo}, {hi}]; give values in [0, 1] as floats "
            f"(x / x.max()), 0/1 integers, or 8-bit pixels as uint8 (x.astype(numpy.uint8))"
        )
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"{source} has dtype {x.dtype}; give a numeric array of floats in [0, 1]")
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)
        row, col = int(bad[0][0]), int(bad[0][1])
        raise ValueError(
            f"{source} has {int(np.isnan(x).sum())} NaN and {int(np.isinf(x).sum())} infinite values (first: row "
            f"{row}, feature {col} = {x[row, col]}); fill or drop them (e.g. numpy.nan_to_num, or x[numpy.isfinite(x)"
            ".all(1)]) before training"
        )
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        if lo >= 0.0 and hi <= 255.0 and bool((x == np.round(x)).all()):
            fix = "they look like 8-bit pixels: divide by 255, or save them as uint8"
        else:
            fix = "scale every feature to [0, 1], e.g. (x - x.min(0)) / (x.max(0) - x.min(0))"
        raise ValueError(f"{source} has values in [{lo:g}, {hi:g}], but every encoding takes values in [0, 1]; {fix}")
    return x.astype(np.float32, copy=False), "float"


def _image_shape(
    shape: Sequence[int] | None, source: str, array_shape: tuple[int, ...]
) -> tuple[tuple[int, int, int], bool]:
    """([C, H, W], given) for rows of ``array_shape`` [N, ...]: from ``image_shape`` if set, else the
    array's own axes (3-D arrays [N, H, W], 4-D [N, C, H, W]), else [1, 1, D] (features, no image)."""
    d = math.prod(array_shape[1:])
    if shape is not None:
        s = [int(v) for v in shape]
        if len(s) == 2:
            s = [1, *s]
        if len(s) != 3 or any(v < 1 for v in s):
            raise ValueError(f"image_shape must be [H, W] or [C, H, W] with positive sizes, got {list(shape)}")
        if s[0] not in (1, 3):
            raise ValueError(f"image_shape {list(shape)} has {s[0]} channels; images are grey (1) or RGB (3), "
                             "channels first ([C, H, W])")
        if math.prod(s) != d:
            raise ValueError(
                f"image_shape {list(shape)} has {math.prod(s)} values but the rows of {source} have {d} features "
                f"(array shape {list(array_shape)}); give an image_shape whose sizes multiply to {d}"
            )
        return (s[0], s[1], s[2]), True
    if len(array_shape) == 3:
        return (1, array_shape[1], array_shape[2]), True
    if len(array_shape) == 4:
        if array_shape[1] not in (1, 3):
            raise ValueError(
                f"{source} has shape {list(array_shape)}: read as [N, C, H, W] that is {array_shape[1]} channels; "
                "images are channels first with 1 or 3 channels: move the channel axis (numpy.moveaxis(x, -1, 1)) "
                "or give image_shape"
            )
        return (array_shape[1], array_shape[2], array_shape[3]), True
    return (1, 1, d), False


class ArrayDataModule(_OwnDataModule):
    """Rows of a NumPy array (``.npy``, or one array of a ``.npz``) as training data.

    Values: floats in [0, 1], 0/1 integers or booleans, or 8-bit pixels as ``uint8`` (taken as
    ``b / 255``; a uint8 array holding only 0 and 1 counts as 0/1). Anything else (NaN, inf,
    values outside [0, 1], other integers) is refused with a message saying how to fix it.
    Arrays with more than two axes are flattened per row (C order).

    Encodings (:mod:`qidbm.data.encodings`):

    - ``binary``: every value is thresholded at 0.5 (``x > 0.5``), as the built-in binary
      encoding does, so 0/1 data is kept as is and probabilities or grey values are rounded;
      use binary visible units (RBM, QRBM, DBM, QiDBM).
    - ``continuous``: each feature is normalised to ``(x - mean) / std`` with the training rows'
      statistics (``normalize: pixel``, per feature; ``global``: one mean/std; ``none``), which
      ``data_info()["normalization"]`` records so that samples map back to [0, 1]; use Gaussian
      visible units (GRBM, QGRBM).
    - ``bitplanes``: the 8 bits of ``round(255 x)`` per value (8 units per feature).

    Without an image shape (a 2-D array and no ``image_shape``) the rows are features:
    ``data_info()`` records ``image_shape`` [1, 1, D] and ``has_image_shape: false``; sample
    grids are drawn as N x D heat maps (one sample per line) and FID is refused.

    Args:
        path: the training data, a ``.npy`` or ``.npz`` file of shape [N, D] (or [N, H, W],
            [N, C, H, W]). ``None`` only through :meth:`from_arrays`.
        key: the array's name in a ``.npz`` file holding several (one array needs no key).
        val_path: validation rows in a file of the same layout (instead of ``val_fraction``).
        test_path: test rows in a file of the same layout (FID and the test log-likelihood of
            ``qidbm evaluate`` use them; without it, the validation rows, else the training rows).
        val_fraction: share of the training rows held out for validation (drawn with ``seed``).
        image_shape: how a row is drawn: ``[H, W]`` (grey) or ``[C, H, W]`` (C = 1 or 3,
            channels first), e.g. ``[8, 8]``; its sizes must multiply to the number of features.
            Default: the array's own axes for 3-D / 4-D arrays, else none (features).
        encoding: ``binary``, ``continuous`` or ``bitplanes`` (see above).
        batch_size: per-rank batch size of every loader (training drops the last short batch).
        num_workers: DataLoader workers (0 is fastest for data in memory).
        seed: seed of the ``val_fraction`` hold-out and of the training shuffle (``seed + epoch``).
        shuffle: shuffle the training batches each epoch.
        normalize: for ``continuous``: ``pixel`` (per feature), ``global`` or ``none``.
        std_floor: lower bound on the std used by ``normalize`` (constant features have std 0).
        name: the data set's name in ``data_info()`` and printouts (default: the file's stem).
        root: folder that relative paths are taken from (default: the current folder). The
            recorded ``datamodule`` arguments hold absolute paths.
    """

    def __init__(
        self,
        path: str | None,
        key: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        val_fraction: float = 0.0,
        image_shape: list[int] | None = None,
        encoding: Literal["binary", "bitplanes", "continuous"] = "binary",
        batch_size: int = 100,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        normalize: Literal["pixel", "global", "none"] = "pixel",
        std_floor: float = 0.01,
        name: str | None = None,
        root: str | None = None,
    ) -> None:
        self.key = key
        self._image_shape_arg = None if image_shape is None else [int(v) for v in image_shape]
        self._arrays: dict[str, Any] = {}
        super().__init__(
            path=path, val_path=val_path, test_path=test_path, val_fraction=val_fraction, name=name, root=root,
            encoding=encoding, batch_size=batch_size, num_workers=num_workers, seed=seed, shuffle=shuffle,
            normalize=normalize, std_floor=std_floor,
        )
        if self._image_shape_arg is not None:  # checked against the data when it is read
            _image_shape(self._image_shape_arg, "", (1, math.prod(self._image_shape_arg)))
        self._shape: tuple[int, int, int] | None = None
        self._has_image_shape = False
        self._kinds: set[str] = set()

    @classmethod
    def from_arrays(
        cls, train: np.ndarray | Tensor, val: np.ndarray | Tensor | None = None, test: np.ndarray | Tensor | None = None,
        **kwargs: Any,
    ) -> "ArrayDataModule":
        """A module serving in-memory arrays (NumPy or torch; the same value rules as files).

        ``kwargs`` are the other arguments (``image_shape``, ``encoding``, ``batch_size``,
        ``val_fraction``, ...; ``name`` defaults to ``"arrays"``). Checkpoints record no data:
        to evaluate such a model with ``qidbm evaluate``, save the arrays with ``numpy.save`` and
        rebuild with ``datamodule_from_info(info, path=...)``.
        """
        for k in ("path", "val_path", "test_path", "key"):
            if kwargs.get(k) is not None:
                raise ValueError(f"from_arrays takes the data as arrays; {k} is for files (ArrayDataModule(path=...))")
        if val is not None and kwargs.get("val_fraction"):
            raise ValueError("give either val (an array) or val_fraction, not both")
        dm = cls(path=None, **kwargs)
        dm._arrays = {p: x for p, x in (("train", train), ("val", val), ("test", test)) if x is not None}
        return dm

    def _default_name(self) -> str:
        return Path(self.path).stem if self.path else "arrays"

    def _has_part(self, part: str) -> bool:
        return part in self._arrays or super()._has_part(part)

    def _read(self, part: str) -> Tensor:
        if part in self._arrays:
            x = self._arrays[part]
            x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
            source = f"the {part} array"
        else:
            file = self._path_of(part)
            if file is None:
                raise ValueError(
                    "ArrayDataModule needs path, a .npy or .npz file of rows (data.path in a config, --data.path on "
                    "the command line); in Python, ArrayDataModule.from_arrays(x) takes arrays. A model trained on "
                    "in-memory arrays is evaluated from a file: numpy.save the arrays and pass path= to "
                    "datamodule_from_info"
                )
            resolved = self.resolve(file)
            x = _read_array_file(resolved, self.key)
            source = str(resolved) + (f" (array {self.key!r})" if self.key else "")
        self._sources[part] = source
        if x.ndim < 2:
            fix = "one row? x.reshape(1, -1); one feature per row? x.reshape(-1, 1)" if x.ndim == 1 else "save rows"
            raise ValueError(
                f"{source} has shape {list(x.shape)}; it must be 2-D [N rows, D features] (or [N, H, W], [N, C, H, W]): "
                f"{fix}"
            )
        if x.shape[0] == 0 or math.prod(x.shape[1:]) == 0:
            raise ValueError(f"{source} is empty (shape {list(x.shape)}): it needs at least one row with features")
        if x.ndim > 4:
            raise ValueError(f"{source} has {x.ndim} axes {list(x.shape)}; give [N, D] rows (x.reshape(len(x), -1)) "
                             "and image_shape to draw them")
        shape, given = _image_shape(self._image_shape_arg, source, x.shape)
        if part == "train":
            self._shape, self._has_image_shape = shape, given
        rows, kind = _rows(x.reshape(x.shape[0], -1), source)
        self._kinds.add(kind)
        return torch.from_numpy(np.ascontiguousarray(rows)).reshape(rows.shape[0], *shape)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """[C, H, W] of one row: ``image_shape`` as given, the array's own axes, or [1, 1, D] (reads the data)."""
        if self._shape is None:
            self._read_parts()
        assert self._shape is not None
        return self._shape

    @property
    def has_image_shape(self) -> bool:
        """Whether rows are images (``image_shape`` given or taken from the array's axes)."""
        if self._shape is None:
            self._read_parts()
        return self._has_image_shape

    def _preprocessing(self) -> str:
        values = {"float": "floats in [0, 1]", "8bit": "8-bit values / 255", "01": "0/1 values"}
        return "array of " + " and ".join(values[k] for k in sorted(self._kinds))

    def reference_images(self, split: Literal["train", "val", "test"] = "test", num_images: int | None = None) -> Tensor:
        """As :meth:`ImageDataModule.reference_images`; refused without an image shape (FID compares images)."""
        if not self.has_image_shape:
            d = math.prod(self.image_shape)
            raise ValueError(
                f"FID needs images: give image_shape (data.image_shape, e.g. [8, 8] for 64 features or [3, 32, 32] for "
                f"3072) so that the {d} features of {self.dataset_name} are drawn as images; without one, skip FID "
                "(qidbm evaluate --no-fid)"
            )
        return super().reference_images(split, num_images)


# ---------------------------------------------------------------------------- image folders
class _Folder(torchvision.datasets.ImageFolder):
    """torchvision's ImageFolder whose unreadable images raise an error naming the file."""

    def __getitem__(self, index: int):
        try:
            return super().__getitem__(index)
        except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError (an OSError), truncated data
            raise ValueError(
                f"{self.samples[index][0]} cannot be read as an image ({type(e).__name__}: {e}); replace or delete it"
            ) from e


def _images_only(batch: list[tuple[Tensor, int]]) -> list[Tensor]:
    return [x for x, _ in batch]  # labels are dropped; a list, since sizes may differ before the check


class ImageFolderDataModule(_OwnDataModule):
    """A folder of images in torchvision's ``ImageFolder`` layout as training data.

    ``path/<class>/<image>`` (any subfolder names; the classes are not used for training, and
    one subfolder such as ``path/all/`` is enough). Images are read with
    :class:`torchvision.datasets.ImageFolder` (PNG, JPEG, BMP, ... as its loader reads them),
    turned grey (ITU-R 601-2 luma) or kept RGB, and resized to ``image_size`` (PIL bilinear,
    antialiased); they are held in memory as 8-bit pixels. Encodings: ``binary`` (pixels
    thresholded at 0.5 of full scale), ``bitplanes`` or ``continuous`` (per-pixel
    normalisation; see :class:`ArrayDataModule`).

    Args:
        path: the training images' folder.
        val_path: a folder of validation images (instead of ``val_fraction``).
        test_path: a folder of test images (FID and the test log-likelihood use them; without
            it, the validation images, else the training images).
        val_fraction: share of the training images held out for validation (drawn with ``seed``).
        channels: 1 (grey) or 3 (RGB).
        image_size: ``S`` or ``[H, W]``: every image is resized to it. Default: the images' own
            size, which must then be the same for all of them.
        encoding, batch_size, num_workers, seed, shuffle, normalize, std_floor, name, root:
            as :class:`ArrayDataModule` (``num_workers`` also decodes the images when they are
            read; ``name`` defaults to the folder's name).
    """

    def __init__(
        self,
        path: str,
        val_path: str | None = None,
        test_path: str | None = None,
        val_fraction: float = 0.0,
        channels: Literal[1, 3] = 1,
        image_size: int | list[int] | None = None,
        encoding: Literal["binary", "bitplanes", "continuous"] = "binary",
        batch_size: int = 100,
        num_workers: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        normalize: Literal["pixel", "global", "none"] = "pixel",
        std_floor: float = 0.01,
        name: str | None = None,
        root: str | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise ValueError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
        size = None
        if image_size is not None:
            size = [int(image_size)] * 2 if isinstance(image_size, int) else [int(v) for v in image_size]
            if len(size) != 2 or min(size) < 1:
                raise ValueError(f"image_size must be a positive size S or [H, W], got {image_size}")
        self.channels = channels
        self._size = size
        super().__init__(
            path=path, val_path=val_path, test_path=test_path, val_fraction=val_fraction, name=name, root=root,
            encoding=encoding, batch_size=batch_size, num_workers=num_workers, seed=seed, shuffle=shuffle,
            normalize=normalize, std_floor=std_floor,
        )

    def _default_name(self) -> str:
        return self.resolve(self.path).name  # type: ignore[arg-type]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """[channels, H, W]: ``image_size``, or the images' own size (reads the images)."""
        if self._size is not None:
            return (self.channels, self._size[0], self._size[1])
        return tuple(self._read_parts()["train"].shape[1:])  # type: ignore[return-value]

    def transform(self) -> torchvision.transforms.Compose:
        """PIL image -> uint8 tensor [channels, H, W] (ImageFolder's loader gives RGB)."""
        T = torchvision.transforms
        steps: list[Any] = []
        if self._size is not None:
            steps.append(T.Resize(tuple(self._size), interpolation=T.InterpolationMode.BILINEAR, antialias=True))
        if self.channels == 1:
            steps.append(T.Grayscale(num_output_channels=1))
        steps.append(T.PILToTensor())
        return T.Compose(steps)

    def _preprocessing(self) -> str:
        size = f"resize_{self._size[0]}x{self._size[1]}_bilinear" if self._size else "own_size"
        return f"image_folder_{size}_{'grayscale' if self.channels == 1 else 'rgb'}"

    def _read(self, part: str) -> Tensor:
        folder = self.resolve(self._path_of(part))  # type: ignore[arg-type]
        self._sources[part] = str(folder)
        option = {"train": "path", "val": "val_path", "test": "test_path"}[part]
        if not folder.exists():
            raise FileNotFoundError(f"image folder {folder} does not exist; check data.{option} (a relative path is "
                                    "taken from root, else the current folder)")
        if not folder.is_dir():
            raise ValueError(f"{folder} is a file; ImageFolderDataModule reads a folder of images (ArrayDataModule "
                             "reads .npy / .npz files)")
        try:
            ds = _Folder(str(folder), transform=self.transform())
        except FileNotFoundError as e:
            extensions = torchvision.datasets.folder.IMG_EXTENSIONS
            loose = [f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in extensions]
            if loose:
                raise ValueError(
                    f"{folder} holds images directly ({loose[0].name}, ...) but ImageFolder reads them from subfolders, "
                    f"one per class: move them into a subfolder, e.g. {folder / 'all'}/"
                ) from e
            raise ValueError(
                f"{folder} holds no images: ImageFolder reads {folder}/<class>/<image> with the extensions "
                f"{', '.join(extensions)} ({e})"
            ) from e
        loader = DataLoader(ds, batch_size=256, num_workers=self.num_workers, collate_fn=_images_only)
        images = [x for batch in loader for x in batch]
        sizes: dict[tuple[int, ...], int] = {}
        for i, x in enumerate(images):
            sizes.setdefault(tuple(x.shape[1:]), i)
        if len(sizes) > 1:
            (s1, i1), (s2, i2) = list(sizes.items())[:2]
            raise ValueError(
                f"{folder} holds images of different sizes ({ds.samples[i1][0]}: {s1[0]}x{s1[1]}, "
                f"{ds.samples[i2][0]}: {s2[0]}x{s2[1]}{', ...' if len(sizes) > 2 else ''}); set image_size "
                f"(e.g. data.image_size: {s1[0]}) to resize them all to one size"
            )
        return torch.stack(images).contiguous()
