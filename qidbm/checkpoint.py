"""Loading models from checkpoints written by ``qidbm fit`` (no Lightning or data needed)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from qidbm.models import BoltzmannMachine, build_model


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[BoltzmannMachine, dict]:
    """Rebuild the model stored in a ``qidbm fit`` checkpoint.

    Returns ``(model, info)`` where ``info`` holds ``model_class``, ``model_config``,
    ``data_info`` (dataset, encoding, normalisation: what :func:`qidbm.data.decode` needs to
    turn samples into pixels) and the training hyperparameters. The model is in eval mode.
    """
    from qidbm.lightning.module import check_checkpoint

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}; pass the path of a .ckpt written by `qidbm fit`")
    try:
        ckpt = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or not a torch file
        raise ValueError(f"could not read checkpoint {p}: {e}. Is the file complete (not cut by a killed job)?") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ValueError(f"{p} is not a Lightning checkpoint (no 'state_dict')")
    info = dict(check_checkpoint(ckpt))
    model = build_model(info["model_class"], info["model_config"])
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {p} does not match {info['model_class']}: missing {missing}, unexpected {unexpected}")
    info["hyper_parameters"] = ckpt.get("hyper_parameters", {})
    info["epoch"] = ckpt.get("epoch")
    info["global_step"] = ckpt.get("global_step")
    model.eval()
    return model, info


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Write a slim copy of a ``qidbm fit`` checkpoint for sharing: the model's weights, the
    qidbm section (model class and config, data info) and the hyperparameters, without the
    optimizer state, persistent chains and loop state (not needed by ``qidbm sample`` or
    ``qidbm evaluate``; the slim file cannot resume training). Written atomically."""
    from qidbm.lightning.module import check_checkpoint

    ckpt = torch.load(Path(src), map_location="cpu", weights_only=True)
    info = dict(check_checkpoint(ckpt))
    info["chains_per_rank"] = [None]
    info["generator_state_per_rank"] = [None]
    slim = {
        "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")},
        "qidbm": info,
        "hyper_parameters": ckpt.get("hyper_parameters", {}),
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "pytorch-lightning_version": ckpt.get("pytorch-lightning_version"),
    }
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(slim, tmp)
    os.replace(tmp, dst)
    return dst
