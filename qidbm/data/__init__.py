"""Data layer: encoded MNIST / Fashion-MNIST / CelebA, and your own arrays or image folders, for Boltzmann machines.

- :mod:`qidbm.data.datamodules`: ``MNISTDataModule``, ``FashionMNISTDataModule``,
  ``CelebADataModule`` (base ``ImageDataModule``), Lightning data modules serving float32
  batches [B, n_visible]; ``datamodule_from_info`` rebuilds one from a checkpoint's info.
- :mod:`qidbm.data.own`: ``ArrayDataModule`` (rows of a ``.npy`` / ``.npz`` file or of in-memory
  arrays) and ``ImageFolderDataModule`` (torchvision ``ImageFolder``): your own data, with the
  same encodings and ``data_info`` as the built-in modules.
- :mod:`qidbm.data.encodings`: ``encode`` / ``decode`` / ``validate`` for the ``binary``,
  ``bitplanes`` and ``continuous`` encodings, driven by a JSON-able ``info`` dict;
  ``stochastic_binarize`` (the MNIST modules' ``binarization="stochastic"``).
- :mod:`qidbm.data.idx`: IDX reader / writer / validator.
- :mod:`qidbm.data.roots`: data root and cache resolution, decompression of ``.gz`` files.
- :mod:`qidbm.data.batching`: whole-batch dataset and DDP-sharding batch sampler.
- :mod:`qidbm.data.testing`: tiny on-disk data sets in torchvision's layouts, for tests.
- ``python -m qidbm.data.stats``: sizes, mean pixels, loader speed, std-floor effects.
"""

from .batching import IndexBatchSampler, ResumableDataLoader, TensorBatchDataset
from .datamodules import (
    DATAMODULES,
    CelebADataModule,
    FashionMNISTDataModule,
    ImageDataModule,
    MNISTDataModule,
    datamodule_from_info,
)
from .encodings import (
    BIT_ORDER,
    BITS,
    ENCODINGS,
    Encoder,
    compute_normalization,
    decode,
    encode,
    encode_uint8,
    make_info,
    n_visible_for,
    stochastic_binarize,
    validate,
    validate_images,
    validate_info,
)
from .idx import IDXError, read_idx, validate_idx, write_idx
from .own import ArrayDataModule, ImageFolderDataModule
from .roots import DataNotFoundError, prepare_idx_root, resolve_cache_dir, resolve_data_root

__all__ = [
    "ArrayDataModule",
    "BIT_ORDER",
    "BITS",
    "ENCODINGS",
    "DATAMODULES",
    "CelebADataModule",
    "DataNotFoundError",
    "Encoder",
    "FashionMNISTDataModule",
    "IDXError",
    "ImageFolderDataModule",
    "ImageDataModule",
    "IndexBatchSampler",
    "ResumableDataLoader",
    "MNISTDataModule",
    "TensorBatchDataset",
    "compute_normalization",
    "datamodule_from_info",
    "decode",
    "encode",
    "encode_uint8",
    "make_info",
    "n_visible_for",
    "prepare_idx_root",
    "read_idx",
    "resolve_cache_dir",
    "resolve_data_root",
    "stochastic_binarize",
    "validate",
    "validate_idx",
    "validate_images",
    "validate_info",
    "write_idx",
]
