"""Loggers: W&B that runs offline when no API key is set."""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


def wandb_should_be_offline() -> bool:
    """Offline unless an API key is available (``WANDB_API_KEY`` or a ``~/.netrc`` entry for W&B)
    or ``WANDB_MODE=online`` is set explicitly."""
    if os.environ.get("WANDB_MODE", "").lower() == "online":
        return False
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = os.path.expanduser("~/.netrc")
    if os.path.isfile(netrc):
        try:
            with open(netrc) as f:
                if "api.wandb.ai" in f.read():
                    return False
        except OSError:
            pass
    return True


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` with ``offline=None`` meaning "offline when no API key is set".

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with
    ``wandb sync``.
    """

    def __init__(self, name: str | None = None, save_dir: str = ".", project: str = "qidbm",
                 offline: bool | None = None, log_model: bool = False, **kwargs: Any) -> None:
        if offline is None:
            offline = wandb_should_be_offline()
        super().__init__(name=name, save_dir=save_dir, project=project, offline=offline, log_model=log_model, **kwargs)
