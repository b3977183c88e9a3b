"""The FID Inception network: pytorch-fid's InceptionV3 pool3 built from a weights file.

One job: turn a weights file (or pytorch-fid's own download/cache) into the
``InceptionV3([3])`` network that every published FID uses (the TensorFlow
``2015-12-05`` graph as ported by pytorch-fid: resize to 299x299, scale to [-1, 1],
2048-d pool3 output), optionally with its batch norms folded into the convolutions.
Nothing here accumulates statistics or computes distances.

Weights are taken, in this order, from an explicit ``weights_path``, the environment
variable ``QIDBM_FID_WEIGHTS``, or pytorch-fid's own mechanism
(``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``, downloaded there
on first use on a machine with network). When none works a :class:`FIDWeightsError`
names the environment variable, the offline copy and the download location.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "FEATURE_DIM",
    "FID_WEIGHTS_ENV",
    "FID_WEIGHTS_FILENAME",
    "FIDWeightsError",
    "build_fid_inception",
    "fuse_conv_bn",
    "hub_weights_file",
    "resolve_weights_path",
    "weights_identity",
]

#: environment variable naming a local Inception weights file (pytorch-fid layout)
FID_WEIGHTS_ENV = "QIDBM_FID_WEIGHTS"
#: the file name pytorch-fid downloads and looks for in ``$TORCH_HOME/hub/checkpoints``
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: pool3 feature dimension
FEATURE_DIM = 2048


class FIDWeightsError(RuntimeError):
    """The FID Inception weights could not be found, loaded or downloaded."""


def _weights_fix_hint() -> str:
    return (
        "Fix one of: (a) point the `fid_weights` option or the environment variable "
        f"{FID_WEIGHTS_ENV} at a local copy of the pytorch-fid Inception weights "
        f"(e.g. a local copy of pytorch-fid's {FID_WEIGHTS_FILENAME}); or "
        f"(b) allow pytorch-fid's download, or copy that file to "
        f"{hub_weights_file()}."
    )


# --------------------------------------------------------------------------- #
# Which file
# --------------------------------------------------------------------------- #
def resolve_weights_path(weights_path: str | os.PathLike | None = None) -> Path | None:
    """Local weights file to use: ``weights_path``, else ``$QIDBM_FID_WEIGHTS``, else ``None``.

    ``None`` means "use pytorch-fid's own mechanism" (its torch-hub cache, with a
    download on first use). A path that is given but is not a file raises
    :class:`FIDWeightsError`.
    """
    source = "weights_path argument"
    if weights_path is None or str(weights_path) == "":
        env = os.environ.get(FID_WEIGHTS_ENV, "")
        if env == "":
            return None
        weights_path, source = env, f"environment variable {FID_WEIGHTS_ENV}"
    path = Path(weights_path).expanduser()
    if not path.is_file():
        raise FIDWeightsError(
            f"FID Inception weights file {str(path)!r} (from the {source}) does not exist or is not a file. "
            + _weights_fix_hint()
        )
    return path


def hub_weights_file() -> Path:
    """Where pytorch-fid's ``load_state_dict_from_url`` keeps (or will download) the weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_FILENAME


_IDENTITY_CACHE: dict[tuple[str, int, int], str] = {}


def _file_identity(path: Path) -> str:
    st = path.stat()
    cache_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if cache_key not in _IDENTITY_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _IDENTITY_CACHE[cache_key] = f"{path.name}:{st.st_size}:sha256={h.hexdigest()[:16]}"
    return _IDENTITY_CACHE[cache_key]


def weights_identity(weights_path: str | os.PathLike | None = None) -> str:
    """Identity string ``"<file name>:<size>:sha256=<16 hex>"`` of the weights that would be used.

    Used in reference-statistics cache keys so that statistics computed with a
    different network are never reused. With pytorch-fid's mechanism and no file
    in its hub cache yet, the network is built first (which downloads it).
    """
    path = resolve_weights_path(weights_path)
    if path is None:
        path = hub_weights_file()
        if not path.is_file():
            build_fid_inception(None)  # downloads, or raises FIDWeightsError
    return _file_identity(path)


# --------------------------------------------------------------------------- #
# The network
# --------------------------------------------------------------------------- #
def _fid_inception_architecture() -> nn.Module:
    """``pytorch_fid.inception.fid_inception_v3()`` without its download/load step.

    Same torchvision Inception-v3 skeleton (1008 classes, no aux logits, no weight
    init) with the same FID-specific blocks patched in, built from pytorch-fid's
    own classes so the state-dict keys and shapes are exactly pytorch-fid's.
    """
    from pytorch_fid import inception as pfi

    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def _pool3_wrapper(inception: nn.Module) -> nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` (resize to 299, scale to [-1, 1]) around a loaded net.

    ``InceptionV3.__init__`` always calls ``fid_inception_v3()`` (which downloads), so
    the instance is created without it and given exactly the blocks that
    ``InceptionV3.__init__`` builds for ``output_blocks=[3]``; ``forward`` is
    pytorch-fid's own.
    """
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3.__new__(InceptionV3)
    nn.Module.__init__(model)
    model.resize_input = True
    model.normalize_input = True
    model.output_blocks = [InceptionV3.BLOCK_INDEX_BY_DIM[FEATURE_DIM]]
    model.last_needed_block = 3
    model.blocks = nn.ModuleList(
        [
            nn.Sequential(
                inception.Conv2d_1a_3x3,
                inception.Conv2d_2a_3x3,
                inception.Conv2d_2b_3x3,
                nn.MaxPool2d(kernel_size=3, stride=2),
            ),
            nn.Sequential(inception.Conv2d_3b_1x1, inception.Conv2d_4a_3x3, nn.MaxPool2d(kernel_size=3, stride=2)),
            nn.Sequential(
                inception.Mixed_5b,
                inception.Mixed_5c,
                inception.Mixed_5d,
                inception.Mixed_6a,
                inception.Mixed_6b,
                inception.Mixed_6c,
                inception.Mixed_6d,
                inception.Mixed_6e,
            ),
            nn.Sequential(
                inception.Mixed_7a, inception.Mixed_7b, inception.Mixed_7c, nn.AdaptiveAvgPool2d(output_size=(1, 1))
            ),
        ]
    )
    for p in model.parameters():
        p.requires_grad = False
    return model.eval()


def fuse_conv_bn(model: nn.Module) -> nn.Module:
    """Fold every eval-mode BatchNorm of pytorch-fid's Inception into the convolution before it.

    ``BasicConv2d`` computes ``relu(bn(conv(x)))``; with frozen statistics,
    ``bn(conv(x)) = conv'(x)`` with ``W' = W * g / sqrt(var + eps)`` and
    ``b' = beta - g * mean / sqrt(var + eps)`` (``torch.nn.utils.fusion.fuse_conv_bn_eval``).
    Same function up to float32 round-off, one memory pass fewer per layer. In place.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    from torchvision.models.inception import BasicConv2d

    for m in model.modules():
        if isinstance(m, BasicConv2d) and isinstance(m.bn, nn.BatchNorm2d):
            m.conv = fuse_conv_bn_eval(m.conv.eval(), m.bn.eval())
            m.bn = nn.Identity()
    return model


def read_fid_weights(path: str | os.PathLike, data: bytes | None = None) -> Any:
    """The content of an Inception weights file, read as data only (:func:`qidbm.checkpoint.safe_torch_load`:
    a file that holds code is refused before any of it runs); :class:`FIDWeightsError` saying why otherwise.
    ``data``: the file's bytes, read already."""
    from qidbm.checkpoint import CheckpointError, safe_torch_load

    try:
        return safe_torch_load(path, "cpu", what="FID Inception weights", data=data)
    except (CheckpointError, OSError) as exc:
        text = str(exc)
        raise FIDWeightsError(
            f"{text[:1].upper()}{text[1:]}. It must be a PyTorch state dict in pytorch-fid's layout. " + _weights_fix_hint()
        ) from exc


def build_fid_inception(weights_path: str | os.PathLike | None = None, *, fuse_bn: bool = False) -> nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` (pool3, 2048-d) with the FID weights, in eval mode, on CPU.

    Weights come from ``weights_path``, else ``$QIDBM_FID_WEIGHTS`` (both loaded with
    ``strict=True`` and no network access), else pytorch-fid's ``fid_inception_v3()``
    (its torch-hub cache, downloading on first use). With ``fuse_bn`` the batch norms
    are folded into the convolutions (:func:`fuse_conv_bn`).

    Raises:
        FIDWeightsError: file missing, unreadable, with wrong keys/shapes, or the
            download failed; the message says how to fix it.
    """
    path = resolve_weights_path(weights_path)
    if path is None:
        from pytorch_fid.inception import fid_inception_v3

        try:
            inception = fid_inception_v3()
        except Exception as exc:  # URLError, HTTPError, OSError, bad cached file, ...
            raise FIDWeightsError(
                "pytorch-fid could not load or download its Inception weights "
                f"({type(exc).__name__}: {exc}). No {FID_WEIGHTS_ENV} or weights_path was set. "
                + _weights_fix_hint()
            ) from exc
    else:
        state_dict = read_fid_weights(path)
        if not isinstance(state_dict, Mapping):
            raise FIDWeightsError(
                f"{str(path)!r} holds a {type(state_dict).__name__}, not a state dict in pytorch-fid's layout. "
                + _weights_fix_hint()
            )
        inception = _fid_inception_architecture()
        try:
            inception.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            raise FIDWeightsError(
                f"{str(path)!r} is not the pytorch-fid Inception-v3 (FID) state dict: its keys or shapes "
                f"do not match ({str(exc).splitlines()[0]} ...). " + _weights_fix_hint()
            ) from exc
    model = _pool3_wrapper(inception)
    return fuse_conv_bn(model) if fuse_bn else model
