"""Where the data lives: the data root, the writable cache, and getting the IDX files ready.

Data root: the ``root`` argument, else ``$QIDBM_DATA_DIR``, else ``./data``. Cache root
(writable, for decompressed files and preprocessed tensors): the ``cache_dir`` argument,
else ``$QIDBM_CACHE_DIR``, else ``~/.cache/qidbm/data``.

torchvision's MNIST/FashionMNIST look for the *decompressed* IDX files in
``<root>/<Name>/raw/``. Data shipped as ``.gz`` only (e.g. a read-only shared folder) is
decompressed into ``<cache>/<Name>/raw/`` (same layout) and torchvision is pointed at the
cache root. The source root is never written to. A stamp next to each decompressed file
records the ``.gz`` it came from (path, size, mtime), so a different source is never
mistaken for a cached copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from .idx import IDXError, IMAGES_MAGIC, LABELS_MAGIC, decompress_idx, validate_idx

__all__ = ["DataNotFoundError", "IDX_SPLIT_FILES", "prepare_idx_root", "resolve_cache_dir", "resolve_data_root"]

DATA_ENV = "QIDBM_DATA_DIR"
CACHE_ENV = "QIDBM_CACHE_DIR"

#: (file name, magic number, expected shape) of the four raw files, as torchvision names them.
IDX_SPLIT_FILES: tuple[tuple[str, int, tuple[int | None, ...]], ...] = (
    ("train-images-idx3-ubyte", IMAGES_MAGIC, (None, 28, 28)),
    ("train-labels-idx1-ubyte", LABELS_MAGIC, (None,)),
    ("t10k-images-idx3-ubyte", IMAGES_MAGIC, (None, 28, 28)),
    ("t10k-labels-idx1-ubyte", LABELS_MAGIC, (None,)),
)


class DataNotFoundError(FileNotFoundError):
    """The data set's files are neither in the data root nor obtainable by download."""


def resolve_data_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$QIDBM_DATA_DIR``, else ``./data`` (made absolute, ``~`` expanded)."""
    if root is None or str(root) == "":
        root = os.environ.get(DATA_ENV) or "data"
    return Path(root).expanduser().absolute()


def resolve_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$QIDBM_CACHE_DIR``, else ``~/.cache/qidbm/data``."""
    if cache_dir is None or str(cache_dir) == "":
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "qidbm" / "data"
    return Path(cache_dir).expanduser().absolute()


def _stamp_for(gz: Path) -> dict:
    st = gz.stat()
    return {"source": str(gz.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _stamp_path(dst: Path) -> Path:
    return dst.with_name(dst.name + ".source.json")


def _cached_copy_ok(dst: Path, gz: Path, magic: int, shape: tuple[int | None, ...]) -> bool:
    stamp = _stamp_path(dst)
    if not dst.is_file() or not stamp.is_file():
        return False
    try:
        if json.loads(stamp.read_text()) != _stamp_for(gz):
            return False
        validate_idx(dst, expected_magic=magic, expected_shape=shape)
    except (OSError, ValueError):
        return False
    return True


def _missing_message(name: str, root: Path, cache: Path, missing: list[str], download: bool, why: str = "") -> str:
    files = ", ".join(f"{m}(.gz)" for m in missing)
    return (
        f"{name} data not found: {root / name / 'raw'} lacks {files}{why}. Two ways to fix this:\n"
        f"  1. set `root` (data.root in the config) or the environment variable {DATA_ENV} to a folder "
        f"holding {name}/raw/ with the four IDX files (gzipped or not), e.g. a copy of torchvision's layout;\n"
        f"  2. enable network access and use download=True (currently download={download}) to fetch them "
        f"into {root if _writable(root) else cache}."
    )


def _writable(path: Path) -> bool:
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return os.access(p, os.W_OK)


def _validate_all(raw: Path, files=IDX_SPLIT_FILES) -> None:
    headers = {}
    for fname, magic, shape in files:
        headers[fname] = validate_idx(raw / fname, expected_magic=magic, expected_shape=shape)
    for split in ("train", "t10k"):
        img = headers[f"{split}-images-idx3-ubyte"].shape[0]
        lab = headers[f"{split}-labels-idx1-ubyte"].shape[0]
        if img != lab:
            raise IDXError(
                f"{raw / f'{split}-images-idx3-ubyte'}: {img} images but "
                f"{raw / f'{split}-labels-idx1-ubyte'} has {lab} labels; the files do not belong together. "
                "Replace them with a matching pair (download=True fetches the originals)."
            )


def prepare_idx_root(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    downloader: Callable[[Path], None] | None = None,
) -> Path:
    """Make the four decompressed IDX files of data set ``name`` ("MNIST" or "FashionMNIST")
    available in torchvision's layout and return the root to hand to torchvision.

    Order: (1) all four decompressed in ``<root>/<name>/raw`` -> ``root``; (2) each present in
    the root decompressed or as ``.gz`` -> ``.gz`` files are decompressed (validated) into the
    cache, decompressed ones linked there, and the cache root is returned; (3) a complete
    earlier download in the cache -> the cache root; (4) ``download=True`` -> ``downloader``
    (torchvision's download) into ``root`` if writable, else into the cache; (5) otherwise
    :class:`DataNotFoundError` naming both fixes. Every file used is validated (magic,
    shape, size; gzip CRC when decompressing); a bad one raises ``IDXError`` naming it.
    """
    root = resolve_data_root(root)
    cache = resolve_cache_dir(cache_dir)
    src_raw = root / name / "raw"
    names = [f for f, _, _ in IDX_SPLIT_FILES]

    # (1) torchvision's own layout, ready to use.
    if all((src_raw / f).is_file() for f in names):
        _validate_all(src_raw)
        return root

    # (2) files present in the source, some only gzipped: build the cache copy.
    available = [(src_raw / f).is_file() or (src_raw / f"{f}.gz").is_file() for f in names]
    if all(available):
        dst_raw = cache / name / "raw"
        if dst_raw.resolve() == src_raw.resolve():
            raise ValueError(
                f"cache_dir {cache} is the data root {root}: decompressing there would write into the source "
                f"folder. Set cache_dir / {CACHE_ENV} to another (writable) folder."
            )
        dst_raw.mkdir(parents=True, exist_ok=True)
        for fname, magic, shape in IDX_SPLIT_FILES:
            dst = dst_raw / fname
            plain, gz = src_raw / fname, src_raw / f"{fname}.gz"
            if plain.is_file():
                validate_idx(plain, expected_magic=magic, expected_shape=shape)
                if dst.is_symlink() or dst.exists():
                    if dst.resolve() == plain.resolve():
                        continue
                    dst.unlink()
                try:
                    dst.symlink_to(plain)
                except OSError:  # file systems without symlinks: copy (the source stays untouched)
                    shutil.copyfile(plain, dst)
                _stamp_path(dst).unlink(missing_ok=True)
                continue
            if _cached_copy_ok(dst, gz, magic, shape):
                continue
            if dst.is_symlink():
                dst.unlink()
            decompress_idx(gz, dst, expected_magic=magic, expected_shape=shape)
            _stamp_path(dst).write_text(json.dumps(_stamp_for(gz)))
        _validate_all(dst_raw)
        return cache

    # (3) an earlier download into the cache.
    cache_raw = cache / name / "raw"
    if all((cache_raw / f).is_file() for f in names) and not any(
        _stamp_path(cache_raw / f).is_file() for f in names
    ):
        _validate_all(cache_raw)
        return cache

    missing = [f for f, ok in zip(names, available) if not ok]
    if not download:
        raise DataNotFoundError(_missing_message(name, root, cache, missing, download))

    # (4) download with torchvision (md5-checked .gz, decompressed next to it).
    target = root if _writable(root) else cache
    if downloader is None:
        raise DataNotFoundError(_missing_message(name, root, cache, missing, download, " and no downloader was given"))
    try:
        downloader(target)
    except Exception as e:  # URLError, RuntimeError (all mirrors failed), OSError (no network)
        raise DataNotFoundError(
            _missing_message(name, root, cache, missing, download, f"; downloading failed ({type(e).__name__}: {e})")
        ) from e
    _validate_all(target / name / "raw")
    return target
