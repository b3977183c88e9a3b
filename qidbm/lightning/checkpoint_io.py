"""Lightning checkpoint I/O for qidbm: atomic local writes, data-only reads and clear load errors
(``AtomicCheckpointIO``).

``qidbm fit`` installs it by default. Writing a local checkpoint is :func:`qidbm.checkpoint.atomic_torch_save`
(temporary file in the target folder, fsync, ``os.replace``: a job killed during a save leaves the previous
``last.ckpt`` intact; a state with NaN/Inf is never written); remote URLs (``s3://`` ...) go through
Lightning's own writer, an fsspec transaction. Reading (``--ckpt_path`` of ``qidbm fit`` and ``qidbm
validate``) is :func:`qidbm.checkpoint.read_checkpoint`, data only whatever ``weights_only`` Lightning
passes: a file that holds code is refused before any of it runs; a missing, truncated or foreign file,
or one whose parameters or chains hold NaN/Inf, raises an error naming the file and what to do.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Optional

from lightning.pytorch.plugins.io import TorchCheckpointIO

from qidbm.checkpoint import (CheckpointError, atomic_torch_save, check_finite, read_checkpoint,
                              unreadable_checkpoint_message)

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O with atomic local writes, data-only reads and clear load errors.

    Saving: :func:`atomic_torch_save` (temporary file in the same folder, fsync, ``os.replace``; a
    checkpoint with NaN/Inf parameters or chains is refused). Remote URLs (``s3://`` ...) fall back to
    Lightning's own writer. Loading: always ``weights_only=True``; a file that holds code, a truncated or
    foreign file, or NaN/Inf parameters raise ``ValueError`` naming the file and the cause.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options")
        p = os.fspath(path)
        if "://" in p and not p.startswith("file://"):
            return super().save_checkpoint(checkpoint, path)
        atomic_torch_save(checkpoint, p.removeprefix("file://"))

    def load_checkpoint(self, path, map_location: Optional[Callable] = lambda storage, loc: storage,
                        weights_only: Optional[bool] = None) -> dict[str, Any]:
        # weights_only is ignored: a checkpoint is read as data only (a `weights_only: false` in a config
        # or on the command line cannot turn that off)
        p = os.fspath(path)
        if "://" in p and not p.startswith("file://"):
            try:
                checkpoint = super().load_checkpoint(path, map_location=map_location, weights_only=True)
            except Exception as e:
                raise CheckpointError(unreadable_checkpoint_message(p, e)) from e
        else:
            p = p.removeprefix("file://")
            if not os.path.isfile(p):
                raise FileNotFoundError(f"checkpoint not found: {p}; pass --ckpt_path last (the newest) or an existing .ckpt")
            checkpoint = read_checkpoint(p, map_location=map_location)
        check_finite(checkpoint, p)
        return checkpoint
