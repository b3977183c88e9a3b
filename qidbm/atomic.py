"""Atomic file writes: a file is either its old complete self or the new complete one, never half.

Every writer in qidbm that replaces a file (checkpoints, sample arrays, FID statistics caches,
decompressed IDX files, image caches) goes through :func:`atomic_write`: the content is written to a
temporary file in the target's folder, optionally fsynced, then ``os.replace``-d onto the target
(atomic within one file system on POSIX) and the folder fsynced. On any error, a
``KeyboardInterrupt`` included, the temporary file is removed and the target is left untouched.

Lightning's own ``_atomic_save`` (an fsspec transaction) is not used for local files: fsspec's local
transaction writes its temporary file with ``tempfile.mkstemp()`` in the system temporary folder and
commits with ``shutil.move``, which across file systems is a copy (not atomic), with no fsync, and
the whole checkpoint is first serialised into memory. ``qidbm.lightning.checkpoint_io`` keeps
Lightning's writer for remote URLs (``s3://`` ...), where fsspec's transaction is the mechanism.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

__all__ = ["atomic_save", "atomic_write", "torch_save_failure_cause"]


def _fsync_dir(folder: str) -> None:
    # the rename itself must reach the disk, or a power cut could bring the old name back
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not allow opening a folder
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _default_mode(path: str) -> int:
    """The old file's mode, else what a plain ``open()`` would give (mkstemp makes files 0600)."""
    try:
        return os.stat(path).st_mode & 0o777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], Any], *, mode: int | None = None,
                 fsync: bool = True) -> Path:
    """Write ``path`` atomically: ``writer(f)`` fills an open binary file, which then replaces ``path``.

    The temporary file is ``<folder>/.<name>.<random>.tmp`` (the folder is created if needed). Its mode
    is ``mode``, or the old file's, or what ``open()`` gives under the umask. ``fsync``: flush the file
    and, after the rename, its folder to the disk (durable checkpoints); caches that can be rebuilt pass
    ``False``. A ``writer`` that raises (including a check of what it wrote) leaves ``path`` as it was
    and the exception propagates unchanged. Returns ``path``.
    """
    p = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(p))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(p) + ".", suffix=".tmp")
    try:
        os.chmod(tmp, _default_mode(p) if mode is None else mode)
        with os.fdopen(fd, "wb") as f:
            writer(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if fsync:
        _fsync_dir(folder)
    return Path(p)


def torch_save_failure_cause(e: BaseException) -> BaseException:
    """The real reason a ``torch.save`` failed.

    When a write inside ``torch.save`` fails (``OSError: No space left on device``, or a
    ``KeyboardInterrupt`` from SIGINT), torch's zip writer then fails to close the archive and raises
    its own ``RuntimeError: [enforce fail at inline_container.cc] ... unexpected pos``, which hides
    the first error in the chained traceback. Return the first error instead.
    """
    seen = 0
    while isinstance(e, RuntimeError) and e.__context__ is not None and seen < 5 and (
        "inline_container" in str(e) or "unexpected pos" in str(e) or "PytorchStreamWriter" in str(e)
    ):
        e = e.__context__
        seen += 1
    return e


def atomic_save(obj: Any, path: str | os.PathLike, *, mode: int | None = None, fsync: bool = True) -> Path:
    """``torch.save(obj, path)`` through :func:`atomic_write`.

    A failed save raises its first error (the full disk's ``OSError``, the ``KeyboardInterrupt``), not
    the ``RuntimeError`` torch's zip writer raises after it (:func:`torch_save_failure_cause`).
    """
    import torch

    try:
        return atomic_write(path, lambda f: torch.save(obj, f), mode=mode, fsync=fsync)
    except BaseException as e:
        cause = torch_save_failure_cause(e)
        if cause is not e:
            raise cause.with_traceback(cause.__traceback__) from None
        raise
