"""Frechet Inception Distance (FID): the protocol, on torchmetrics' ``FrechetInceptionDistance``.

The protocol is the one every published FID uses (and the DO-EM paper): images in
[0, 1], grey repeated to 3 channels, bilinearly resized to 299x299, scaled to
[-1, 1], passed through the TensorFlow ``2015-12-05`` Inception graph as ported by
pytorch-fid, and the 2048-d pool3 activations summarised by their mean and
covariance; the FID is the Frechet distance between the two Gaussians with those
moments (docs/maths.md, 'FID protocol')::

    FID = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))

Where each part lives:

- :mod:`qidbm.metrics.inception`: the network from a weights file (offline path,
  :class:`~qidbm.metrics.inception.FIDWeightsError`, batch-norm folding).
- :mod:`qidbm.metrics.frechet`: the pure maths (Frechet distance; mean and covariance
  from running sums).
- :mod:`qidbm.metrics.fid_reference`: reference statistics cached on disk.
- here: the protocol's image handling (:func:`prepare_images`), the feature module
  (:class:`InceptionFeatures`), the metric (:class:`InceptionFID`: torchmetrics'
  ``FrechetInceptionDistance`` with that module as its ``feature``, so the float64
  running sums, ``reset`` and the DDP reduction are torchmetrics'), a batched
  front end over one of its two feature sets (:class:`FIDAccumulator`) and the
  one-call :func:`compute_fid`.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from tqdm.auto import tqdm

from qidbm.allocator import reuse_freed_memory
from qidbm.metrics.frechet import frechet_distance, gaussian_moments
from qidbm.metrics.inception import (
    FEATURE_DIM,
    FIDWeightsError,
    _weights_fix_hint,
    build_fid_inception,
    hub_weights_file,
    read_fid_weights,
    resolve_weights_path,
    weights_identity,
)
from qidbm.progress import tqdm_kwargs

__all__ = [
    "FIDAccumulator",
    "InceptionFID",
    "InceptionFeatures",
    "compute_fid",
    "frechet_distance",
    "prepare_images",
]

StatsLike = tuple[Any, Any]
ImagesLike = Union[Tensor, Iterable[Tensor]]


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


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------- #
# Feature module (torchmetrics' `feature`)
# --------------------------------------------------------------------------- #
class InceptionFeatures(nn.Module):
    """Images in [0, 1] -> float32 features ``[B, D]``: the module torchmetrics runs as ``feature``.

    ``forward`` applies :func:`prepare_images` (the protocol's input checks, grey to 3
    channels), moves the batch to the network's device, optionally to channels-last
    memory format and under bfloat16 autocast, runs ``network`` and flattens pool3's
    ``[B, D, 1, 1]``. ``num_features`` is the attribute torchmetrics reads for its
    state shapes (``None`` until known for a custom extractor). The module never
    leaves eval mode (``train()`` is a no-op), so a batch-norm network stays frozen
    inside a LightningModule.

    Args:
        network: pytorch-fid's ``InceptionV3([3])`` (see :meth:`from_weights`) or any
            callable mapping a float ``[B, 3, H, W]`` batch in [0, 1] to ``[B, D]``.
        num_features: ``D``, or ``None`` when unknown.
        channels_last: feed the network channels-last tensors (same arithmetic,
            faster with oneDNN on CPU).
        bf16: run the network under bfloat16 autocast (an approximation; see
            :class:`FIDAccumulator`).
        weights_identity: identity of the weights file (reference-cache key), ``None``
            for a custom extractor.
    """

    def __init__(
        self,
        network: Callable[[Tensor], Tensor],
        num_features: int | None = FEATURE_DIM,
        *,
        channels_last: bool = False,
        bf16: bool = False,
        weights_identity: str | None = None,
    ) -> None:
        super().__init__()
        self.network = network
        self.num_features = num_features
        self.channels_last = bool(channels_last)
        self.bf16 = bool(bf16)
        self.weights_identity = weights_identity
        #: where features are returned (set when the network's device cannot hold float64 sums, i.e. MPS)
        self.output_device: torch.device | None = None
        self.register_buffer("_anchor", torch.empty(0), persistent=False)  # tracks .to(device)
        self._given = False
        self.training = False  # this module's flag only: a custom network's own mode is left as given

    @classmethod
    def from_weights(
        cls,
        weights_path: str | os.PathLike | None = None,
        *,
        fuse_bn: bool = True,
        channels_last: bool = True,
        bf16: bool = False,
    ) -> InceptionFeatures:
        """The FID Inception (:func:`~qidbm.metrics.inception.build_fid_inception`) as a feature module.

        ``fuse_bn`` folds the batch norms into the convolutions (same features up to
        float32 round-off, faster).
        """
        path = resolve_weights_path(weights_path)
        reuse_freed_memory()  # the network's per-batch activation buffers (qidbm/allocator.py)
        network = build_fid_inception(path, fuse_bn=fuse_bn)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        return cls(network, FEATURE_DIM, channels_last=channels_last, bf16=bf16, weights_identity=weights_identity(path))

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    def train(self, mode: bool = True) -> InceptionFeatures:
        """Stay in eval mode: the network's batch-norm statistics are part of the protocol."""
        return super().train(False)

    @contextmanager
    def features_given(self) -> Iterator[None]:
        """Within this block ``forward`` takes precomputed ``[B, D]`` features and returns them as they are."""
        self._given = True
        try:
            yield
        finally:
            self._given = False

    def forward(self, images: Tensor) -> Tensor:
        if self._given:
            return images
        x = prepare_images(images).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.network(x)
        if isinstance(out, (list, tuple)):  # pytorch-fid's InceptionV3 returns a list of blocks
            out = out[0]
        if out.dim() == 4:  # [B, 2048, 1, 1] from pool3
            out = out.flatten(1)
        out = out.float()
        return out if self.output_device is None else out.to(self.output_device)


# --------------------------------------------------------------------------- #
# The metric
# --------------------------------------------------------------------------- #
class InceptionFID(FrechetInceptionDistance):
    r"""torchmetrics' ``FrechetInceptionDistance`` on pytorch-fid's Inception, with the protocol's distance.

    The feature module is :class:`InceptionFeatures` (by default the FID Inception from
    ``weights_path`` / ``$QIDBM_FID_WEIGHTS`` / pytorch-fid's cache, batch norms folded),
    so ``update(images, real)`` takes images in [0, 1] (``[N, C, H, W]`` with C in {1, 3},
    or ``[N, H, W]``; float, bool or uint8). The float64 running sums, ``reset``
    (including ``reset_real_features=False``) and the DDP reduction are torchmetrics'.
    ``compute()`` returns the Frechet distance of the (reduced) moments in float64 with
    pytorch-fid's numerics (:func:`~qidbm.metrics.frechet.frechet_distance` with
    ``fd_method``) rather than torchmetrics' eigenvalue shortcut cast to float32, so the
    numbers match pytorch-fid's and the package's cached reference statistics.

    Args:
        weights_path: Inception weights (ignored when ``feature`` is given).
        feature: a ready feature module (e.g. ``InceptionFeatures(toy_net, 16)``); it
            needs an integer ``num_features``.
        fuse_bn, channels_last, bf16: see :meth:`InceptionFeatures.from_weights`.
        fd_method: ``"sqrtm"`` (pytorch-fid) or ``"eigh"`` (faster, equal to round-off).
        reset_real_features, kwargs: torchmetrics' ``FrechetInceptionDistance`` / ``Metric``.
    """

    def __init__(
        self,
        weights_path: str | os.PathLike | None = None,
        *,
        feature: nn.Module | None = None,
        fuse_bn: bool = True,
        channels_last: bool = True,
        bf16: bool = False,
        fd_method: str = "sqrtm",
        reset_real_features: bool = True,
        **kwargs: Any,
    ) -> None:
        if fd_method not in ("sqrtm", "eigh"):
            raise ValueError(f"fd_method must be 'sqrtm' or 'eigh', got {fd_method!r}.")
        if feature is None:
            feature = InceptionFeatures.from_weights(weights_path, fuse_bn=fuse_bn, channels_last=channels_last,
                                                     bf16=bf16)
        if not isinstance(getattr(feature, "num_features", None), int):
            raise ValueError("InceptionFID needs a feature module with an integer `num_features` attribute.")
        super().__init__(feature=feature, reset_real_features=reset_real_features, normalize=True, **kwargs)
        self.fd_method = fd_method

    @property
    def num_features(self) -> int:
        return int(self.real_features_sum.shape[0])

    def update_features(self, features: Tensor, real: bool) -> None:
        """Add precomputed features ``[B, D]`` (no network pass) to the real or generated sums."""
        if features.dim() != 2:
            raise ValueError(f"features must be [B, D], got shape {tuple(features.shape)}.")
        if features.shape[1] != self.num_features:
            raise ValueError(f"expected {self.num_features} features per image, got {features.shape[1]}.")
        given = getattr(self.inception, "features_given", None)
        if given is None:
            raise TypeError("update_features needs an InceptionFeatures feature module.")
        with given():
            self.update(features.to(self.real_features_sum.device), real=real)

    def _moments(self, real: bool) -> tuple[np.ndarray, np.ndarray]:
        side = "real" if real else "fake"
        return gaussian_moments(
            getattr(self, f"{side}_features_num_samples"),
            getattr(self, f"{side}_features_sum"),
            getattr(self, f"{side}_features_cov_sum"),
        )

    def stats(self, real: bool) -> tuple[np.ndarray, np.ndarray]:
        """``(mu, sigma)`` of the real or generated set, float64 numpy, reduced across processes under DDP."""
        with self.sync_context(dist_sync_fn=self.dist_sync_fn, should_sync=self._to_sync and not self._is_synced,
                               should_unsync=True):
            return self._moments(real)

    def compute(self) -> Tensor:
        """FID of the generated (``real=False``) set against the real set, float64."""
        mu_g, sigma_g = self._moments(real=False)
        mu_r, sigma_r = self._moments(real=True)
        return torch.tensor(frechet_distance(mu_g, sigma_g, mu_r, sigma_r, method=self.fd_method),
                            dtype=torch.float64)


# --------------------------------------------------------------------------- #
# Batched front end
# --------------------------------------------------------------------------- #
class FIDAccumulator:
    r"""Inception-feature moments of one image set, in batches: a front end over :class:`InceptionFID`.

    The state is the metric's (torchmetrics' float64 ``n``, ``S = sum_i f_i`` and
    ``P = sum_i f_i f_i^T``), so that

    .. math:: \mu = S / n, \qquad \Sigma = (P - n \mu \mu^T) / (n - 1)

    (the unbiased covariance, as ``np.cov`` in pytorch-fid;
    :func:`~qidbm.metrics.frechet.gaussian_moments`). This class adds batching of a
    tensor or an iterable of tensors, a progress bar and device placement; ``update``,
    ``update_features`` and ``compute_stats`` act on the generated set unless
    ``real=True``. The statistics are this process's (the metric is made with
    ``sync_on_compute=False``): the callers run it on one process, rank 0 under DDP, where a
    reduction would wait for ranks that never join. For statistics reduced over all processes,
    update an :class:`InceptionFID` on every rank and call its ``stats`` or ``compute`` there.

    Args:
        weights_path: Inception weights file (else ``$QIDBM_FID_WEIGHTS``, else
            pytorch-fid's download/cache). Ignored when ``feature_extractor`` is given.
        batch_size: images per Inception forward pass.
        device: where the network and the sums live (default: CUDA if available).
        progress: show a tqdm bar over batches in :meth:`update`.
        channels_last: run the network in channels-last memory format (same
            arithmetic, faster with oneDNN on CPU).
        fuse_bn: fold the batch norms into the convolutions
            (:func:`~qidbm.metrics.inception.fuse_conv_bn`; same function up to float32
            round-off).
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
        if feature_extractor is None:
            self.feature = InceptionFeatures.from_weights(weights_path, fuse_bn=fuse_bn,
                                                          channels_last=channels_last, bf16=bf16)
        else:  # width unknown until the first batch: the metric is made then
            self.feature = InceptionFeatures(feature_extractor, None, channels_last=False, bf16=bf16)
        self.weights_identity: str | None = self.feature.weights_identity
        self.metric: InceptionFID | None = None
        if self.feature.num_features is not None:
            self.metric = self._new_metric()
        self.to(self.device)

    def _new_metric(self) -> InceptionFID:
        # this process's images only: FIDCallback and `qidbm evaluate` call it on one process (rank 0
        # under DDP), where a cross-process sync would wait for ranks that never join
        return InceptionFID(feature=self.feature, sync_on_compute=False)

    @property
    def model(self) -> Callable[[Tensor], Tensor]:
        """The network (pytorch-fid's ``InceptionV3([3])``, or the custom extractor)."""
        return self.feature.network

    @property
    def num_samples(self) -> int:
        """Images accumulated in the generated set."""
        return 0 if self.metric is None else int(self.metric.fake_features_num_samples)

    # torchmetrics' fp64 sums; MPS has no float64, so the sums stay on the CPU there
    @property
    def _sum_device(self) -> torch.device:
        return torch.device("cpu") if self.device.type == "mps" else self.device

    def reset(self) -> FIDAccumulator:
        """Forget all accumulated features (both sets)."""
        if self.metric is not None:
            self.metric.reset()
        return self

    def to(self, device: str | torch.device) -> FIDAccumulator:
        """Move the network and the running sums to ``device``."""
        self.device = torch.device(device)
        if self.metric is not None:
            self.metric.to(self._sum_device)
        self.feature.to(self.device)
        self.feature.output_device = self._sum_device if self._sum_device != self.device else None
        return self

    @torch.inference_mode()
    def features(self, images: Tensor) -> Tensor:
        """Pool3 features (float32, ``[B, 2048]``) of one batch, without accumulating."""
        return self.feature(images)

    def update_features(self, features: Tensor, real: bool = False) -> FIDAccumulator:
        """Add precomputed features ``[B, D]`` to the running float64 sums."""
        if features.dim() != 2:
            raise ValueError(f"features must be [B, D], got shape {tuple(features.shape)}.")
        if self.metric is None:
            self.feature.num_features = int(features.shape[1])
            self.metric = self._new_metric()
            self.to(self.device)
        self.metric.update_features(features, real=real)
        return self

    def update(self, images: ImagesLike, real: bool = False) -> FIDAccumulator:
        """Add images (a tensor, see :func:`prepare_images`, or an iterable of tensors) in batches."""
        total = None
        if isinstance(images, Tensor):
            total = math.ceil(images.shape[0] / self.batch_size)
        bar = tqdm(total=total, desc="FID features", unit="batch", disable=not self.progress, leave=False, **tqdm_kwargs())
        try:
            for batch in _iter_batches(images, self.batch_size):
                if self.metric is None:
                    self.update_features(self.features(batch), real=real)
                else:
                    self.metric.update(batch, real=real)
                bar.update(1)
        finally:
            bar.close()
        return self

    def compute_stats(self, real: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(mu, sigma)`` as float64 numpy arrays (``[D]``, ``[D, D]``)."""
        if self.metric is None:
            raise RuntimeError("FID statistics need at least 2 images, got 0.")
        return self.metric.stats(real=real)


# --------------------------------------------------------------------------- #
# One-call FID
# --------------------------------------------------------------------------- #
def _is_stats(reference: Any) -> bool:
    if isinstance(reference, (tuple, list)) and len(reference) == 2:
        a, b = (np.ndim(r) if not isinstance(r, Tensor) else r.dim() for r in reference)
        return a == 1 and b == 2
    return False


def _torch_fidelity_fid(
    generated: ImagesLike, reference: ImagesLike, weights_path: str | os.PathLike | None,
    batch_size: int, device: torch.device, progress: bool,
) -> float:
    """torchmetrics' own FID: torch-fidelity's Inception on uint8-truncated images, same weights file."""
    path = resolve_weights_path(weights_path)
    if path is None:  # the file pytorch-fid uses, so both backends share one network
        path = hub_weights_file()
        if not path.is_file():
            build_fid_inception(None)
    # torch-fidelity reads the file with a torch.load that allows any pickle, so it would run code pickled
    # in it: the bytes are read once, checked as data (a file that holds code is refused here, before any of
    # it runs), and those same bytes are what torch-fidelity gets
    data = Path(path).read_bytes()
    read_fid_weights(path, data=data)
    try:
        metric = FrechetInceptionDistance(feature=FEATURE_DIM, feature_extractor_weights_path=io.BytesIO(data),
                                          normalize=True)
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
            for batch in tqdm(_iter_batches(images, batch_size), desc=desc, disable=not progress, leave=False,
                              **tqdm_kwargs()):
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
        reference: ``(mu, sigma)`` (e.g. from :func:`~qidbm.metrics.fid_reference.reference_stats`)
            or reference images.
        backend: ``"pytorch-fid"`` (the paper's protocol: pytorch-fid's InceptionV3 as the
            feature module of torchmetrics' metric, :class:`InceptionFID`) or ``"torchmetrics"``
            (torchmetrics' built-in ``FrechetInceptionDistance(feature=2048, normalize=True)``,
            i.e. torch-fidelity's network loading the same weights file; needs reference
            images; it truncates to uint8 and scales by (x - 128) / 128, so values differ
            slightly: -0.15% on 2 x 100 random 28x28 images in ``tests/metrics/test_fid.py``).
        weights_path: Inception weights (else ``$QIDBM_FID_WEIGHTS``, else pytorch-fid's
            download).
        batch_size, device, progress: Inception batch size, device and tqdm bar.
        accumulator: reuse an existing :class:`FIDAccumulator` (pytorch-fid backend;
            it is reset before and after).
        fd_method: ``"sqrtm"`` (pytorch-fid's numerics, default) or ``"eigh"`` (faster,
            equal to round-off); see :func:`~qidbm.metrics.frechet.frechet_distance`.
            pytorch-fid backend only.
    """
    dev = torch.device(device) if device is not None else (accumulator.device if accumulator else _default_device())
    if backend == "torchmetrics":
        if _is_stats(reference):
            raise ValueError(
                "backend='torchmetrics' needs reference images, not (mu, sigma); "
                "pass the images or use backend='pytorch-fid'."
            )
        return _torch_fidelity_fid(generated_images, reference, weights_path, batch_size, dev, progress)
    if backend != "pytorch-fid":
        raise ValueError(f"backend must be 'pytorch-fid' or 'torchmetrics', got {backend!r}.")
    acc = accumulator or FIDAccumulator(weights_path, batch_size=batch_size, device=dev, progress=progress)
    acc.reset()
    if _is_stats(reference):
        mu_r, sigma_r = reference
    else:
        mu_r, sigma_r = acc.update(reference, real=True).compute_stats(real=True)
    mu_g, sigma_g = acc.update(generated_images).compute_stats()
    acc.reset()
    return frechet_distance(mu_g, sigma_g, mu_r, sigma_r, method=fd_method)
