"""Loggers: W&B that runs offline when no API key is set.

``configs/loggers/wandb.yaml`` adds :class:`WandbLogger` to a run beside the run's own loggers.
"""

from __future__ import annotations

import os
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger


def wandb_should_be_offline() -> bool:
    """Whether a :class:`WandbLogger` with ``offline=None`` runs offline.

    ``WANDB_MODE`` decides when set (``online``: online; ``offline``/``dryrun``: offline;
    ``disabled`` is left to W&B, which then records nothing). Otherwise online only when an API key is
    available: ``WANDB_API_KEY``, or a ``~/.netrc`` entry for W&B (what ``wandb login`` writes).
    """
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode:
        return mode in ("offline", "dryrun")
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
    """Lightning's ``WandbLogger`` with ``offline=None`` meaning "offline when no API key is set"
    (:func:`wandb_should_be_offline`).

    Offline runs are written under ``save_dir/wandb`` and can be uploaded later with
    ``wandb sync save_dir/wandb/offline-run-*``.
    """

    def __init__(self, name: str | None = None, save_dir: str = ".", project: str = "qidbm",
                 offline: bool | None = None, log_model: bool = False, **kwargs: Any) -> None:
        if offline is None:
            offline = wandb_should_be_offline()
            if offline and log_model:
                raise ValueError(
                    f"WandbLogger(log_model={log_model!r}) uploads checkpoints, but W&B runs offline here (no "
                    "WANDB_API_KEY, no `wandb login`, or WANDB_MODE is offline): log in (`wandb login` or set "
                    "WANDB_API_KEY), or set log_model: false"
                )
        super().__init__(name=name, save_dir=save_dir, project=project, offline=offline, log_model=log_model, **kwargs)
