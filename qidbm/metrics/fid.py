"""Frechet Inception Distance (FID) with pytorch-fid's Inception-v3 pool3 features.

The protocol is the one every published FID uses (and the DO-EM paper): images in
[0, 1], grey repeated to 3 channels, bilinearly resized to 299x299, scaled to
[-1, 1], passed through the TensorFlow ``2015-12-05`` Inception graph as ported by
pytorch-fid, and the 2048-d pool3 activations summarised by their mean and
covariance. The FID between two sets is the Frechet distance between the two
Gaussians with those moments::

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

Layout (torchmetrics style):

- :func:`frechet_distance`: the pure function on (mu, sigma) pairs.
- :class:`FIDAccumulator`: stateful; float64 running sums of features and of their
  outer products, ``update(images)`` / ``compute_stats()`` / ``reset()``.
- :func:`reference_stats`: reference (mu, sigma) cached on disk, keyed by dataset,
  split, encoding and the identity of the Inception weights file.
- :func:`compute_fid`: one call, with the pytorch-fid features (default) or
  torchmetrics' ``FrechetInceptionDistance`` as backend.

Weights are taken, in this order, from an explicit ``weights_path``, the
environment variable ``QIDBM_FID_WEIGHTS``, or pytorch-fid's own mechanism
(``$TORCH_HOME/hub/checkpoints/pt_inception-2015-12-05-6726825d.pth``, downloaded
there on first use on a machine with network). When none works a
:class:`FIDWeightsError` says how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "CACHE_DIR_ENV",
    "FEATURE_DIM",
    "FID_WEIGHTS_ENV",
    "FID_WEIGHTS_FILENAME",
    "FIDAccumulator",
    "FIDWeightsError",
    "build_fid_inception",
    "compute_fid",
    "default_cache_dir",
    "frechet_distance",
    "fuse_conv_bn",
    "prepare_images",
    "reference_stats",
    "reference_stats_path",
    "resolve_weights_path",
    "weights_identity",
]

#: environment variable naming a local Inception weights file (pytorch-fid layout)
FID_WEIGHTS_ENV = "QIDBM_FID_WEIGHTS"
#: environment variable naming the qidbm cache root (FID stats go to ``<root>/fid``)
CACHE_DIR_ENV = "QIDBM_CACHE_DIR"
#: the file name pytorch-fid downloads and looks for in ``$TORCH_HOME/hub/checkpoints``
FID_WEIGHTS_FILENAME = "pt_inception-2015-12-05-6726825d.pth"
#: pool3 feature dimension
FEATURE_DIM = 2048
_STATS_FORMAT_VERSION = 1

StatsLike = tuple[Any, Any]
ImagesLike = Union[Tensor, Iterable[Tensor]]


class FIDWeightsError(RuntimeError):
    """The FID Inception weights could not be found, loaded or downloaded."""


def _weights_fix_hint() -> str:
    return (
        "Fix one of: (a) point the `fid_weights` option or the environment variable "
        f"{FID_WEIGHTS_ENV} at a local copy of the pytorch-fid Inception weights "
        f"(e.g. the re-keyed file shipped in ../shared/fid/{FID_WEIGHTS_FILENAME}); or "
        f"(b) allow pytorch-fid's download, or copy that file to "
        f"{Path(torch.hub.get_dir()) / 'checkpoints' / FID_WEIGHTS_FILENAME}."
    )


# --------------------------------------------------------------------------- #
# Pure function
# --------------------------------------------------------------------------- #
def _as_float64_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; FID statistics must be finite.")
    return arr


def frechet_distance(
    mu1: Any, sigma1: Any, mu2: Any, sigma2: Any, eps: float = 1e-6, method: str = "sqrtm"
) -> float:
    r"""Frechet distance between N(mu1, S1) and N(mu2, S2), in float64.

    .. math:: d^2 = \lVert \mu_1 - \mu_2 \rVert^2 + \operatorname{Tr}\bigl(S_1 + S_2 - 2 (S_1 S_2)^{1/2}\bigr)

    The numerics are pytorch-fid's ``calculate_frechet_distance`` step for step
    (``scipy.linalg.sqrtm`` of ``S1 @ S2``; only if that is not finite, ``eps`` is added
    to both diagonals and the root recomputed; an imaginary round-off part is dropped,
    or rejected when a diagonal entry's exceeds 1e-3). It is re-implemented rather than
    called because pytorch-fid 0.3 passes ``sqrtm(..., disp=False)``, which SciPy 1.17
    deprecates (and mishandles for 1x1 input) and SciPy 1.18 removes. Accepts numpy
    arrays or torch tensors.

    ``method="eigh"`` computes the same trace from symmetric eigendecompositions only,
    ``Tr (S1 S2)^(1/2) = sum_i sqrt(lambda_i(S1^(1/2) S2 S1^(1/2)))`` (the product is
    similar to that PSD matrix), which is several times faster than ``sqrtm`` for
    d = 2048; it agrees with the default to round-off (``bench/fid_speed.py`` measures
    it). The default stays pytorch-fid's route so numbers match published ones.

    Args:
        mu1, mu2: mean vectors, shape ``[d]``.
        sigma1, sigma2: covariance matrices, shape ``[d, d]``.
        eps: diagonal offset used only when the product is numerically singular.
        method: ``"sqrtm"`` (pytorch-fid) or ``"eigh"``.

    Returns:
        The distance as a Python float (the FID when the inputs are Inception
        pool3 statistics).
    """
    from scipy import linalg

    mu1 = np.atleast_1d(_as_float64_numpy(mu1, "mu1"))
    mu2 = np.atleast_1d(_as_float64_numpy(mu2, "mu2"))
    sigma1 = np.atleast_2d(_as_float64_numpy(sigma1, "sigma1"))
    sigma2 = np.atleast_2d(_as_float64_numpy(sigma2, "sigma2"))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != (d,):
        raise ValueError(f"mu1 and mu2 must be vectors of equal length, got {mu1.shape} and {mu2.shape}.")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"sigma1 and sigma2 must be [{d}, {d}] covariance matrices, got {sigma1.shape} and {sigma2.shape}."
        )
    diff = mu1 - mu2
    if method == "eigh":
        w1, v1 = np.linalg.eigh(0.5 * (sigma1 + sigma1.T))
        r1 = (v1 * np.sqrt(np.clip(w1, 0, None))) @ v1.T
        m = r1 @ sigma2 @ r1
        tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (m + m.T)), 0, None)).sum()
        return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)
    if method != "sqrtm":
        raise ValueError(f"method must be 'sqrtm' or 'eigh', got {method!r}.")
    with warnings.catch_warnings():
        # sample covariances of n < d images are singular; sqrtm warns, the result is still usable
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            warnings.warn(f"FID: singular covariance product; adding {eps} to the diagonals.", stacklevel=2)
            offset = np.eye(d) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"FID: sqrtm has a large imaginary component {np.max(np.abs(covmean.imag)):.3g}.")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


# --------------------------------------------------------------------------- #
# Weights and network
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


def _hub_weights_file() -> Path:
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
        path = _hub_weights_file()
        if not path.is_file():
            build_fid_inception(None)  # downloads, or raises FIDWeightsError
    return _file_identity(path)


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


def build_fid_inception(weights_path: str | os.PathLike | None = None) -> nn.Module:
    """pytorch-fid's ``InceptionV3([3])`` (pool3, 2048-d) with the FID weights, in eval mode, on CPU.

    Weights come from ``weights_path``, else ``$QIDBM_FID_WEIGHTS`` (both loaded with
    ``strict=True`` and no network access), else pytorch-fid's ``fid_inception_v3()``
    (its torch-hub cache, downloading on first use).

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
        return _pool3_wrapper(inception)

    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FIDWeightsError(
            f"Could not read FID Inception weights from {str(path)!r} ({type(exc).__name__}: {exc}). "
            "It must be a PyTorch state dict in pytorch-fid's layout. " + _weights_fix_hint()
        ) from exc
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
    return _pool3_wrapper(inception)


# --------------------------------------------------------------------------- #
# Images
# --------------------------------------------------------------------------- #
def prepare_images(images: Tensor) -> Tensor:
    """Check a batch of images and return it as float32 ``[N, 3, H, W]`` in [0, 1].

    Accepts ``[N, C, H, W]`` with C in {1, 3} or ``[N, H, W]`` (grey); float or bool
    values in [0, 1], or uint8 in [0, 255] (divided by 255, as pytorch-fid's
    ``ToTensor`` does for image files). Grey is repeated to 3 channels.
    """
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}.")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"images must be [N, C, H, W] with C in {{1, 3}} (or [N, H, W] grey), got shape "
            f"{tuple(images.shape)}. Reshape flat samples first, e.g. v.view(-1, 1, 28, 28)."
        )
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    elif images.dtype == torch.bool:
        images = images.float()
    elif images.is_floating_point():
        images = images.float()
        if images.numel():
            lo, hi = torch.aminmax(images)
            if not (bool(torch.isfinite(lo)) and bool(torch.isfinite(hi))) or lo < -1e-6 or hi > 1 + 1e-6:
                raise ValueError(
                    f"FID expects float images in [0, 1]; got values in [{float(lo):.4g}, {float(hi):.4g}]. "
                    "Map samples back to pixel space (undo the recorded normalisation) and clamp(0, 1)."
                )
    else:
        raise TypeError(f"images must be float in [0, 1], bool, or uint8; got dtype {images.dtype}.")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def _iter_batches(images: ImagesLike, batch_size: int) -> Iterable[Tensor]:
    if isinstance(images, Tensor):
        for i in range(0, images.shape[0], batch_size):
            yield images[i : i + batch_size]
    else:
        for chunk in images:
            if not isinstance(chunk, Tensor):
                raise TypeError(f"an iterable of images must yield tensors, got {type(chunk).__name__}.")
            for i in range(0, chunk.shape[0], batch_size):
                yield chunk[i : i + batch_size]


# --------------------------------------------------------------------------- #
# Accumulator
# --------------------------------------------------------------------------- #
def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class FIDAccumulator:
    r"""Running float64 Inception-feature moments for FID (torchmetrics-style state).

    State: ``n``, ``S = sum_i f_i`` and ``P = sum_i f_i f_i^T`` (float64), so that

    .. math:: \mu = S / n, \qquad \Sigma = (P - n \mu \mu^T) / (n - 1)

    (the unbiased covariance, as ``np.cov`` in pytorch-fid).

    Args:
        weights_path: Inception weights file (else ``$QIDBM_FID_WEIGHTS``, else
            pytorch-fid's download/cache). Ignored when ``feature_extractor`` is given.
        batch_size: images per Inception forward pass.
        device: where the network and the sums live (default: CUDA if available).
        progress: show a tqdm bar over batches in :meth:`update`.
        channels_last: run the network in channels-last memory format (same
            arithmetic, faster with oneDNN on CPU).
        fuse_bn: fold the batch norms into the convolutions (:func:`fuse_conv_bn`; same
            function up to float32 round-off).
        bf16: run the network under bfloat16 autocast. Faster on CPUs with native
            bf16, but an approximation: pool3 features move by up to 0.1 and FID by
            -1.1% (both sets bf16) or -0.17% (bf16 samples vs exact cached reference
            stats), measured on 50 vs 50 MNIST images by ``bench/fid_speed.py``. Off by
            default; reference stats computed this way are cached under their own key.
        feature_extractor: optional callable mapping a float ``[B, 3, H, W]`` batch in
            [0, 1] to ``[B, D]`` features (used by tests and custom metrics).
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        *,
        batch_size: int = 100,
        device: str | torch.device | None = None,
        progress: bool = False,
        channels_last: bool = True,
        fuse_bn: bool = False,
        bf16: bool = False,
        feature_extractor: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self.channels_last = bool(channels_last)
        self.bf16 = bool(bf16)
        self.device = torch.device(device) if device is not None else _default_device()
        self.weights_identity: str | None = None
        if feature_extractor is None:
            path = resolve_weights_path(weights_path)
            model = build_fid_inception(path)
            self.weights_identity = weights_identity(path)
            if fuse_bn:
                model = fuse_conv_bn(model)
            if self.channels_last:
                model = model.to(memory_format=torch.channels_last)
            self.model: Callable[[Tensor], Tensor] | None = model.to(self.device)
            self._custom = False
        else:
            self.model = feature_extractor
            self._custom = True
        self._num_features: int | None = None if self._custom else FEATURE_DIM
        self.reset()

    # torchmetrics' fp64 sums; MPS has no float64, so the sums stay on the CPU there
    @property
    def _sum_device(self) -> torch.device:
        return torch.device("cpu") if self.device.type == "mps" else self.device

    def reset(self) -> FIDAccumulator:
        """Forget all accumulated features."""
        self.num_samples = 0
        d = self._num_features
        self._sum = None if d is None else torch.zeros(d, dtype=torch.float64, device=self._sum_device)
        self._outer = None if d is None else torch.zeros(d, d, dtype=torch.float64, device=self._sum_device)
        return self

    def to(self, device: str | torch.device) -> FIDAccumulator:
        """Move the network and the running sums to ``device``."""
        self.device = torch.device(device)
        if isinstance(self.model, nn.Module):
            self.model = self.model.to(self.device)
        if self._sum is not None:
            self._sum = self._sum.to(self._sum_device)
            self._outer = self._outer.to(self._sum_device)
        return self

    @torch.inference_mode()
    def features(self, images: Tensor) -> Tensor:
        """Pool3 features (float32, ``[B, 2048]``) of one batch, without accumulating."""
        x = prepare_images(images).to(self.device, non_blocking=True)
        if self.channels_last and not self._custom:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.model(x)
        if isinstance(out, (list, tuple)):  # pytorch-fid's InceptionV3 returns a list of blocks
            out = out[0]
        if out.dim() == 4:  # [B, 2048, 1, 1] from pool3
            out = out.flatten(1)
        return out.float()

    @torch.inference_mode()
    def update_features(self, features: Tensor) -> FIDAccumulator:
        """Add precomputed features ``[B, D]`` to the running float64 sums."""
        if features.dim() != 2:
            raise ValueError(f"features must be [B, D], got shape {tuple(features.shape)}.")
        f = features.to(self._sum_device, torch.float64)
        if self._sum is None:
            self._num_features = f.shape[1]
            self.reset()
        if f.shape[1] != self._sum.shape[0]:
            raise ValueError(f"expected {self._sum.shape[0]} features per image, got {f.shape[1]}.")
        self._sum += f.sum(dim=0)
        self._outer += f.T @ f
        self.num_samples += f.shape[0]
        return self

    def update(self, images: ImagesLike) -> FIDAccumulator:
        """Add images (a tensor, see :func:`prepare_images`, or an iterable of tensors) in batches."""
        total = None
        if isinstance(images, Tensor):
            total = math.ceil(images.shape[0] / self.batch_size)
        bar = tqdm(total=total, desc="FID features", unit="batch", disable=not self.progress, leave=False)
        try:
            for batch in _iter_batches(images, self.batch_size):
                self.update_features(self.features(batch))
                bar.update(1)
        finally:
            bar.close()
        return self

    def compute_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(mu, sigma)`` as float64 numpy arrays (``[D]``, ``[D, D]``)."""
        n = self.num_samples
        if n < 2:
            raise RuntimeError(f"FID statistics need at least 2 images, got {n}.")
        mu = self._sum / n
        sigma = (self._outer - n * torch.outer(mu, mu)) / (n - 1)
        sigma = 0.5 * (sigma + sigma.T)  # exact symmetry; the sums are symmetric up to round-off
        return mu.cpu().numpy(), sigma.cpu().numpy()


# --------------------------------------------------------------------------- #
# Reference statistics cache
# --------------------------------------------------------------------------- #
def default_cache_dir() -> Path:
    """``$QIDBM_CACHE_DIR/fid`` if set, else ``~/.cache/qidbm/fid``."""
    root = os.environ.get(CACHE_DIR_ENV, "")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "qidbm") / "fid"


def _canonical_key(key: Mapping[str, Any] | str) -> str:
    if isinstance(key, str):
        if not key:
            raise ValueError("reference-stats key must be a non-empty string or dict.")
        return key
    if isinstance(key, Mapping):
        if not key:
            raise ValueError("reference-stats key dict is empty; use e.g. {'dataset': 'mnist', 'split': 'test', ...}.")
        return json.dumps(dict(key), sort_keys=True, default=str, separators=(",", ":"))
    raise TypeError(f"reference-stats key must be a dict or str, got {type(key).__name__}.")


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")[:limit]


def _stats_path(canon: str, readable: str, wid: str, cache_dir: str | os.PathLike | None) -> Path:
    digest = hashlib.sha256(f"{canon}\n{wid}".encode()).hexdigest()[:16]
    wname = _slug(wid.split(":")[0].removesuffix(".pth"), 40)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / f"{_slug(readable, 80)}__{wname}__{digest}.npz"


def _readable_key(key: Mapping[str, Any] | str) -> str:
    if isinstance(key, Mapping):
        return "_".join(f"{k}={v}" for k, v in sorted(dict(key).items(), key=lambda kv: str(kv[0])))
    return str(key)


def reference_stats_path(
    key: Mapping[str, Any] | str,
    cache_dir: str | os.PathLike | None = None,
    weights_path: str | os.PathLike | None = None,
) -> Path:
    """Cache file for the reference statistics of ``key`` under the weights in use.

    The name holds a readable slug of the key (``dataset=mnist_split=test_...``), the
    weights file name and a sha256 digest of (key, weights identity), so a different
    key or a different network never maps to the same file.
    """
    return _stats_path(_canonical_key(key), _readable_key(key), weights_identity(weights_path), cache_dir)


def _load_stats(path: Path, canon: str, wid: str) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != canon or str(z["weights"]) != wid or int(z["version"]) != _STATS_FORMAT_VERSION:
                warnings.warn(f"FID stats cache {path} does not match its key/weights; recomputing.", stacklevel=3)
                return None
            return z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    except Exception as exc:  # truncated or foreign file: recompute rather than fail
        warnings.warn(f"FID stats cache {path} is unreadable ({exc}); recomputing.", stacklevel=3)
        return None


def _save_stats_atomic(path: Path, **arrays: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # a file object, so numpy does not append ".npz"
        os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def reference_stats(
    key: Mapping[str, Any] | str,
    images_fn: Callable[[], ImagesLike],
    cache_dir: str | os.PathLike | None = None,
    *,
    weights_path: str | os.PathLike | None = None,
    accumulator: FIDAccumulator | None = None,
    batch_size: int = 100,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference ``(mu, sigma)`` for ``key``, computed once and cached on disk.

    Args:
        key: identifies the reference set, e.g. ``{"dataset": "mnist", "split": "test",
            "encoding": "binary"}`` (or a string).
        images_fn: called only on a cache miss; returns the reference images (a tensor
            or an iterable of tensors, see :func:`prepare_images`).
        cache_dir: directory for the ``.npz`` files (default :func:`default_cache_dir`).
        weights_path: Inception weights (see :func:`build_fid_inception`); its identity
            (name, size, sha256) is part of the cache key.
        accumulator: reuse this accumulator's network and weights identity (it is
            reset before and after); ``weights_path`` is then ignored.
        batch_size, device, progress: for a new accumulator.

    The file stores ``mu``, ``sigma``, ``n``, the canonical key and the weights
    identity, and is written atomically (temporary file + ``os.replace``).
    """
    canon = _canonical_key(key)
    if accumulator is not None:
        if accumulator.weights_identity is None:
            raise ValueError("reference_stats needs an Inception accumulator, not a custom feature extractor.")
        wid = accumulator.weights_identity
        if accumulator.bf16:  # approximate features must never be served as exact ones
            wid += "+bf16-autocast"
    else:
        wid = weights_identity(weights_path)
    path = _stats_path(canon, _readable_key(key), wid, cache_dir)
    if path.is_file():
        cached = _load_stats(path, canon, wid)
        if cached is not None:
            return cached
    acc = accumulator
    if acc is None:
        acc = FIDAccumulator(weights_path, batch_size=batch_size, device=device, progress=progress)
    acc.reset()
    acc.update(images_fn())
    mu, sigma = acc.compute_stats()
    n = acc.num_samples
    acc.reset()
    _save_stats_atomic(
        path, mu=mu, sigma=sigma, n=np.int64(n), key=np.str_(canon), weights=np.str_(wid),
        version=np.int64(_STATS_FORMAT_VERSION),
    )
    return mu, sigma


# --------------------------------------------------------------------------- #
# One-call FID
# --------------------------------------------------------------------------- #
def _is_stats(reference: Any) -> bool:
    if isinstance(reference, (tuple, list)) and len(reference) == 2:
        a, b = (np.ndim(r) if not isinstance(r, Tensor) else r.dim() for r in reference)
        return a == 1 and b == 2
    return False


def _torchmetrics_fid(
    generated: ImagesLike, reference: ImagesLike, weights_path: str | os.PathLike | None,
    batch_size: int, device: torch.device, progress: bool,
) -> float:
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except ImportError as exc:  # pragma: no cover - torchmetrics is a dependency
        raise ImportError("backend='torchmetrics' needs torchmetrics: pip install torchmetrics") from exc
    path = resolve_weights_path(weights_path)
    if path is None:  # the file pytorch-fid uses, so both backends share one network
        path = _hub_weights_file()
        if not path.is_file():
            build_fid_inception(None)
    try:
        metric = FrechetInceptionDistance(feature=FEATURE_DIM, feature_extractor_weights_path=str(path), normalize=True)
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "backend='torchmetrics' needs torch-fidelity: pip install torch-fidelity "
            "(or torchmetrics[image]); or use backend='pytorch-fid'."
        ) from exc
    except RuntimeError as exc:
        raise FIDWeightsError(f"torchmetrics could not load {str(path)!r}: {exc}. " + _weights_fix_hint()) from exc
    metric = metric.to(device)
    with torch.inference_mode():
        for real, images in ((True, reference), (False, generated)):
            desc = "FID (torchmetrics) " + ("reference" if real else "generated")
            for batch in tqdm(_iter_batches(images, batch_size), desc=desc, disable=not progress, leave=False):
                metric.update(prepare_images(batch).to(device), real=real)
        return float(metric.compute())


def compute_fid(
    generated_images: ImagesLike,
    reference: StatsLike | ImagesLike,
    *,
    backend: str = "pytorch-fid",
    weights_path: str | os.PathLike | None = None,
    batch_size: int = 100,
    device: str | torch.device | None = None,
    progress: bool = False,
    accumulator: FIDAccumulator | None = None,
    fd_method: str = "sqrtm",
) -> float:
    r"""FID between generated images and a reference set.

    .. math::
        \mathrm{FID} = \lVert \mu_g - \mu_r \rVert^2
        + \operatorname{Tr}\bigl(\Sigma_g + \Sigma_r - 2 (\Sigma_g \Sigma_r)^{1/2}\bigr)

    Args:
        generated_images: tensor ``[N, C, H, W]`` (C in {1, 3}) or ``[N, H, W]`` in [0, 1],
            or an iterable of such tensors.
        reference: ``(mu, sigma)`` (e.g. from :func:`reference_stats`) or reference images.
        backend: ``"pytorch-fid"`` (our float64 accumulator on pytorch-fid's InceptionV3,
            the paper's protocol) or ``"torchmetrics"``
            (``FrechetInceptionDistance(feature=2048, normalize=True)`` loading the same
            weights file; needs reference images and torch-fidelity; it truncates to
            uint8 and scales by (x - 128) / 128, so values differ slightly: -0.15% on
            2 x 100 random 28x28 images in ``tests/metrics/test_fid.py``).
        weights_path: Inception weights (else ``$QIDBM_FID_WEIGHTS``, else pytorch-fid's
            download).
        batch_size, device, progress: Inception batch size, device and tqdm bar.
        accumulator: reuse an existing :class:`FIDAccumulator` (pytorch-fid backend;
            it is reset before and after).
        fd_method: ``"sqrtm"`` (pytorch-fid's numerics, default) or ``"eigh"`` (faster,
            equal to round-off); see :func:`frechet_distance`. pytorch-fid backend only.
    """
    dev = torch.device(device) if device is not None else (accumulator.device if accumulator else _default_device())
    if backend == "torchmetrics":
        if _is_stats(reference):
            raise ValueError(
                "backend='torchmetrics' needs reference images, not (mu, sigma); "
                "pass the images or use backend='pytorch-fid'."
            )
        return _torchmetrics_fid(generated_images, reference, weights_path, batch_size, dev, progress)
    if backend != "pytorch-fid":
        raise ValueError(f"backend must be 'pytorch-fid' or 'torchmetrics', got {backend!r}.")
    acc = accumulator or FIDAccumulator(weights_path, batch_size=batch_size, device=dev, progress=progress)
    if _is_stats(reference):
        mu_r, sigma_r = reference
    else:
        mu_r, sigma_r = acc.reset().update(reference).compute_stats()
    mu_g, sigma_g = acc.reset().update(generated_images).compute_stats()
    acc.reset()
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r, method=fd_method)
