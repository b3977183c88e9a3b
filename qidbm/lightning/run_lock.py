"""Run folders: one ``qidbm fit`` at a time per run folder (POSIX ``flock``), and a new run never into
the checkpoints of another (:func:`check_new_run_folders`)."""

from __future__ import annotations

import errno
import os
import socket
import sys
import time

try:  # POSIX advisory locks (RunLock); elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

import lightning as L

__all__ = ["RunFolderInUseError", "RunFolderNotEmptyError", "RunLock", "check_new_run_folders", "checkpoint_folders"]


class RunFolderInUseError(RuntimeError):
    """Another ``qidbm fit`` holds the lock of a folder this run would write to."""


class RunFolderNotEmptyError(RuntimeError):
    """A new run (no ``--ckpt_path``) would write its checkpoints into a folder that holds another run's."""


def checkpoint_folders(trainer: L.Trainer) -> list[str]:
    """The local folders the run's ``ModelCheckpoint`` callbacks will write to, as Lightning resolves them
    (their ``dirpath``, else ``<save_dir>/<name>/<version>/checkpoints`` of the first logger, else
    ``<default_root_dir>/checkpoints``)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    out: list[str] = []
    for cb in trainer.checkpoint_callbacks:
        if not isinstance(cb, ModelCheckpoint):
            continue
        d = cb.dirpath
        if d is None:
            if trainer.loggers:
                lg = trainer.loggers[0]
                version = lg.version if isinstance(lg.version, str) else f"version_{lg.version}"
                d = os.path.join(lg.save_dir or trainer.default_root_dir, str(lg.name), version, "checkpoints")
            else:
                d = os.path.join(trainer.default_root_dir, "checkpoints")
        d = os.fspath(d)
        if "://" not in d and os.path.abspath(d) not in out:
            out.append(os.path.abspath(d))
    return out


def _checkpoints_in(folder: str) -> list[str]:
    try:
        return sorted(e.name for e in os.scandir(folder) if e.name.endswith(".ckpt") and e.is_file())
    except OSError:
        return []


def check_new_run_folders(trainer: L.Trainer, ckpt_path, overwrite: bool = False) -> list[str]:
    """Refuse a fit whose checkpoint folder holds the checkpoints of another run.

    Lightning's ``ModelCheckpoint`` does not replace a ``last.ckpt`` it did not write: a new run into a
    folder with one writes ``last-v1.ckpt`` beside it, and ``last.ckpt`` (what ``--ckpt_path last``,
    ``qidbm sample`` and ``qidbm evaluate`` read) stays the old run's. So a fit without ``ckpt_path``,
    or with a checkpoint from elsewhere, into a folder that holds ``*.ckpt`` files raises
    :class:`RunFolderNotEmptyError` with the fixes; a resume (``ckpt_path`` ``"last"``, ``"hpc"``,
    ``"best"`` or a file in that folder) goes on. With ``overwrite`` the old checkpoints are removed
    instead (the file named by ``ckpt_path`` apart) and their names returned. Global rank 0 only.
    """
    if not trainer.is_global_zero:
        return []
    path = os.fspath(ckpt_path) if ckpt_path is not None else None
    if path is not None and (path in ("last", "hpc", "best") or path.startswith("registry") or "://" in path):
        return []
    keep = os.path.abspath(path) if path is not None else None
    removed: list[str] = []
    for folder in checkpoint_folders(trainer):
        names = _checkpoints_in(folder)
        if not names:
            continue
        if keep is not None and os.path.dirname(keep) == folder:
            continue  # a checkpoint of this folder's own run: a resume (or a rewind) of that run
        if overwrite:
            for n in names:
                p = os.path.join(folder, n)
                if p != keep:
                    os.unlink(p)
                    removed.append(p)
            continue
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        start = "a new run" if path is None else f"a run from {path}"
        raise RunFolderNotEmptyError(
            f"{folder} holds the checkpoints of another run ({shown}): {start} there would write last-v1.ckpt "
            "beside them and leave last.ckpt to the old run, which --ckpt_path last, `qidbm sample` and `qidbm "
            "evaluate` would then read. Resume that run with --ckpt_path last, give this run a new folder "
            "(trainer.default_root_dir, or the ModelCheckpoint dirpath), or replace the old checkpoints with "
            "--overwrite (nothing was written)")
    if removed:
        print(f"qidbm fit: --overwrite: removed {len(removed)} checkpoint(s) of an earlier run: "
              f"{', '.join(removed[:4])}{' ...' if len(removed) > 4 else ''}", file=sys.stderr, flush=True)
    return removed


class RunLock(L.Callback):
    """One ``qidbm fit`` at a time per run folder.

    Before the fit starts, global rank 0 takes an exclusive, non-blocking ``flock`` on each folder this
    run writes to: the trainer's log folder (``config.yaml``, ``hparams.yaml``, ``metrics.csv``), the
    folders of CSV and TensorBoard loggers, and the ``dirpath`` of every callback that has one
    (``ModelCheckpoint``, ``SampleGrid``, ``FIDCallback``), and creates the folders. The lock file sits
    next to the folder (``<parent>/.<folder>.qidbm-lock``) and names the holder. A second run into a
    locked folder stops with :class:`RunFolderInUseError` naming the folder and the run holding it,
    before it writes anything. The kernel drops the lock when the holder exits, even on SIGKILL, so a
    killed run never leaves a stale lock. Runs whose loggers choose their version folder themselves
    get separate folders as before (the first run's version folder exists from its start); the lock
    catches the folders they share: a fixed checkpoint ``dirpath``, the same logger version, the same
    ``default_root_dir`` without a logger. Not on Windows (no ``fcntl``).

    ``qidbm fit`` calls :meth:`lock_before_fit` before ``trainer.fit``: a CSV logger of the second run
    would otherwise delete the first run's ``metrics.csv`` when the fit sets its loggers up, before any
    callback hook. Used with a plain ``Trainer``, the lock is taken at the callback's ``setup`` (all DDP
    ranks stop together), which is after that point.
    """

    SUFFIX = ".qidbm-lock"

    def __init__(self) -> None:
        self._held: list = []
        self._checked = False

    @staticmethod
    def run_folders(trainer: L.Trainer) -> list[str]:
        from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

        out: list[str] = []

        def add(d) -> None:
            if not isinstance(d, (str, os.PathLike)):
                return
            d = os.fspath(d)
            if d and "://" not in d:
                d = os.path.abspath(d)
                if d not in out:
                    out.append(d)

        add(trainer.log_dir)
        for lg in trainer.loggers:
            if isinstance(lg, (CSVLogger, TensorBoardLogger)):
                add(lg.log_dir)
        for cb in trainer.callbacks:
            if cb is not None and not isinstance(cb, RunLock):
                add(getattr(cb, "dirpath", None))
        return out

    def lock_path(self, folder: str) -> str:
        parent, name = os.path.split(os.path.abspath(folder).rstrip(os.sep))
        return os.path.join(parent, "." + name + self.SUFFIX) if name else os.path.join(folder, self.SUFFIX)

    def acquire(self, folders: list[str]) -> str | None:
        """Lock (and create) every folder; on a conflict release them all and return the error message."""
        if fcntl is None:
            return None
        for d in folders:
            path = self.lock_path(d)
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                f = open(path, "a+")
            except OSError:  # a read-only place: the run fails there anyway, with the OS's own error
                continue
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    f.close()  # a file system without locks: go on unlocked
                    continue
                f.seek(0)
                holder = f.read().strip() or "a process that did not say who it is"
                f.close()
                self.release()
                return (
                    f"another `qidbm fit` is writing to {d} (lock {path}, held by {holder}). Two runs in one folder "
                    "would mix their metrics.csv, config.yaml, hparams.yaml and checkpoints. Wait for that run to "
                    "finish (or stop it), or give this run its own folder: another trainer.default_root_dir, logger "
                    "save_dir/name/version, or ModelCheckpoint dirpath"
                )
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}: "
                    f"{' '.join(sys.argv)[:300]}\n")
            f.flush()
            self._held.append(f)
            try:  # the folder exists from now on, so a run started later picks another logger version
                os.makedirs(d, exist_ok=True)
            except OSError:
                pass
        return None

    def release(self) -> None:
        held, self._held = self._held, []
        for f in held:
            try:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            except OSError:
                pass
            f.close()

    def lock_before_fit(self, trainer: L.Trainer) -> None:
        """Take the locks (global rank 0) before ``trainer.fit``; call it on every rank."""
        self._checked = True
        if trainer.is_global_zero:
            error = self.acquire(self.run_folders(trainer))
            if error is not None:
                self._checked = False
                raise RunFolderInUseError(error)

    def setup(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        if stage != "fit" or self._checked:
            return
        folders = self.run_folders(trainer)  # on every rank: trainer.log_dir is a collective (a broadcast)
        error = self.acquire(folders) if trainer.is_global_zero else None
        if trainer.world_size > 1:
            error = trainer.strategy.broadcast(error)
        if error is not None:
            self.release()
            raise RunFolderInUseError(error)

    def teardown(self, trainer: L.Trainer, pl_module, stage: str) -> None:
        self.release()
        self._checked = False

    def on_exception(self, trainer: L.Trainer, pl_module, exception: BaseException) -> None:
        # Lightning calls no teardown hooks after an exception: free the folders now (in-process reruns)
        self.release()
        self._checked = False
