"""Lightning checkpoint I/O for qidbm: atomic local writes and clear load errors (``AtomicCheckpointIO``).

``qidbm fit`` installs it by default. Writing a local checkpoint is :func:`qidbm.checkpoint.atomic_torch_save`
(temporary file in the target folder, fsync, ``os.replace``: a job killed during a save leaves the previous
``last.ckpt`` intact); remote URLs (``s3://`` ...) go through Lightning's own writer, an fsspec transaction.
Reading: a missing, truncated or foreign file raises an error naming the file and what to do
(:func:`qidbm.checkpoint.unreadable_checkpoint_message`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Optional

from lightning.pytorch.plugins.io import TorchCheckpointIO

from qidbm.checkpoint import CheckpointError, atomic_torch_save, unreadable_checkpoint_message

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint I/O with atomic local writes and clear load errors.

    Saving: :func:`atomic_torch_save` (temporary file in the same folder, fsync, ``os.replace``).
    Remote URLs (``s3://`` ...) fall back to Lightning's own writer. Loading: a truncated or
    foreign file raises ``ValueError`` naming the file and the likely cause.
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
        p = os.fspath(path)
        if "://" not in p and not os.path.isfile(p):
            raise FileNotFoundError(f"checkpoint not found: {p}; pass --ckpt_path last (the newest) or an existing .ckpt")
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as e:
            raise CheckpointError(unreadable_checkpoint_message(p, e)) from e
