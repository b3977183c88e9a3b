"""Loading models from checkpoints written by ``qidbm fit`` (no Lightning or data needed)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import torch

from qidbm.models import BoltzmannMachine, build_model

__all__ = ["CheckpointError", "check_device", "export_checkpoint", "load_checkpoint", "read_checkpoint",
           "unreadable_checkpoint_message"]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (the message names the file, the cause and the fix)."""


def check_device(device: str | torch.device) -> torch.device:
    """Parse ``device`` and check that it exists on this machine; ``ValueError`` saying what to use otherwise."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ValueError(f"unknown device {str(device)!r} ({e}); use cpu, cuda or cuda:N") from e
    if d.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {str(device)!r} was asked for but this machine has no usable CUDA GPU "
                "(torch.cuda.is_available() is False); use --device cpu"
            )
        if d.index is not None and d.index >= torch.cuda.device_count():
            raise ValueError(f"device {str(device)!r} does not exist: this machine has {torch.cuda.device_count()} "
                             "CUDA device(s); use cuda:0 ... or --device cpu")
    elif d.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device {str(device)!r} was asked for but MPS is not available here; use --device cpu")
    return d


def unreadable_checkpoint_message(path: str | os.PathLike, exc: BaseException) -> str:
    """Why ``torch.load(path)`` failed with ``exc``, in words, with what to do.

    Tells apart a file that is not a checkpoint at all (a text file, an image), a truncated or damaged
    checkpoint (a zip archive whose end is missing), a checkpoint with GPU tensors on a machine without
    one, and a complete archive that this torch cannot load.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"could not read checkpoint {p} ({e}); check the path and its permissions"
    if size == 0:
        return (f"could not read checkpoint {p}: the file is empty (0 bytes), so it is truncated: resume from "
                "another checkpoint (qidbm writes checkpoints atomically, so last.ckpt is complete unless it was "
                "copied or edited by hand)")
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        return (f"could not read checkpoint {p}: it is not a checkpoint file (a checkpoint is a zip archive written "
                f"by torch.save; this file starts with {head[:12]!r}, {size} bytes). Pass the .ckpt file written by "
                "`qidbm fit` (e.g. runs/<run>/checkpoints/last.ckpt)")
    if "torch.cuda.is_available() is False" in str(exc):
        return (f"could not read checkpoint {p}: it holds GPU (CUDA) tensors and this machine has no GPU; "
                "load it onto the CPU (--device cpu, or map_location='cpu')")
    if head.startswith(b"PK") and zipfile.is_zipfile(p):
        return (f"could not read checkpoint {p} ({type(exc).__name__}: {exc}). The file is a complete archive but "
                "this torch cannot load it: was it written by another program or a much newer torch? Pass a .ckpt "
                "written by `qidbm fit`")
    return (f"could not read checkpoint {p} ({type(exc).__name__}: {exc}). The file is truncated or damaged: resume "
            "from another one (qidbm writes checkpoints atomically, so last.ckpt is complete unless it was copied "
            "or edited by hand)")


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device | None = "cpu",
                    weights_only: bool = True) -> dict:
    """``torch.load`` of a checkpoint file with clear errors: ``FileNotFoundError`` for a missing file or
    a folder, :class:`CheckpointError` (a ``ValueError``) for anything unreadable."""
    p = Path(path)
    if p.is_dir():
        raise FileNotFoundError(f"{p} is a folder, not a checkpoint; pass the .ckpt file in it (e.g. {p / 'last.ckpt'})")
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}; pass the path of a .ckpt written by `qidbm fit`")
    if isinstance(map_location, (str, torch.device)):
        check_device(map_location)
    try:
        return torch.load(p, map_location=map_location, weights_only=weights_only)
    except Exception as e:  # truncated, not a torch file, foreign objects, GPU tensors without a GPU
        raise CheckpointError(unreadable_checkpoint_message(p, e)) from e


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[BoltzmannMachine, dict]:
    """Rebuild the model stored in a ``qidbm fit`` checkpoint.

    Returns ``(model, info)`` where ``info`` holds ``model_class``, ``model_config``,
    ``data_info`` (dataset, encoding, normalisation: what :func:`qidbm.data.decode` needs to
    turn samples into pixels) and the training hyperparameters. The model is in eval mode.
    """
    from qidbm.lightning.module import check_checkpoint

    p = Path(path)
    ckpt = read_checkpoint(p, map_location=map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{p} is a torch file but not a checkpoint written by `qidbm fit` (no 'state_dict'); "
                              "pass the .ckpt file from the run's checkpoints folder")
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

    ckpt = read_checkpoint(src)
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
