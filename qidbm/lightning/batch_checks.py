"""The check of the first training batch against the model (shape, dtype, finiteness, range/encoding)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["validate_batch_for_model"]


def validate_batch_for_model(x: Tensor, model, data_info: dict | None = None, name: str = "the first training batch") -> None:
    """Check a training batch against the model before training on it (raises ``ValueError``).

    With the data module's ``data_info`` the full :func:`qidbm.data.validate` runs (shape, dtype,
    finiteness, {0, 1} for ``binary``/``bitplanes``). Without it (a plain ``DataLoader``): shape
    [B, n_visible], a floating dtype, finite values and, for binary visible units, values in
    [0, 1] (mean-field data in (0, 1) is accepted; 8-bit pixels are not).
    """
    if data_info is not None and data_info.get("encoding") is not None and data_info.get("image_shape") is not None:
        from qidbm.data import validate

        validate(x, data_info, name=name)
    nv = int(model.n_visible)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a tensor [B, {nv}], got {type(x).__name__}")
    if x.ndim != 2 or x.shape[1] != nv:
        raise ValueError(
            f"{name} has shape {list(x.shape)} but the model takes [B, n_visible={nv}]: encode the data for "
            f"this model (qidbm.data.encode) or set the model's first layer size to {x.shape[-1] if x.ndim else '?'}"
        )
    if not x.is_floating_point():
        hi = float(x.max()) if x.numel() else 0.0
        hint = " (8-bit pixels: divide by 255 and encode them)" if hi > 1 else ""
        raise ValueError(f"{name} has integer dtype {x.dtype}{hint}; batches must be float tensors")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains {int(torch.isnan(x).sum())} NaN and {int(torch.isinf(x).sum())} inf values; "
            "fix the data pipeline (and the normalisation for Gaussian visibles)"
        )
    if not model.gaussian_visible and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            eight_bit = hi > 1 and lo >= 0 and hi <= 255 and bool((x == x.round()).all())
            cause = ("8-bit pixel values in [0, 255]: divide by 255 and binarise (encoding='binary')" if eight_bit
                     else "normalised or continuous data: binary units take values in [0, 1]; use encoding='binary' "
                          "or a model with Gaussian visibles (GRBM/QGRBM) with encoding='continuous'")
            raise ValueError(f"{name} has values in [{lo:g}, {hi:g}] for a model with binary visible units ({cause})")


def check_data_matches_model(data_info: dict, model) -> None:
    """A data module's ``data_info`` against the model: the number of visible units and the kind of
    visible units the encoding needs (``ValueError`` saying what to change)."""
    n_vis = data_info.get("n_visible")
    if n_vis is not None and n_vis != model.n_visible:
        raise ValueError(
            f"the data has {n_vis} visible units ({data_info.get('dataset')}, encoding "
            f"{data_info.get('encoding')!r}) but the model has n_visible={model.n_visible}; "
            "set the model's first layer size to match the data's encoding"
        )
    enc = data_info.get("encoding")
    if enc == "continuous" and not model.gaussian_visible:
        raise ValueError("continuous data needs Gaussian visible units: use GRBM or QGRBM, or encoding=binary")
    if enc in ("binary", "bitplanes") and model.gaussian_visible:
        raise ValueError(f"{enc} data needs binary visible units: use encoding=continuous for GRBM/QGRBM")
