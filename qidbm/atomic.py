"""Atomic file writes: a file is either its old complete self or the new complete one, never half.

Every writer in qidbm that replaces a file (checkpoints, sample arrays and grids, evaluation results,
FID statistics caches, decompressed IDX files, image caches) goes through :func:`atomic_write` or, for
outputs that belong together (a grid and its array), :func:`atomic_write_set`: the content is written
to a temporary file in the target's folder, optionally fsynced, then ``os.replace``-d onto the target
(atomic within one file system on POSIX) and the folder fsynced. On any error, a
``KeyboardInterrupt`` included, the temporary files are removed and the targets are left untouched.

A writer killed with SIGKILL cannot remove its temporary file (``.<name>.<random>.tmp``). Each writer
holds an exclusive ``flock`` on its temporary file while it writes, and every write first removes the
temporary files in its folder that no live writer holds (:func:`remove_stale_temporaries`), so such
leftovers go at the next write in that folder.

Lightning's own ``_atomic_save`` (an fsspec transaction) is not used for local files: fsspec's local
transaction writes its temporary file with ``tempfile.mkstemp()`` in the system temporary folder and
commits with ``shutil.move``, which across file systems is a copy (not atomic), with no fsync, and
the whole checkpoint is first serialised into memory. ``qidbm.lightning.checkpoint_io`` keeps
Lightning's writer for remote URLs (``s3://`` ...), where fsspec's transaction is the mechanism.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

try:  # POSIX advisory locks: a live writer's temporary file is never taken for a stale one
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = ["OutputWriteError", "atomic_save", "atomic_write", "atomic_write_set", "npy_writer",
           "remove_stale_temporaries", "torch_save_failure_cause"]

#: ``.<name>.<8 characters of tempfile's alphabet>.tmp``: the temporary files of :func:`atomic_write`
TEMPORARY_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
#: a temporary file younger than this is never removed (it may belong to a writer that has created it
#: and not yet locked it); without ``flock`` (Windows) only files older than ``STALE_WITHOUT_LOCKS_S`` go
STALE_AFTER_S = 2.0
STALE_WITHOUT_LOCKS_S = 24 * 3600.0


class OutputWriteError(OSError):
    """A set of output files could not be written (:func:`atomic_write_set`): ``path`` is the file whose
    write failed; none of the set was replaced."""

    path: str = ""


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


def remove_stale_temporaries(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files of killed writers from ``folder``; returns the names removed.

    A temporary file of :func:`atomic_write` (``.<name>.<random>.tmp``) is stale when no process holds
    its ``flock`` (the kernel drops a killed writer's lock) and it is older than :data:`STALE_AFTER_S`.
    A live writer's file is left alone, whatever its age. Errors (a read-only folder, a file removed
    meanwhile) are ignored: cleaning never makes a write fail.
    """
    removed: list[str] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not TEMPORARY_NAME.match(entry.name):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if fcntl is None:
                if now - entry.stat().st_mtime > STALE_WITHOUT_LOCKS_S:
                    os.unlink(entry.path)
                    removed.append(entry.name)
                continue
            fd = os.open(entry.path, os.O_RDONLY)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a live writer holds it
            st = os.fstat(fd)
            if now - st.st_mtime > STALE_AFTER_S and os.path.samestat(st, os.stat(entry.path)):
                os.unlink(entry.path)
                removed.append(entry.name)
        except OSError:
            pass
        finally:
            os.close(fd)  # drops the lock
    return removed


class _Temporary:
    """One temporary file of a write: created (and locked) in the target's folder, filled, replaced."""

    def __init__(self, path: str | os.PathLike, mode: int | None) -> None:
        self.path = os.fspath(path)
        self.folder = os.path.dirname(os.path.abspath(self.path))
        self.mode = mode
        self.tmp: str | None = None
        self._lock_fd: int | None = None

    def write(self, writer: Callable[[BinaryIO], Any], fsync: bool) -> None:
        os.makedirs(self.folder, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=self.folder, prefix="." + os.path.basename(self.path) + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            if fcntl is not None:
                try:  # held (through a duplicate) until the file is renamed or removed
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    self._lock_fd = os.dup(fd)
                except OSError:  # a file system without locks
                    pass
            os.chmod(self.tmp, _default_mode(self.path) if self.mode is None else self.mode)
            writer(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())

    def replace(self) -> None:
        os.replace(self.tmp, self.path)
        self.tmp = None
        self.release()

    def discard(self) -> None:
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None
        self.release()

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], Any], *, mode: int | None = None,
                 fsync: bool = True) -> Path:
    """Write ``path`` atomically: ``writer(f)`` fills an open binary file, which then replaces ``path``.

    The temporary file is ``<folder>/.<name>.<random>.tmp`` (the folder is created if needed); stale
    temporary files of killed writers in that folder are removed first (:func:`remove_stale_temporaries`).
    Its mode is ``mode``, or the old file's, or what ``open()`` gives under the umask. ``fsync``: flush
    the file and, after the rename, its folder to the disk (durable checkpoints); caches that can be
    rebuilt pass ``False``. A ``writer`` that raises (including a check of what it wrote) leaves ``path``
    as it was and the exception propagates unchanged. Returns ``path``.
    """
    p = os.fspath(path)
    t = _Temporary(p, mode)
    remove_stale_temporaries(t.folder)
    try:
        t.write(writer, fsync)
        t.replace()
    except BaseException:
        t.discard()
        raise
    if fsync:
        _fsync_dir(t.folder)
    return Path(p)


def atomic_write_set(writes: Sequence[tuple[str | os.PathLike, Callable[[BinaryIO], Any]]], *, fsync: bool = True,
                     what: str = "") -> list[Path]:
    """Write several files as one set: all are replaced, or (on any error) none is.

    Every ``(path, writer)`` is first written to its temporary file (as :func:`atomic_write`); only when
    all are complete are they renamed onto their paths, one after the other (renames do not need space,
    so a full disk or a quota fails before the first). An ``OSError`` while writing is raised as
    :class:`OutputWriteError` naming the file that failed and saying that the previous files were kept
    (``what``: how to name the set in that message, e.g. ``"samples"``); any other error propagates
    unchanged. Returns the paths.
    """
    temps = [_Temporary(p, None) for p, _ in writes]
    for folder in dict.fromkeys(t.folder for t in temps):
        remove_stale_temporaries(folder)
    current = None
    try:
        for t, (_, writer) in zip(temps, writes):
            current = t
            t.write(writer, fsync)
        current = None
        for t in temps:
            t.replace()
    except BaseException as e:
        for t in temps:
            t.discard()
        if isinstance(e, OSError) and not isinstance(e, OutputWriteError) and current is not None:
            kept = ", ".join(os.path.basename(t.path) for t in temps)
            reason = e.strerror or str(e)
            if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                reason += " (the disk or the quota is full)" if e.errno != errno.EFBIG else " (a file size limit)"
            err = OutputWriteError(
                e.errno, f"could not write {current.path}: {reason}; nothing was written{' of the ' + what if what else ''}"
                f" (the previous {kept} there, if any, are kept unchanged). Free space, or write elsewhere")
            err.path = current.path
            raise err from e
        raise
    if fsync:
        for folder in dict.fromkeys(t.folder for t in temps):
            _fsync_dir(folder)
    return [Path(t.path) for t in temps]


class _Stream:
    """A file seen through its ``write`` only: numpy then writes an array in chunks through it, and a write
    that fails raises the OS's error (``ENOSPC``, ``EDQUOT``, ``EFBIG``), where ``ndarray.tofile`` on a full
    disk says only ``OSError: 392000 requested and 249968 written``."""

    def __init__(self, f: BinaryIO) -> None:
        self.write = f.write


def npy_writer(array: Any) -> Callable[[BinaryIO], None]:
    """A writer of ``numpy.save(f, array)`` for :func:`atomic_write` / :func:`atomic_write_set`."""
    import numpy as np

    return lambda f: np.save(_Stream(f), array, allow_pickle=False)


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
