"""Lightning data modules for MNIST, Fashion-MNIST and CelebA, encoded for Boltzmann machines.

Each module loads its split(s) once as one uint8 tensor [N, C, H, W] (via torchvision's
dataset classes), holds out ``val_size`` training images (seeded), and serves float32
batches [B, n_visible] of the chosen encoding (``binary``, ``bitplanes`` or
``continuous``; see :mod:`qidbm.data.encodings`). Batches are gathered and encoded whole
(no per-sample collation) and sharded across DDP ranks by :class:`IndexBatchSampler`.
Labels are dropped. MNIST and Fashion-MNIST binarise at 0.5 or, with
``binarization="stochastic"``, by drawing each pixel (a fixed seeded test set, training images
redrawn each epoch; :class:`MNISTDataModule`).

Typical use (``LightningCLI`` builds the same from YAML ``data:`` sections)::

    dm = MNISTDataModule(encoding="bitplanes", batch_size=600)
    dm.setup()
    dm.n_visible          # 6272
    info = dm.data_info() # JSON-able; store with the model, decode(samples, info) later
    x = next(iter(dm.train_dataloader()))   # float32 [600, 6272], values in {0, 1}
    ref = dm.test_images()                  # [10000, 1, 28, 28] in [0, 1], for FID
"""

from __future__ import annotations

import copy
import hashlib
import importlib
import inspect
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
import torchvision
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from qidbm.atomic import atomic_save
from qidbm.progress import tqdm_kwargs

from .batching import IndexBatchSampler, ResumableDataLoader, StochasticBinaryBatchDataset, TensorBatchDataset
from .encodings import (
    ENCODINGS,
    NORMALIZATIONS,
    Encoder,
    binarization_seed,
    compute_normalization,
    make_info,
    n_visible_for,
    stochastic_binarize,
    validate_info,
)
from .roots import DataNotFoundError, prepare_idx_root, resolve_cache_dir, resolve_data_root

__all__ = ["BINARIZATIONS", "CelebADataModule", "CelebAImageError", "FashionMNISTDataModule", "ImageDataModule",
           "MNISTDataModule", "datamodule_from_info"]

Split = Literal["train", "test"]
#: how the MNIST modules' ``binary`` encoding binarises: at 0.5, or by drawing each pixel
BINARIZATIONS: tuple[str, ...] = ("threshold", "stochastic")


class ImageDataModule(L.LightningDataModule):
    """Base class: in-memory 8-bit images, encoded per batch for Boltzmann machines.

    Args:
        root: data root; default ``$QIDBM_DATA_DIR``, else ``./data``. Read only, never written
            to, except that ``download=True`` saves missing files into it when it is writable.
        encoding: ``"binary"`` (x > 0.5), ``"bitplanes"`` (8 units per pixel) or ``"continuous"``
            (normalised floats for Gaussian visibles).
        batch_size: per-rank batch size of every loader (training drops the last short batch).
        val_size: number of training images held out (seeded by ``seed``) for ``val_dataloader``.
        num_workers: DataLoader workers (0 is fastest for in-memory tensors; CelebA also uses
            them to decode JPEGs the first time).
        download: fetch missing files with torchvision (needs network).
        seed: seed of the validation hold-out and of the training shuffle (``seed + epoch``).
        shuffle: shuffle the training batches each epoch.
        normalize: for ``continuous``: ``"pixel"`` (per-pixel mean/std of the training part),
            ``"global"`` (one mean/std) or ``"none"``. Ignored by the other encodings.
        std_floor: lower bound on the std used by ``normalize`` (constant pixels have std 0).
        cache_dir: writable cache for decompressed and preprocessed files; default
            ``$QIDBM_CACHE_DIR``, else ``~/.cache/qidbm/data``.
    """

    #: torchvision's name of the data set (folder name in the data root).
    dataset_name: ClassVar[str] = ""
    #: the argument that sets how many training images are held out (named in error messages)
    _holdout_option: ClassVar[str] = "val_size"

    def __init__(
        self,
        root: str | None = None,
        encoding: Literal["binary", "bitplanes", "continuous"] = "binary",
        batch_size: int = 600,
        val_size: int = 0,
        num_workers: int = 0,
        download: bool = True,
        seed: int = 0,
        shuffle: bool = True,
        normalize: Literal["pixel", "global", "none"] = "pixel",
        std_floor: float = 0.01,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding={encoding!r}; choose one of {list(ENCODINGS)}")
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize={normalize!r}; choose one of {list(NORMALIZATIONS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if val_size < 0:
            raise ValueError(f"val_size must be >= 0, got {val_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if not std_floor > 0:
            raise ValueError(f"std_floor must be > 0, got {std_floor}")
        self.root = root
        self.encoding = encoding
        self.batch_size = batch_size
        self.val_size = val_size
        self.num_workers = num_workers
        self.download = download
        self.seed = seed
        self.shuffle = shuffle
        self.normalize = normalize
        self.std_floor = std_floor
        self.cache_dir = cache_dir
        # Stored in checkpoints as datamodule_hyper_parameters (subclass arguments included).
        self.save_hyperparameters()
        self._pixels: dict[str, Tensor] = {}  # "train", "val", "test" -> uint8 [N, C, H, W]
        self._info: dict[str, Any] | None = None
        self._encoder: Encoder | None = None
        self._pinned_info: dict[str, Any] | None = None

    # ------------------------------------------------------------------ subclass hooks
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """Image shape [C, H, W] (known without loading data)."""
        raise NotImplementedError

    def _load_split(self, split: Split) -> Tensor:
        """Return the whole split as uint8 [N, C, H, W]."""
        raise NotImplementedError

    def _prepare(self) -> None:
        """Make the files available (decompress, download, preprocess); called by prepare_data."""

    def _extra_info(self) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ paths
    @property
    def data_root(self) -> Path:
        """Resolved data root (``root`` > ``$QIDBM_DATA_DIR`` > ``./data``)."""
        return resolve_data_root(self.root)

    @property
    def cache_root(self) -> Path:
        """Resolved cache root (``cache_dir`` > ``$QIDBM_CACHE_DIR`` > ``~/.cache/qidbm/data``)."""
        return resolve_cache_dir(self.cache_dir)

    # ------------------------------------------------------------------ sizes
    @property
    def n_visible(self) -> int:
        """Visible units: C*H*W, or 8*C*H*W for ``bitplanes`` (known without loading data)."""
        return n_visible_for(self.encoding, self.image_shape)

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        """Decompress / download / preprocess into the cache (Lightning runs this on one process per node)."""
        self._prepare()

    def setup(self, stage: str | None = None) -> None:
        """Load the training split, hold out ``val_size`` images, fix the normalisation."""
        if self._info is not None:
            return
        self._pixels.update(self._load_parts())
        if self._pinned_info is not None:
            # Encode exactly as the checkpoint's model was trained (recorded normalisation).
            self._info = self._reconcile_pinned(self._pinned_info)
        else:
            norm = None
            if self.encoding == "continuous":
                norm = compute_normalization(self._pixels["train"], self.normalize, self.std_floor)
                norm["source"] = self._normalization_source()
            self._info = make_info(
                self.dataset_name, self.encoding, self.image_shape, norm, datamodule=self._recipe(), **self._extra_info()
            )
        self._encoder = Encoder(self._info)

    def _load_parts(self) -> dict[str, Tensor]:
        """The parts :meth:`setup` serves: ``"train"`` and, with ``val_size``, ``"val"`` (held out of
        torchvision's training split, seeded); a ``"test"`` part is optional (else :meth:`_load_split`
        reads it when first asked for)."""
        full = self._load_split("train")
        n = full.shape[0]
        if self.val_size >= n:
            raise ValueError(f"val_size={self.val_size} leaves no training images (the training split has {n})")
        if not self.val_size:
            return {"train": full}
        g = torch.Generator().manual_seed(self.seed)
        perm = torch.randperm(n, generator=g)
        val_idx, train_idx = perm[: self.val_size].sort().values, perm[self.val_size :].sort().values
        return {"train": full[train_idx], "val": full[val_idx]}

    def _reconcile_pinned(self, info: dict[str, Any]) -> dict[str, Any]:
        """The pinned ``info`` as this module serves it (subclasses add what they change, e.g. the binarisation)."""
        return info

    def _normalization_source(self) -> str:
        """Which images the ``continuous`` statistics come from (recorded in ``data_info()``)."""
        return f"{self.dataset_name} train split minus {self.val_size} held-out images (seed {self.seed})"

    def _recipe(self) -> dict[str, Any]:
        """How to rebuild this module (stored in ``data_info()['datamodule']``); machine-specific
        arguments (root, cache_dir, num_workers, download) are left out."""
        params = inspect.signature(type(self).__init__).parameters  # hparams may hold extras (LightningCLI's _class_path)
        skip = ("self", "root", "cache_dir", "num_workers", "download")
        args = {k: v for k, v in self.hparams.items() if k in params and k not in skip}
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": json.loads(json.dumps(args))}

    def pin_info(self, info: dict[str, Any]) -> None:
        """Use a recorded ``info`` (e.g. from a checkpoint) instead of computing the normalisation.

        The data set, encoding and image shape must match this module's; batches are then
        encoded with the recorded statistics, exactly as during training.
        """
        validate_info(info)
        for key, now in (("dataset", self.dataset_name), ("encoding", self.encoding), ("image_shape", list(self.image_shape))):
            if info[key] != now:
                raise ValueError(
                    f"recorded data info has {key}={info[key]!r} but this data module gives {now!r}; "
                    "build the module with datamodule_from_info(info)"
                )
        self._pinned_info = json.loads(json.dumps(info))
        self._info = self._encoder = None

    def _test_pixels(self) -> Tensor:
        if "test" not in self._pixels:
            self._pixels["test"] = self._load_split("test")
        return self._pixels["test"]

    @property
    def encoder(self) -> Encoder:
        """The :class:`Encoder` for :meth:`data_info` (runs :meth:`setup` if needed)."""
        if self._encoder is None:
            self.setup()
        assert self._encoder is not None
        return self._encoder

    def data_info(self) -> dict[str, Any]:
        """JSON-able description of the encoding (runs :meth:`setup` if needed)::

            {"dataset", "encoding", "image_shape": [C, H, W], "n_visible", "bit_order",
             "normalization": {"kind", "mean", "std", "std_floor", ...}, ...}

        Save it with the model; ``qidbm.data.decode(samples, info)`` needs nothing else.
        Returns a copy (changing it does not change how this module encodes).
        """
        return copy.deepcopy(self.encoder.info)

    def encode(self, images: Tensor) -> Tensor:
        """Encode images [N, C, H, W] in [0, 1] (or uint8) with this module's encoding."""
        return self.encoder.encode(images)

    def decode(self, x: Tensor) -> Tensor:
        """Decode visibles [N, n_visible] into images [N, C, H, W] in [0, 1]."""
        return self.encoder.decode(x)

    # ------------------------------------------------------------------ loaders
    #: train_dataloader returns a ResumableDataLoader (Lightning restores its position on a mid-epoch
    #: resume); set by qidbm.lightning.MidEpochResume (which qidbm fit installs by default) and by a
    #: resume from a checkpoint written with one
    resumable_train_loader: bool = False

    def _loader(self, pixels: Tensor, *, train: bool) -> DataLoader:
        sampler = IndexBatchSampler(
            pixels.shape[0],
            self.batch_size,
            shuffle=train and self.shuffle,
            drop_last=train,
            seed=self.seed,
        )
        if train and len(sampler) == 0:
            raise ValueError(
                f"the training part has {pixels.shape[0]} images ({sampler.num_samples} on each of "
                f"{sampler.num_replicas} ranks), fewer than batch_size={self.batch_size}, and training drops "
                f"incomplete batches: lower batch_size or {self._holdout_option}"
            )
        # a resumable training loader: Lightning saves its position in checkpoints and restores it
        loader_class = ResumableDataLoader if train and self.resumable_train_loader else DataLoader
        return loader_class(
            self._batch_dataset(pixels, train=train),
            batch_size=None,  # the sampler yields whole batches; no collation
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _batch_dataset(self, pixels: Tensor, train: bool = False) -> Dataset:
        """The dataset a loader gathers whole batches from (``dataset[list_of_indices]``); ``train``:
        for the training loader."""
        return TensorBatchDataset(pixels, self.encoder)

    def train_dataloader(self) -> DataLoader:
        """Shuffled (``seed + epoch``), sharded, full batches [batch_size, n_visible] float32."""
        self.setup()
        return self._loader(self._pixels["train"], train=True)

    def val_dataloader(self) -> DataLoader | list:
        """The held-out images in order, or ``[]`` (no validation) when ``val_size == 0``."""
        self.setup()
        if "val" not in self._pixels:
            return []
        return self._loader(self._pixels["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        """The test split in order (last batch may be short)."""
        self.setup()
        return self._loader(self._test_pixels(), train=False)

    def test_images(self) -> Tensor:
        """The whole test split encoded then decoded: float32 [N, C, H, W] in [0, 1].

        This is what FID compares generated images against (docs/maths.md, 'FID protocol'): binarised
        at 0.5 for ``binary``, exact 8-bit pixels for ``bitplanes``, the normalise/denormalise
        round trip (clipped) for ``continuous``.
        """
        return self.reference_images("test")

    def reference_images(self, split: Literal["train", "val", "test"] = "test", num_images: int | None = None) -> Tensor:
        """A split's images encoded then decoded as :meth:`test_images` (``num_images``: its first N).

        The training or held-out split serves as FID reference for choosing among checkpoints
        without looking at the test images (``qidbm evaluate --fid-reference train``).
        """
        if num_images is not None and num_images < 2:
            raise ValueError(f"num_images must be >= 2 for FID statistics, got {num_images}")
        enc, pix = self.encoder, self.split_pixels(split)
        pix = pix if num_images is None else pix[:num_images]
        # encode() takes uint8 pixels and, for data modules that hold floats in [0, 1], floats alike
        return torch.cat([enc.decode(enc.encode(pix[i : i + 4096])) for i in range(0, pix.shape[0], 4096)])

    def split_pixels(self, split: Literal["train", "val", "test"]) -> Tensor:
        """The raw images [N, C, H, W] of a split (``train`` excludes the held-out images): uint8, or
        float32 in [0, 1] for data held as floats (:class:`~qidbm.data.ArrayDataModule`)."""
        self.setup()
        if split == "test":
            return self._test_pixels()
        if split not in self._pixels:
            raise ValueError(f"no {split!r} split (val_size={self.val_size})")
        return self._pixels[split]

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning checkpoints: the data info (so samples can be decoded without data), and
        whether the training loader was resumable (its position is then in the checkpoint too)."""
        state: dict[str, Any] = {"data_info": json.loads(json.dumps(self.data_info()))}
        if self.resumable_train_loader:
            state["resumable_train_loader"] = True
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """On resume, refuse data whose encoding differs from the checkpoint's; a checkpoint with the
        training loader's position gets a resumable loader (Lightning restores the position into it)."""
        if state_dict.get("resumable_train_loader"):
            self.resumable_train_loader = True
        saved = state_dict.get("data_info")
        if saved is None:
            return
        now = self.data_info()
        for key in ("dataset", "encoding", "image_shape", "n_visible", "binarization"):
            if saved.get(key) != now.get(key):
                raise ValueError(
                    f"checkpoint was trained on {key}={saved.get(key)!r} but this data module gives "
                    f"{now.get(key)!r}; use the checkpoint's data settings"
                )


class _IDXImageDataModule(ImageDataModule):
    """MNIST-format data sets (raw IDX files read by torchvision).

    Args: as :class:`ImageDataModule`, plus

        binarization: how ``encoding="binary"`` binarises. ``"threshold"`` (default; the DO-EM
            paper's and Taniguchi et al.'s code): ``v = 1[x > 0.5]``. ``"stochastic"`` (the
            likelihood literature's binarised MNIST, Salakhutdinov and Murray 2008): ``v ~
            Bernoulli(x)`` per pixel (:func:`~qidbm.data.encodings.stochastic_binarize`), with

            - the **test set drawn once**, from ``binarization_seed(binarize_seed, "test")``: the same
              10,000 binary images for every run and every evaluation with that seed (the fixed
              stochastically binarised test set the literature reports on);
            - the **training images drawn afresh every epoch** (seed ``(binarize_seed, "train",
              epoch)``), as Salakhutdinov and Hinton's DBM code redraws each training batch it
              uses; the held-out ``val_size`` images are drawn once (``"val"``), like the test set.

            ``data_info()["binarization"]`` records ``{"kind", "seed", "train", "test_sha256"}`` (the
            last a digest of the drawn test bits) and ``data_info()["preprocessing"]`` names it, so
            checkpoints record it, FID reference statistics of the two binarisations are cached
            apart, and an evaluation that rebuilds the module checks that it drew the same test set.
        binarize_seed: seed of the stochastic binarisation (ignored by ``"threshold"``).
    """

    _tv_class: ClassVar[type] = torchvision.datasets.MNIST

    def __init__(
        self,
        root: str | None = None,
        encoding: Literal["binary", "bitplanes", "continuous"] = "binary",
        batch_size: int = 600,
        val_size: int = 0,
        num_workers: int = 0,
        download: bool = True,
        seed: int = 0,
        shuffle: bool = True,
        normalize: Literal["pixel", "global", "none"] = "pixel",
        std_floor: float = 0.01,
        cache_dir: str | None = None,
        binarization: Literal["threshold", "stochastic"] = "threshold",
        binarize_seed: int = 0,
    ) -> None:
        super().__init__(
            root=root,
            encoding=encoding,
            batch_size=batch_size,
            val_size=val_size,
            num_workers=num_workers,
            download=download,
            seed=seed,
            shuffle=shuffle,
            normalize=normalize,
            std_floor=std_floor,
            cache_dir=cache_dir,
        )
        if binarization not in BINARIZATIONS:
            raise ValueError(f"binarization={binarization!r}; choose one of {list(BINARIZATIONS)}")
        if binarization == "stochastic" and encoding != "binary":
            raise ValueError(
                f"binarization='stochastic' draws binary pixels for encoding='binary', got encoding={encoding!r}; "
                "use encoding='binary' (or binarization='threshold')"
            )
        self.binarization = binarization
        self.binarize_seed = int(binarize_seed)
        self._train_draw0: Tensor | None = None

    @property
    def stochastic(self) -> bool:
        return self.binarization == "stochastic"

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1, 28, 28)

    def _tv_root(self) -> Path:
        tv = self._tv_class
        return prepare_idx_root(
            self.dataset_name,
            self.root,
            cache_dir=self.cache_dir,
            download=self.download,
            downloader=lambda target: tv(str(target), train=True, download=True),
        )

    def _prepare(self) -> None:
        self._tv_root()

    def _load_split(self, split: Split) -> Tensor:
        return self.labelled_split(split)[0]

    def labelled_split(self, split: Literal["train", "test"]) -> tuple[Tensor, Tensor]:
        """All images of torchvision's ``train`` (60,000) or ``test`` split with their class labels:
        uint8 [N, 1, 28, 28] and int64 [N] (the held-out validation images are not removed; the
        grey pixels, whatever the binarisation)."""
        ds = self._tv_class(str(self._tv_root()), train=split == "train", download=False)
        return ds.data.to(torch.uint8).unsqueeze(1).contiguous(), ds.targets.to(torch.int64)

    # ------------------------------------------------------------------ stochastic binarisation
    def _load_parts(self) -> dict[str, Tensor]:
        parts = super()._load_parts()  # the training part stays grey: it is redrawn every epoch
        if self.stochastic and "val" in parts:
            parts["val"] = stochastic_binarize(parts["val"], binarization_seed(self.binarize_seed, "val"))
        return parts

    def _test_pixels(self) -> Tensor:
        if "test" not in self._pixels:
            test = self._load_split("test")
            if self.stochastic:
                test = stochastic_binarize(test, binarization_seed(self.binarize_seed, "test"))
            self._pixels["test"] = test
        return self._pixels["test"]

    def _binarization_record(self) -> dict[str, Any]:
        digest = hashlib.sha256(self._test_pixels().numpy().tobytes()).hexdigest()[:16]
        return {"binarization": {"kind": "stochastic", "seed": self.binarize_seed, "train": "redrawn each epoch",
                                 "test_sha256": digest},
                "preprocessing": f"stochastic_binarization_seed_{self.binarize_seed}"}

    def _extra_info(self) -> dict[str, Any]:
        return self._binarization_record() if self.stochastic else {}

    def _reconcile_pinned(self, info: dict[str, Any]) -> dict[str, Any]:
        """A checkpoint's info with this module's binarisation: the recorded one when they agree (its
        test set digest checked), else this module's (evaluating a model on the other binarisation)."""
        info = copy.deepcopy(info)
        recorded = info.pop("binarization", None)
        if recorded is not None and info.get("preprocessing", "").startswith("stochastic_binarization"):
            info.pop("preprocessing")
        recipe = info.get("datamodule", {}).get("init_args")
        if recipe is not None and (self.stochastic or "binarization" in recipe):  # it rebuilds what this serves
            recipe.update(binarization=self.binarization, binarize_seed=self.binarize_seed)
        if not self.stochastic:
            return info
        now = self._binarization_record()
        if recorded is not None and recorded.get("seed") == self.binarize_seed and \
                recorded.get("test_sha256") not in (None, now["binarization"]["test_sha256"]):
            raise ValueError(
                f"the stochastically binarised {self.dataset_name} test set drawn with binarize_seed="
                f"{self.binarize_seed} has digest {now['binarization']['test_sha256']}, but the checkpoint recorded "
                f"{recorded['test_sha256']}: this torch draws other bits from the same seed, so its scores are "
                "not on the recorded test set"
            )
        info.update(now)
        return info

    def _batch_dataset(self, pixels: Tensor, train: bool = False) -> Dataset:
        if train and self.stochastic:
            return StochasticBinaryBatchDataset(pixels, self.encoder, self.binarize_seed)
        return super()._batch_dataset(pixels, train)

    def split_pixels(self, split: Literal["train", "val", "test"]) -> Tensor:
        """As :meth:`ImageDataModule.split_pixels`; with ``binarization="stochastic"`` the images are
        binarised ({0, 255}): test and val as drawn once, train as drawn for epoch 0."""
        pixels = super().split_pixels(split)
        if split != "train" or not self.stochastic:
            return pixels
        if self._train_draw0 is None:
            self._train_draw0 = StochasticBinaryBatchDataset(pixels, self.encoder, self.binarize_seed).epoch_pixels(0)
        return self._train_draw0


class MNISTDataModule(_IDXImageDataModule):
    """MNIST (60000 train / 10000 test, 1x28x28) via ``torchvision.datasets.MNIST``.

    Reads ``<root>/MNIST/raw/`` (decompressed or ``.gz``; see :class:`ImageDataModule`).
    """

    dataset_name = "MNIST"
    _tv_class = torchvision.datasets.MNIST


class FashionMNISTDataModule(_IDXImageDataModule):
    """Fashion-MNIST (60000 / 10000, 1x28x28) via ``torchvision.datasets.FashionMNIST``."""

    dataset_name = "FashionMNIST"
    _tv_class = torchvision.datasets.FashionMNIST


# ---------------------------------------------------------------------------- CelebA
CELEBA_FILES = (
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_attr_celeba.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
CELEBA_CROP = 140


class _CelebAFolder(torchvision.datasets.CelebA):
    """torchvision's CelebA, with the md5 check of the annotation files replaced by a
    presence check, so that re-packed copies and small test folders in the same layout load.
    A missing, truncated or corrupt JPEG raises :class:`CelebAImageError` naming the file."""

    def _check_integrity(self) -> bool:
        base = os.path.join(self.root, self.base_folder)
        return all(os.path.isfile(os.path.join(base, f)) for f in CELEBA_FILES) and os.path.isdir(
            os.path.join(base, "img_align_celeba")
        )

    def __getitem__(self, index: int):
        try:
            return super().__getitem__(index)
        except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError (an OSError), truncated data
            path = os.path.join(self.root, self.base_folder, "img_align_celeba", self.filename[index])
            what = "is missing" if isinstance(e, FileNotFoundError) else f"cannot be read as an image ({type(e).__name__}: {e})"
            raise CelebAImageError(
                f"CelebA image {path} {what}. Restore it from the original img_align_celeba archive (or download "
                f"CelebA again); or, to train without it, delete its line from "
                f"{os.path.join(self.root, self.base_folder, 'list_eval_partition.txt')}"
            ) from e


class CelebAImageError(ValueError):
    """A CelebA JPEG that is missing or cannot be decoded (the message names the file)."""


def _stack_images(batch: list[tuple[Tensor, Any]]) -> Tensor:
    return torch.stack([x for x, _ in batch])


class CelebADataModule(ImageDataModule):
    """CelebA aligned faces via ``torchvision.datasets.CelebA`` (official train/test partition).

    Each image (178x218) is centre-cropped to 140x140, resized to ``image_size`` (PIL bilinear,
    antialiased) and optionally turned to grey (ITU-R 601-2 luma); the uint8 result is cached
    in ``<cache>/CelebA/processed/``. Expects ``<root>/celeba/img_align_celeba/*.jpg`` and the
    five annotation files torchvision reads (list_eval_partition, identity_CelebA,
    list_attr_celeba, list_bbox_celeba, list_landmarks_align_celeba). ``download=True`` uses
    torchvision's Google-Drive download (needs ``gdown`` and network).

    Args: as :class:`ImageDataModule`, plus ``image_size`` (32 or 64) and ``grayscale``.
    """

    dataset_name = "CelebA"

    def __init__(
        self,
        root: str | None = None,
        encoding: Literal["binary", "bitplanes", "continuous"] = "binary",
        batch_size: int = 600,
        val_size: int = 0,
        num_workers: int = 0,
        download: bool = True,
        seed: int = 0,
        shuffle: bool = True,
        normalize: Literal["pixel", "global", "none"] = "pixel",
        std_floor: float = 0.01,
        cache_dir: str | None = None,
        image_size: Literal[32, 64] = 32,
        grayscale: bool = False,
    ) -> None:
        super().__init__(
            root=root,
            encoding=encoding,
            batch_size=batch_size,
            val_size=val_size,
            num_workers=num_workers,
            download=download,
            seed=seed,
            shuffle=shuffle,
            normalize=normalize,
            std_floor=std_floor,
            cache_dir=cache_dir,
        )
        if image_size not in (32, 64):
            raise ValueError(f"image_size must be 32 or 64, got {image_size}")
        self.image_size = image_size
        self.grayscale = grayscale

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (1 if self.grayscale else 3, self.image_size, self.image_size)

    @property
    def preprocessing(self) -> str:
        """How raw images become the tensor (recorded in ``data_info()``)."""
        return f"center_crop_{CELEBA_CROP}_resize_{self.image_size}_bilinear" + ("_grayscale" if self.grayscale else "")

    def _extra_info(self) -> dict[str, Any]:
        return {"preprocessing": self.preprocessing}

    def transform(self) -> torchvision.transforms.Compose:
        """PIL image -> uint8 tensor [C, image_size, image_size]."""
        T = torchvision.transforms
        steps = [T.CenterCrop(CELEBA_CROP), T.Resize(self.image_size, interpolation=T.InterpolationMode.BILINEAR)]
        if self.grayscale:
            steps.append(T.Grayscale(num_output_channels=1))
        steps.append(T.PILToTensor())
        return T.Compose(steps)

    def _find_root(self) -> Path:
        root = self.data_root
        base = root / "celeba"
        missing = [f for f in CELEBA_FILES if not (base / f).is_file()]
        if not (base / "img_align_celeba").is_dir():
            missing.insert(0, "img_align_celeba/")
        if not missing:
            return root
        cache = self.cache_root
        if (cache / "celeba").is_dir() and all((cache / "celeba" / f).is_file() for f in CELEBA_FILES) and (
            cache / "celeba" / "img_align_celeba"
        ).is_dir():
            return cache  # an earlier download into the cache
        fixes = (
            f"Two ways to fix this:\n  1. set `root` (data.root in the config) or QIDBM_DATA_DIR to a folder holding "
            f"celeba/ in torchvision's layout (img_align_celeba/*.jpg and {', '.join(CELEBA_FILES)});\n"
            f"  2. enable network access, install gdown and use download=True (currently download={self.download})."
        )
        if not self.download:
            raise DataNotFoundError(f"CelebA data not found: {base} lacks {', '.join(missing)}. {fixes}")
        target = root if os.access(root if root.exists() else root.parent, os.W_OK) else cache
        try:
            torchvision.datasets.CelebA(str(target), split="all", target_type=[], download=True)
        except Exception as e:
            raise DataNotFoundError(
                f"CelebA data not found: {base} lacks {', '.join(missing)}, and downloading failed "
                f"({type(e).__name__}: {e}). {fixes}"
            ) from e
        return target

    def _cache_file(self, root: Path, split: Split) -> Path:
        part = root / "celeba" / "list_eval_partition.txt"
        st = part.stat()
        key = hashlib.sha1(
            json.dumps([str(root.resolve()), st.st_size, st.st_mtime_ns, self.preprocessing, torchvision.__version__]).encode()
        ).hexdigest()[:12]
        return self.cache_root / "CelebA" / "processed" / f"{split}_{self.preprocessing}_{key}.pt"

    def _prepare(self) -> None:
        for split in ("train", "test"):
            self._load_split(split)  # type: ignore[arg-type]

    def _load_split(self, split: Split) -> Tensor:
        root = self._find_root()
        cached = self._cache_file(root, split)
        if cached.is_file():
            try:
                return torch.load(cached, weights_only=True)
            except Exception:  # a damaged cache file is rebuilt, never trusted
                cached.unlink(missing_ok=True)
        ds = _CelebAFolder(str(root), split=split, target_type=[], transform=self.transform(), download=False)
        if len(ds) == 0:
            raise ValueError(f"{root / 'celeba' / 'list_eval_partition.txt'} lists no {split!r} images")
        loader = DataLoader(ds, batch_size=256, num_workers=self.num_workers, collate_fn=_stack_images)
        pixels = torch.cat(
            [b for b in tqdm(loader, desc=f"CelebA {split} -> {self.image_size}px", leave=False, disable=len(loader) < 4,
                             **tqdm_kwargs())]
        ).contiguous()
        atomic_save(pixels, cached, mode=0o600, fsync=False)
        return pixels


DATAMODULES: dict[str, type[ImageDataModule]] = {
    "MNIST": MNISTDataModule,
    "FashionMNIST": FashionMNISTDataModule,
    "CelebA": CelebADataModule,
}


def datamodule_from_info(info: dict[str, Any], root: str | None = None, **overrides: Any) -> ImageDataModule:
    """Rebuild the data module a model was trained on from its recorded ``info``.

    Uses ``info["datamodule"]`` (class path and arguments, recorded by ``data_info()``) when
    present, else the data set name and image shape. ``root`` and ``overrides`` (e.g.
    ``batch_size``, ``num_workers``, ``download``, ``cache_dir``) replace recorded arguments.
    The module is pinned to ``info`` (:meth:`ImageDataModule.pin_info`), so its batches are
    encoded with the recorded normalisation even if the data changed since.
    """
    validate_info(info)
    recipe = info.get("datamodule") or {}
    cls: type[ImageDataModule] | None = None
    if "class_path" in recipe:
        module, _, name = recipe["class_path"].rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            cls = None
    if cls is None:
        if info["dataset"] not in DATAMODULES:
            raise ValueError(f"unknown dataset {info['dataset']!r} in data info; known: {sorted(DATAMODULES)}")
        cls = DATAMODULES[info["dataset"]]
    params = inspect.signature(cls.__init__).parameters
    args: dict[str, Any] = {k: v for k, v in recipe.get("init_args", {}).items() if k in params}
    args["encoding"] = info["encoding"]
    norm = info["normalization"]
    if info["encoding"] == "continuous":
        args["normalize"] = norm["kind"]
        if norm.get("std_floor"):
            args["std_floor"] = norm["std_floor"]
    if issubclass(cls, CelebADataModule):
        c, h, _ = info["image_shape"]
        args.update(image_size=h, grayscale=c == 1)
    args.update(root=root, **overrides)
    dm = cls(**args)
    dm.pin_info(info)
    return dm
