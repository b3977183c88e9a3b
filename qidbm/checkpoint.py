"""The qidbm checkpoint format: its ``qidbm`` section, and reading, writing and checking checkpoint files.

A checkpoint written by ``qidbm fit`` is a Lightning checkpoint with a ``qidbm`` section
(:func:`checkpoint_section`, checked by :func:`check_checkpoint`): format version, model class and
config, data info, persistent chains and generator state per DDP rank, the optimizer settings and
centering offsets. This module needs neither Lightning nor data: ``qidbm sample``/``evaluate`` and
:func:`load_checkpoint` rebuild the model from it alone.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from qidbm.atomic import atomic_save
from qidbm.models import MODEL_CLASSES, BoltzmannMachine, build_model

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "NonFiniteCheckpointError", "atomic_torch_save", "check_checkpoint",
           "check_device", "check_finite", "checkpoint_section", "export_checkpoint", "load_checkpoint",
           "non_finite_entries", "not_a_checkpoint_message", "read_checkpoint", "safe_torch_load",
           "unreadable_checkpoint_message"]

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read (the message names the file, the cause and the fix)."""


class NonFiniteCheckpointError(FloatingPointError):
    """A checkpoint about to be written holds NaN/Inf values: it is not written (the previous file is kept)."""


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


def _holds_code(exc: BaseException) -> str | None:
    """For the error of a ``weights_only`` load that met a pickled call: the callable's name (or ``""``);
    None for any other error."""
    text = str(exc)
    if "Weights only load failed" not in text and "WeightsUnpickler" not in text:
        return None
    m = re.search(r"GLOBAL (\S+)", text)
    return m.group(1).rstrip(".,:;") if m else ""


def _first_line(exc: BaseException) -> str:
    """``Type: first sentence`` of an error (torch's messages go on for lines of advice that do not apply)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if len(text) > 120 and ". " in text:
        text = text[:text.index(". ") + 1]
    return f"{type(exc).__name__}: {text}"


def unreadable_checkpoint_message(path: str | os.PathLike, exc: BaseException, what: str = "checkpoint") -> str:
    """Why ``torch.load(path)`` failed with ``exc``, in words, with what to do.

    Tells apart a file that holds code (a pickled call, refused: qidbm loads files as data only), a file
    that is not a checkpoint at all (a text file, an image), a truncated or damaged checkpoint (a zip
    archive whose end is missing), a checkpoint with GPU tensors on a machine without one, and a complete
    archive that this torch cannot load. A remote URL (``s3://`` ...) is not inspected: the message names
    it and the error. ``what`` names the kind of file (``"checkpoint"``, ``"FID Inception weights"``, ...);
    the advice on checkpoints (resume from another, pass the ``.ckpt`` of ``qidbm fit``) is given for
    checkpoints only, a caller adds its own for other files.
    """
    ckpt = what == "checkpoint"
    code = _holds_code(exc)
    if code is not None:
        call = f" (a pickled call of {code})" if code else ""
        return (f"could not read {what} {os.fspath(path)}: it holds code{call}, not only tensors and plain data, "
                "and was refused: loading it could run that code. qidbm reads such files as data only (torch.load "
                "with weights_only=True)" + ("; pass a .ckpt written by `qidbm fit`" if ckpt else "")
                + ", and load this file nowhere else unless you trust where it came from")
    if "://" in os.fspath(path):
        return f"could not read {what} {os.fspath(path)} ({_first_line(exc)})"
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        return f"could not read {what} {p} ({e}); check the path and its permissions"
    if size == 0:
        return (f"could not read {what} {p}: the file is empty (0 bytes), so it is truncated"
                + (": resume from another checkpoint (qidbm writes checkpoints atomically, so last.ckpt is complete "
                   "unless it was copied or edited by hand)" if ckpt else ""))
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        if ckpt:
            return (f"could not read checkpoint {p}: it is not a checkpoint file (a checkpoint is a zip archive "
                    f"written by torch.save; this file starts with {head[:12]!r}, {size} bytes). Pass the .ckpt file "
                    "written by `qidbm fit` (e.g. runs/<run>/checkpoints/last.ckpt)")
        return (f"could not read {what} {p}: it is not a torch file (torch.save writes a zip archive; this file "
                f"starts with {head[:12]!r}, {size} bytes)")
    if "torch.cuda.is_available() is False" in str(exc):
        return (f"could not read {what} {p}: it holds GPU (CUDA) tensors and this machine has no GPU; "
                "load it onto the CPU (--device cpu, or map_location='cpu')")
    if head.startswith(b"PK") and zipfile.is_zipfile(p):
        return (f"could not read {what} {p} ({_first_line(exc)}). The file is a complete archive but "
                "this torch cannot load it: was it written by another program or a much newer torch?"
                + (" Pass a .ckpt written by `qidbm fit`" if ckpt else ""))
    return (f"could not read {what} {p} ({_first_line(exc)}). The file is truncated or damaged"
            + (": resume from another one (qidbm writes checkpoints atomically, so last.ckpt is complete unless it "
               "was copied or edited by hand)" if ckpt else ""))


def safe_torch_load(path: str | os.PathLike, map_location: Any = "cpu", *, what: str = "checkpoint",
                    mmap: bool = False, data: bytes | None = None) -> Any:
    """``torch.load`` of a local file as data only: the one reader of checkpoints and weights in qidbm.

    ``weights_only=True`` always (passed explicitly, so ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` cannot turn it
    off): a file whose pickle calls anything but torch's tensor and container constructors is refused
    before any of it runs. Any failure is a :class:`CheckpointError` saying why
    (:func:`unreadable_checkpoint_message`; ``what`` names the kind of file); a missing file is a
    ``FileNotFoundError``. ``data``: the file's bytes, read already (they are what is loaded; ``path``
    names them in messages).
    """
    p = Path(path)
    if data is None and not p.is_file():
        raise FileNotFoundError(f"no {what} at {p}" + ("" if not p.is_dir() else " (it is a folder)"))
    try:
        if data is not None:
            import io

            return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
        return torch.load(p, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated, not a torch file, code, foreign objects, GPU tensors without a GPU
        raise CheckpointError(unreadable_checkpoint_message(p, e, what)) from e


def non_finite_entries(checkpoint: Any) -> list[str]:
    """The tensors of a checkpoint that hold NaN/Inf: its ``state_dict`` entries and its persistent chains
    (``qidbm`` section), each as ``"name: k of n values"``; empty when all are finite (or there are none)."""
    if not isinstance(checkpoint, dict):
        return []
    named: list[tuple[str, torch.Tensor]] = []
    state = checkpoint.get("state_dict")
    if isinstance(state, dict):
        named += [(str(k), v) for k, v in state.items()]
    info = checkpoint.get("qidbm")
    if isinstance(info, dict):
        for r, chains in enumerate(info.get("chains_per_rank") or []):
            for l, c in enumerate(chains or []):
                named.append((f"persistent chains (rank {r}, layer {l})", c))
    named = [(k, v) for k, v in named if isinstance(v, torch.Tensor) and (v.is_floating_point() or v.is_complex())
             and v.numel()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(v).all().cpu() for _, v in named])  # one reduction per tensor
    if bool(ok.all()):
        return []
    return [f"{k}: {int((~torch.isfinite(v)).sum())} of {v.numel()} values" for (k, v), good in zip(named, ok.tolist())
            if not good]


def check_finite(checkpoint: Any, path: str | os.PathLike) -> None:
    """:class:`CheckpointError` naming the NaN/Inf tensors of a checkpoint read from ``path`` (none: nothing)."""
    bad = non_finite_entries(checkpoint)
    if bad:
        raise CheckpointError(
            f"checkpoint {os.fspath(path)} holds NaN/Inf values ({'; '.join(bad[:3])}{'; ...' if len(bad) > 3 else ''})"
            ": it was saved from a run that diverged, and its samples or scores would be meaningless (blank "
            "images, nan log-likelihoods). Use an earlier checkpoint of the run (its checkpoints folder), or "
            "retrain with a lower learning rate"
        )


def not_a_checkpoint_message(path: str | os.PathLike, why: str = "") -> str:
    """For a file that ``torch.load`` reads but that is not a ``qidbm fit`` checkpoint (``why``: what is missing)."""
    return (f"{path} is a torch file but not a checkpoint written by `qidbm fit`{why}; pass the .ckpt file from the "
            "run's checkpoints folder")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` of a checkpoint that never leaves a partial file at ``path``.

    :func:`qidbm.atomic.atomic_save`: writes ``<folder>/.<name>.<random>.tmp``, flushes and fsyncs it,
    then ``os.replace``-s it onto ``path`` and fsyncs the folder. On any error (including a
    ``KeyboardInterrupt``) the temporary file is removed and the previous ``path`` (if any) is untouched;
    an ``OSError`` (disk full, quota, ...) is raised again naming the checkpoint and saying so. A
    checkpoint whose ``state_dict`` or chains hold NaN/Inf is never written
    (:class:`NonFiniteCheckpointError`, the previous file kept).
    """
    path = os.fspath(path)
    bad = non_finite_entries(obj)
    if bad:
        raise NonFiniteCheckpointError(
            f"refusing to write checkpoint {path}: it holds NaN/Inf values ({'; '.join(bad[:3])}"
            f"{'; ...' if len(bad) > 3 else ''}: the run diverged); the previous file there (if any) is kept "
            "unchanged. Lower the learning rate (model.init_args.optimizer.init_args.lr) or train with FaultGuard(on_fault='restore'), "
            "and resume from the last good checkpoint with --ckpt_path last")
    try:
        atomic_save(obj, path)
    except OSError as cause:
        # say what failed and that nothing was lost, with the OS's reason first (disk full, quota, ...)
        raise OSError(cause.errno, f"{cause.strerror or cause} while writing checkpoint {path}; the previous "
                      f"file there (if any) is kept unchanged. Free space (or fix the folder) and resume with "
                      "--ckpt_path last") from cause


def checkpoint_section(*, model: BoltzmannMachine, data_info: dict | None, chains_per_rank: list,
                       generator_state_per_rank: list, optimizer_settings: list | None,
                       centering_offsets: list | None) -> dict:
    """The ``qidbm`` section of a checkpoint (what :func:`check_checkpoint` and :func:`load_checkpoint` read)."""
    return {
        "format_version": CHECKPOINT_FORMAT,
        "model_class": type(model).__name__,
        "model_config": model.config(),
        "data_info": data_info,
        "chains_per_rank": chains_per_rank,
        "generator_state_per_rank": generator_state_per_rank,
        "optimizer_settings": optimizer_settings,
        "centering_offsets": centering_offsets,
    }


def check_checkpoint(checkpoint: dict, expected_class: str | None = None) -> dict:
    """Validate the qidbm section of a checkpoint and return it (clear errors otherwise)."""
    info = checkpoint.get("qidbm")
    if info is None:
        module = (checkpoint.get("hyper_parameters") or {}).get("_class_path")
        if isinstance(module, str) and module.rsplit(".", 1)[-1] != "BoltzmannModule":
            raise ValueError(
                f"this checkpoint was written by `qidbm fit` for a {module}, not for a Boltzmann machine "
                "(qidbm.lightning.BoltzmannModule): `qidbm sample` and `qidbm evaluate` read Boltzmann machine "
                f"checkpoints only, and a BoltzmannModule config cannot resume it; load it with "
                f"{module}.load_from_checkpoint(PATH) or resume it with its own config"
            )
        raise ValueError(
            "this checkpoint has no 'qidbm' section: it was not written by `qidbm fit` for a Boltzmann machine "
            "(or predates checkpoint format 1); retrain with this version of qidbm"
        )
    fmt = info.get("format_version")
    if fmt != CHECKPOINT_FORMAT:
        raise ValueError(f"checkpoint format {fmt} is not supported by this qidbm (format {CHECKPOINT_FORMAT})")
    cls = info.get("model_class")
    if cls not in MODEL_CLASSES:
        raise ValueError(f"checkpoint model class {cls!r} is unknown; known: {sorted(MODEL_CLASSES)}")
    if expected_class is not None and cls != expected_class:
        raise ValueError(
            f"this checkpoint holds a {cls} but the module was built with a {expected_class}; "
            f"use a config whose model is {cls}, or load it with qidbm.load_checkpoint"
        )
    return info


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", *, mmap: bool = False) -> dict:
    """Read a checkpoint file as data only (:func:`safe_torch_load`) with clear errors: ``FileNotFoundError``
    for a missing file or a folder, :class:`CheckpointError` (a ``ValueError``) for anything unreadable,
    a file that holds code included (refused before any of it runs)."""
    p = Path(path)
    if p.is_dir():
        raise FileNotFoundError(f"{p} is a folder, not a checkpoint; pass the .ckpt file in it (e.g. {p / 'last.ckpt'})")
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}; pass the path of a .ckpt written by `qidbm fit`")
    if isinstance(map_location, (str, torch.device)):
        check_device(map_location)
    return safe_torch_load(p, map_location, mmap=mmap)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[BoltzmannMachine, dict]:
    """Rebuild the model stored in a ``qidbm fit`` checkpoint.

    Returns ``(model, info)`` where ``info`` holds ``model_class``, ``model_config``,
    ``data_info`` (dataset, encoding, normalisation: what :func:`qidbm.data.decode` needs to
    turn samples into pixels) and the training hyperparameters (in the current form:
    :func:`qidbm.legacy.upgrade_hparams`). The model is in eval mode. A checkpoint whose parameters hold
    NaN/Inf is refused (:class:`CheckpointError`), as is one that holds code.
    """
    p = Path(path)
    ckpt = read_checkpoint(p, map_location=map_location)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(not_a_checkpoint_message(p, " (no 'state_dict')"))
    info = dict(check_checkpoint(ckpt))
    check_finite({"state_dict": ckpt["state_dict"]}, p)
    model = build_model(info["model_class"], info["model_config"])
    prefix = "model."
    state = {k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {p} does not match {info['model_class']}: missing {missing}, unexpected {unexpected}")
    from qidbm.legacy import upgrade_hparams

    info["hyper_parameters"] = upgrade_hparams(ckpt.get("hyper_parameters", {}))  # flat options of qidbm 0.1
    info["epoch"] = ckpt.get("epoch")
    info["global_step"] = ckpt.get("global_step")
    model.eval()
    return model, info


def export_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, sample_output: str | None = None,
                      sample_steps: int | None = None) -> Path:
    """Write a slim copy of a ``qidbm fit`` checkpoint for sharing: the model's weights, the
    qidbm section (model class and config, data info) and the hyperparameters, without the
    optimizer state, persistent chains and loop state (not needed by ``qidbm sample`` or
    ``qidbm evaluate``; the slim file cannot resume training). Written atomically.

    ``sample_output``: record this read-out as the copy's ``sample_output`` hyperparameter
    (:class:`~qidbm.lightning.BoltzmannModule`), so that ``qidbm sample`` and ``qidbm evaluate``
    use it by default; for a read-out chosen after training. ``sample_steps``: likewise the Gibbs sweeps
    per sample. Default: keep the checkpoint's."""
    from qidbm.samplers.drawing import check_sample_output, check_sample_steps

    check_sample_output(sample_output)
    check_sample_steps(sample_steps)
    ckpt = read_checkpoint(src)
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(not_a_checkpoint_message(src, " (no 'state_dict')"))
    info = dict(check_checkpoint(ckpt))
    check_finite({"state_dict": ckpt["state_dict"]}, src)
    info["chains_per_rank"] = [None]
    info["generator_state_per_rank"] = [None]
    slim = {
        "state_dict": {k: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")},
        "qidbm": info,
        "hyper_parameters": {**ckpt.get("hyper_parameters", {}),
                             **({"sample_output": sample_output} if sample_output else {}),
                             **({"sample_steps": sample_steps} if sample_steps else {})},
        "epoch": ckpt.get("epoch"),
        "global_step": ckpt.get("global_step"),
        "pytorch-lightning_version": ckpt.get("pytorch-lightning_version"),
    }
    atomic_torch_save(slim, dst)
    return Path(dst)
