"""Reference FID statistics, computed once and cached on disk.

One job: the ``(mu, sigma)`` of a reference image set (e.g. the MNIST test split in
one encoding) under one Inception network, stored as an ``.npz`` file whose name and
contents carry the key and the identity of the weights file, so that a different
key or a different network is never served from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from filelock import FileLock

from qidbm.atomic import atomic_write
from qidbm.metrics.fid import FIDAccumulator, ImagesLike
from qidbm.metrics.inception import weights_identity

__all__ = ["CACHE_DIR_ENV", "REFERENCE_SPLITS", "TRAIN_REFERENCE_SIZE", "data_reference_key", "default_cache_dir",
           "reference_size", "reference_stats", "reference_stats_path"]

#: environment variable naming the qidbm cache root (FID stats go to ``<root>/fid``)
CACHE_DIR_ENV = "QIDBM_CACHE_DIR"
_STATS_FORMAT_VERSION = 1


def default_cache_dir() -> Path:
    """``$QIDBM_CACHE_DIR/fid`` if set, else ``~/.cache/qidbm/fid``."""
    root = os.environ.get(CACHE_DIR_ENV, "")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "qidbm") / "fid"


def _canonical_key(key: Mapping[str, Any] | str) -> str:
    if isinstance(key, str):
        if not key:
            raise ValueError("reference-stats key must be a non-empty string or dict.")
        return key
    if isinstance(key, Mapping):
        if not key:
            raise ValueError("reference-stats key dict is empty; use e.g. {'dataset': 'mnist', 'split': 'test', ...}.")
        return json.dumps(dict(key), sort_keys=True, default=str, separators=(",", ":"))
    raise TypeError(f"reference-stats key must be a dict or str, got {type(key).__name__}.")


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:limit]


def _stats_path(canon: str, readable: str, wid: str, cache_dir: str | os.PathLike | None) -> Path:
    digest = hashlib.sha256(f"{canon}\n{wid}".encode()).hexdigest()[:16]
    wname = _slug(wid.split(":")[0].removesuffix(".pth"), 40)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{_slug(readable, 80)}__{wname}__{digest}.npz"


def _readable_key(key: Mapping[str, Any] | str) -> str:
    if isinstance(key, Mapping):
        return "_".join(f"{k}={v}" for k, v in sorted(dict(key).items(), key=lambda kv: str(kv[0])))
    return str(key)


REFERENCE_SPLITS: tuple[str, ...] = ("test", "train", "val")
TRAIN_REFERENCE_SIZE = 10000  # the training split as FID reference: as many images as the test set


def reference_size(split: str, num_images: int | None, available: int) -> int | None:
    """How many of ``split``'s first images are the FID reference: ``num_images`` if given, else
    all of test or val and the first :data:`TRAIN_REFERENCE_SIZE` of train; never more than the
    ``available`` ones, so the cache key and the printout name the images used (None: all)."""
    n = num_images if num_images is not None else (TRAIN_REFERENCE_SIZE if split == "train" else None)
    return None if n is None else min(int(n), available)


def data_reference_key(data_info: Mapping[str, Any], split: str = "test", num_images: int | None = None) -> dict:
    """The cache key of a data set's FID reference: data set, split, encoding and preprocessing,
    plus ``num_images`` when only the split's first N images are the reference (the whole test
    split keeps the key it always had, so existing caches stay valid)."""
    if split not in REFERENCE_SPLITS:
        raise ValueError(f"FID reference split must be one of {list(REFERENCE_SPLITS)}, got {split!r}")
    key = {"dataset": data_info["dataset"], "split": split, "encoding": data_info["encoding"],
           "preprocessing": data_info.get("preprocessing")}
    if num_images is not None:
        key["num_images"] = int(num_images)
    return key


def reference_stats_path(
    key: Mapping[str, Any] | str,
    cache_dir: str | os.PathLike | None = None,
    weights_path: str | os.PathLike | None = None,
) -> Path:
    """Cache file for the reference statistics of ``key`` under the weights in use.

    The name holds a readable slug of the key (``dataset=mnist_split=test_...``), the
    weights file name and a sha256 digest of (key, weights identity), so a different
    key or a different network never maps to the same file.
    """
    return _stats_path(_canonical_key(key), _readable_key(key), weights_identity(weights_path), cache_dir)


def _load_stats(path: Path, canon: str, wid: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != canon or str(z["weights"]) != wid or int(z["version"]) != _STATS_FORMAT_VERSION:
                warnings.warn(f"FID stats cache {path} does not match its key/weights; recomputing.", stacklevel=3)
                return None
            return z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    except Exception as exc:  # truncated or foreign file: recompute rather than fail
        warnings.warn(f"FID stats cache {path} is unreadable ({exc}); recomputing.", stacklevel=3)
        return None


def _save_stats_atomic(path: Path, **arrays: Any) -> None:
    # readers see the old file or the whole new one; a file object, so numpy does not append ".npz"
    atomic_write(path, lambda f: np.savez(f, **arrays), mode=0o600, fsync=False)


def reference_stats(
    key: Mapping[str, Any] | str,
    images_fn: Callable[[], ImagesLike],
    cache_dir: str | os.PathLike | None = None,
    *,
    weights_path: str | os.PathLike | None = None,
    accumulator: FIDAccumulator | None = None,
    batch_size: int = 100,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference ``(mu, sigma)`` for ``key``, computed once and cached on disk.

    Args:
        key: identifies the reference set, e.g. ``{"dataset": "mnist", "split": "test",
            "encoding": "binary"}`` (or a string).
        images_fn: called only on a cache miss; returns the reference images (a tensor
            or an iterable of tensors, see :func:`qidbm.metrics.fid.prepare_images`).
        cache_dir: directory for the ``.npz`` files (default :func:`default_cache_dir`).
        weights_path: Inception weights (see :func:`qidbm.metrics.inception.build_fid_inception`);
            its identity (name, size, sha256) is part of the cache key.
        accumulator: reuse this :class:`~qidbm.metrics.fid.FIDAccumulator`'s network and
            weights identity (it is reset before and after); ``weights_path`` is then ignored.
        batch_size, device, progress: for a new accumulator.

    The file stores ``mu``, ``sigma``, ``n``, the canonical key and the weights
    identity, and is written atomically (temporary file + ``os.replace``); a ``.lock`` file beside
    it lets one process compute it while the others wait and then read it.
    """
    canon = _canonical_key(key)
    if accumulator is not None:
        if accumulator.weights_identity is None:
            raise ValueError("reference_stats needs an Inception accumulator, not a custom feature extractor.")
        wid = accumulator.weights_identity
        if accumulator.bf16:  # approximate features must never be served as exact ones
            wid += "+bf16-autocast"
    else:
        wid = weights_identity(weights_path)
    path = _stats_path(canon, _readable_key(key), wid, cache_dir)
    if path.is_file():
        cached = _load_stats(path, canon, wid)
        if cached is not None:
            return cached
    # two evaluations started together on a new data set would both spend minutes on the same
    # statistics: the second waits for the first's file instead
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock"):
        if path.is_file():
            cached = _load_stats(path, canon, wid)
            if cached is not None:
                return cached
        return _compute_and_save(path, canon, wid, images_fn, accumulator, weights_path, batch_size, device, progress)


def _compute_and_save(path: Path, canon: str, wid: str, images_fn: Callable[[], ImagesLike],
                      accumulator: FIDAccumulator | None, weights_path, batch_size: int, device,
                      progress: bool) -> tuple[np.ndarray, np.ndarray]:
    acc = accumulator
    if acc is None:
        acc = FIDAccumulator(weights_path, batch_size=batch_size, device=device, progress=progress)
    acc.reset()
    acc.update(images_fn())
    mu, sigma = acc.compute_stats()
    n = acc.num_samples
    acc.reset()
    _save_stats_atomic(
        path, mu=mu, sigma=sigma, n=np.int64(n), key=np.str_(canon), weights=np.str_(wid),
        version=np.int64(_STATS_FORMAT_VERSION),
    )
    return mu, sigma
