"""Pixel encodings: images [N, C, H, W] in [0, 1] <-> visible vectors [N, n_visible].

Three encodings, selected by ``info["encoding"]``. Pixels are flattened in
``images.reshape(N, -1)`` order (channel, row, column), D = C * H * W pixels, and an 8-bit
pixel value is ``b = round(255 * x)`` in {0, ..., 255}.

``binary`` (n_visible = D)
    ``v_p = 1[x_p > 0.5]`` (for 8-bit pixels: ``b_p >= 128``). Decode is the identity
    (values clipped to [0, 1]), so binary samples or their conditional means are images.

``bitplanes`` (n_visible = 8 D)
    Bit plane k (k = 0 least significant, ..., 7 most significant) of every pixel:
    ``v[k * D + p] = (b_p >> k) & 1``. The order is plane-major (``bit_order =
    "plane_major_lsb_first"``): units ``k*D .. (k+1)*D - 1`` form plane k as an image, so
    ``x.view(N, 8, C, H, W)[:, 7]`` is the most significant plane. Decode is the exact
    inverse ``x_p = sum_k 2^k v[k D + p] / 255`` (for {0,1} samples it returns the
    original 8-bit image exactly; for conditional means in [0, 1] it is their expectation).

``continuous`` (n_visible = D)
    Gaussian visibles: ``v = (x - mean) / std`` with the statistics recorded in
    ``info["normalization"]``: ``kind = "pixel"`` (one mean/std per pixel, from the training
    split, std floored at ``std_floor``), ``"global"`` (one scalar mean/std) or ``"none"``
    (v = x). Decode: ``x = clip(v * std + mean, 0, 1)``.

**Stochastic binarisation** (the likelihood literature's binarised MNIST, Salakhutdinov and Murray
2008) is a pixel transformation applied before the ``binary`` encoding, not an encoding of its own:
:func:`stochastic_binarize` sets pixel p to 255 with probability ``b_p / 255`` and to 0 otherwise,
so ``binary`` then reads ``v_p ~ Bernoulli(x_p)``. The MNIST data modules' ``binarization``
option uses it (:class:`~qidbm.data.MNISTDataModule`); ``info["binarization"]`` records it.

``info`` is the small JSON-able dict a data module's ``data_info()`` returns and that is
saved inside checkpoints, so that :func:`decode` turns samples into pixels without data::

    {"dataset": "MNIST", "encoding": "bitplanes", "image_shape": [1, 28, 28],
     "n_visible": 6272, "bit_order": "plane_major_lsb_first",
     "normalization": {"kind": "none", "mean": None, "std": None, "std_floor": None}}
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, Literal, Sequence

import torch
from torch import Tensor

__all__ = [
    "BITS",
    "BIT_ORDER",
    "ENCODINGS",
    "NORMALIZATIONS",
    "Encoder",
    "compute_normalization",
    "decode",
    "encode",
    "encode_uint8",
    "make_info",
    "n_visible_for",
    "stochastic_binarize",
    "validate",
    "validate_images",
    "validate_info",
]

Encoding = Literal["binary", "bitplanes", "continuous"]
Normalize = Literal["pixel", "global", "none"]
ENCODINGS: tuple[str, ...] = ("binary", "bitplanes", "continuous")
NORMALIZATIONS: tuple[str, ...] = ("pixel", "global", "none")
BITS = 8
BIT_ORDER = "plane_major_lsb_first"
_INFO_KEYS = ("dataset", "encoding", "image_shape", "n_visible", "normalization")


def n_visible_for(encoding: str, image_shape: Sequence[int]) -> int:
    """Number of visible units: ``C*H*W`` for binary/continuous, ``8*C*H*W`` for bitplanes."""
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; choose one of {list(ENCODINGS)}")
    d = math.prod(int(s) for s in image_shape)
    return BITS * d if encoding == "bitplanes" else d


def _no_normalization() -> dict[str, Any]:
    return {"kind": "none", "mean": None, "std": None, "std_floor": None}


def make_info(
    dataset: str,
    encoding: str,
    image_shape: Sequence[int],
    normalization: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build (and validate) an ``info`` dict; ``normalization`` defaults to none.

    Only ``continuous`` may carry a normalisation other than ``"none"``. ``extra`` keys
    (e.g. ``preprocessing``) are stored as they are and must be JSON-able.
    """
    info = {
        "dataset": str(dataset),
        "encoding": encoding,
        "image_shape": [int(s) for s in image_shape],
        "n_visible": n_visible_for(encoding, image_shape),
        "bit_order": BIT_ORDER if encoding == "bitplanes" else None,
        "normalization": dict(normalization) if normalization is not None else _no_normalization(),
        **extra,
    }
    validate_info(info)
    return info


def validate_info(info: dict[str, Any]) -> None:
    """Check an ``info`` dict is complete and self-consistent; raise ``ValueError`` if not."""
    if not isinstance(info, dict):
        raise ValueError(f"info must be a dict (from data_info()), got {type(info).__name__}")
    missing = [k for k in _INFO_KEYS if k not in info]
    if missing:
        raise ValueError(f"info is missing keys {missing}; build it with qidbm.data.make_info or a data module's data_info()")
    enc = info["encoding"]
    if enc not in ENCODINGS:
        raise ValueError(f"info['encoding'] = {enc!r}; choose one of {list(ENCODINGS)}")
    shape = info["image_shape"]
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"info['image_shape'] must be [C, H, W] with positive sizes, got {shape}")
    if int(info["n_visible"]) != n_visible_for(enc, shape):
        raise ValueError(
            f"info['n_visible'] = {info['n_visible']} does not match encoding {enc!r} of images "
            f"{list(shape)} (expected {n_visible_for(enc, shape)})"
        )
    if enc == "bitplanes" and info.get("bit_order", BIT_ORDER) != BIT_ORDER:
        raise ValueError(f"unsupported bit_order {info.get('bit_order')!r}; this version reads {BIT_ORDER!r}")
    norm = info["normalization"]
    if not isinstance(norm, dict) or "kind" not in norm:
        raise ValueError(f"info['normalization'] must be a dict with a 'kind' key, got {norm!r}")
    kind = norm["kind"]
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalization kind {kind!r}; choose one of {list(NORMALIZATIONS)}")
    if enc != "continuous" and kind != "none":
        raise ValueError(f"encoding {enc!r} takes no normalisation, got kind {kind!r}")
    if kind == "none":
        return
    d = math.prod(int(s) for s in shape)
    want = d if kind == "pixel" else 1
    for key in ("mean", "std"):
        val = norm.get(key)
        if val is None or len(val) != want:
            raise ValueError(
                f"normalization {kind!r} needs {key} as a list of {want} floats, got "
                f"{'None' if val is None else f'{len(val)} values'}"
            )
    if not all(math.isfinite(s) and s > 0 for s in norm["std"]):
        raise ValueError("normalization std must be finite and > 0 everywhere (use a std floor)")


def compute_normalization(
    images: Tensor, kind: str = "pixel", std_floor: float = 1e-2
) -> dict[str, Any]:
    """Normalisation statistics of ``images`` ([N, C, H, W], values in [0, 1], or uint8).

    ``pixel``: ``mean_p = (1/N) sum_n x_np``, ``std_p = max(sqrt((1/N) sum_n (x_np - mean_p)^2),
    std_floor)`` for every pixel p; ``global``: one mean/std over all N*D values. Sums are
    accumulated in float64 (chunked, so uint8 data sets of any size fit). The floor keeps
    constant pixels (MNIST's borders have std 0) from dividing by zero.
    """
    if kind not in NORMALIZATIONS:
        raise ValueError(f"normalize={kind!r}; choose one of {list(NORMALIZATIONS)}")
    if kind == "none":
        return _no_normalization()
    if not std_floor > 0:
        raise ValueError(f"std_floor must be > 0, got {std_floor}")
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 images to compute a normalisation, got {n}")
    flat = images.reshape(n, -1)
    scale = 255.0 if flat.dtype == torch.uint8 else 1.0
    s1 = torch.zeros(flat.shape[1], dtype=torch.float64)
    s2 = torch.zeros(flat.shape[1], dtype=torch.float64)
    for start in range(0, n, 8192):
        chunk = flat[start : start + 8192].to(torch.float64) / scale
        s1 += chunk.sum(0)
        s2 += (chunk * chunk).sum(0)
    if kind == "global":
        m = s1.sum() / (n * flat.shape[1])
        var = s2.sum() / (n * flat.shape[1]) - m * m
        mean, std = m.reshape(1), var.clamp_min(0).sqrt().reshape(1)
    else:
        mean = s1 / n
        std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    std = std.clamp_min(std_floor)
    return {"kind": kind, "mean": mean.tolist(), "std": std.tolist(), "std_floor": float(std_floor)}


def binarization_seed(seed: int, *salt: Any) -> int:
    """A 63-bit generator seed derived from ``seed`` and a salt (e.g. ``"test"``, or ``"train", epoch``):
    the first 8 bytes of ``sha256(json([seed, *salt]))``, so every split and epoch gets its own stream."""
    digest = hashlib.sha256(json.dumps([int(seed), *salt]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def stochastic_binarize(pixels: Tensor, seed: int, chunk: int = 4096) -> Tensor:
    """Stochastic binarisation of 8-bit images: uint8 [N, ...] -> uint8 in {0, 255}, same shape.

    ``out_p = 255 * 1[u_p < b_p / 255]`` with ``u_p ~ U[0, 1)`` drawn by a CPU ``torch.Generator``
    seeded with ``seed``, in chunks of ``chunk`` images in order (part of the definition: the
    same seed gives the same images on any machine with this torch). Each pixel is therefore 1
    with probability its intensity: 0 stays 0, 255 stays 255. The ``binary`` encoding of the
    result (``b >= 128``) is the drawn bits.
    """
    if pixels.dtype != torch.uint8:
        raise ValueError(f"stochastic_binarize takes uint8 pixels, got {pixels.dtype}")
    g = torch.Generator().manual_seed(int(seed))
    out = torch.empty_like(pixels, device="cpu")
    src = pixels.cpu()
    for i in range(0, src.shape[0], chunk):
        part = src[i : i + chunk]
        u = torch.rand(part.shape, generator=g)
        out[i : i + chunk] = (u < part.to(torch.float32) / 255.0).to(torch.uint8) * 255
    return out


class Encoder:
    """Encoder/decoder for one ``info``; caches the normalisation tensors per device/dtype.

    ``Encoder(info).encode(images)`` equals ``encode(images, info)``; use the object in hot
    loops (the data modules encode every batch with one).
    """

    def __init__(self, info: dict[str, Any]):
        validate_info(info)
        self.info = info
        self.encoding: str = info["encoding"]
        self.image_shape: tuple[int, int, int] = tuple(int(s) for s in info["image_shape"])  # type: ignore[assignment]
        self.n_pixels = math.prod(self.image_shape)
        self.n_visible = int(info["n_visible"])
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor] | None] = {}

    def _norm(self, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor] | None:
        key = (device, dtype)
        if key not in self._stats:
            norm = self.info["normalization"]
            if self.encoding != "continuous" or norm["kind"] == "none":
                self._stats[key] = None
            else:
                mean = torch.tensor(norm["mean"], dtype=torch.float64).to(device=device, dtype=dtype)
                std = torch.tensor(norm["std"], dtype=torch.float64).to(device=device, dtype=dtype)
                self._stats[key] = (mean, std)
        return self._stats[key]

    def encode_uint8(self, pixels: Tensor) -> Tensor:
        """Encode 8-bit images (uint8, [N, C, H, W] or [N, D]) to float32 [N, n_visible]."""
        if pixels.dtype != torch.uint8:
            raise ValueError(f"encode_uint8 needs uint8 pixels, got {pixels.dtype}; use encode() for floats in [0, 1]")
        b = pixels.reshape(pixels.shape[0], -1)
        if b.shape[1] != self.n_pixels:
            raise ValueError(
                f"got {b.shape[1]} pixels per image, info says image_shape {list(self.image_shape)} "
                f"({self.n_pixels} pixels)"
            )
        if self.encoding == "binary":
            return (b >= 128).to(torch.float32)  # == (b / 255 > 0.5)
        if self.encoding == "bitplanes":
            shifts = torch.arange(BITS, device=b.device, dtype=torch.uint8).view(1, BITS, 1)
            bits = (b.unsqueeze(1) >> shifts) & 1  # [N, 8, D], plane-major
            return bits.reshape(b.shape[0], BITS * self.n_pixels).to(torch.float32)
        return self._normalize(b.to(torch.float32) / 255.0)

    def _normalize(self, x: Tensor) -> Tensor:
        stats = self._norm(x.device, x.dtype)
        if stats is None:
            return x
        mean, std = stats
        return (x - mean) / std

    def encode(self, images: Tensor) -> Tensor:
        """Encode images [N, C, H, W] with values in [0, 1] to float32 [N, n_visible].

        binary: ``x > 0.5``; bitplanes: bits of ``round(255 x)`` (plane-major, LSB first);
        continuous: ``(x - mean) / std``. uint8 input is taken as 8-bit pixels.
        """
        if images.dtype == torch.uint8:
            validate_images(images, self.info)
            return self.encode_uint8(images)
        validate_images(images, self.info)
        x = images.reshape(images.shape[0], -1)
        if self.encoding == "binary":
            return (x > 0.5).to(torch.float32)
        if self.encoding == "bitplanes":
            return self.encode_uint8(torch.round(x * 255.0).to(torch.uint8))
        return self._normalize(x.to(torch.float32))

    def decode(self, x: Tensor) -> Tensor:
        """Decode visibles [N, n_visible] to images [N, C, H, W] in [0, 1] (float32; float64 in, float64 out).

        binary: identity; bitplanes: ``sum_k 2^k v_k / 255``; continuous: ``v * std + mean``;
        the result is clipped to [0, 1].
        """
        if not isinstance(x, Tensor):
            raise ValueError(f"decode expects a torch.Tensor [N, {self.n_visible}], got {type(x).__name__}")
        if x.ndim != 2 or x.shape[1] != self.n_visible:
            raise ValueError(
                f"decode expects visibles of shape [N, {self.n_visible}] for encoding {self.encoding!r} "
                f"of images {list(self.image_shape)}, got {list(x.shape)}"
            )
        v = x if x.dtype == torch.float64 else x.to(torch.float32)  # float64 stays exact
        n = v.shape[0]
        if self.encoding == "bitplanes":
            weights = (2.0 ** torch.arange(BITS, device=v.device, dtype=v.dtype)).view(1, BITS, 1)
            pix = (v.view(n, BITS, self.n_pixels) * weights).sum(1) / 255.0
        elif self.encoding == "continuous":
            stats = self._norm(v.device, v.dtype)
            pix = v if stats is None else v * stats[1] + stats[0]
        else:
            pix = v
        return pix.clamp(0.0, 1.0).reshape(n, *self.image_shape)


def encode(images: Tensor, info: dict[str, Any]) -> Tensor:
    """Encode images [N, C, H, W] in [0, 1] into visibles [N, n_visible] (float32); see module doc."""
    return Encoder(info).encode(images)


def encode_uint8(pixels: Tensor, info: dict[str, Any]) -> Tensor:
    """Encode 8-bit pixels (uint8 [N, C, H, W]) into visibles [N, n_visible] (float32)."""
    return Encoder(info).encode_uint8(pixels)


def decode(x: Tensor, info: dict[str, Any]) -> Tensor:
    """Decode visibles [N, n_visible] into images [N, C, H, W] in [0, 1]; see module doc."""
    return Encoder(info).decode(x)


def _example(x: Tensor, mask: Tensor) -> str:
    idx = torch.nonzero(mask)[0].tolist()
    return f"x[{', '.join(map(str, idx))}] = {x[tuple(idx)].item():.6g}"


def validate_images(images: Tensor, info: dict[str, Any]) -> None:
    """Check images before encoding: a tensor [N, C, H, W] matching ``info['image_shape']``,
    floats in [0, 1] (or uint8), all finite. Raises ``ValueError`` saying how to fix it."""
    if not isinstance(images, Tensor):
        raise ValueError(f"images must be a torch.Tensor [N, C, H, W], got {type(images).__name__}")
    shape = [int(s) for s in info["image_shape"]]
    if images.ndim == 3 and shape[0] == 1 and list(images.shape[1:]) == shape[1:]:
        raise ValueError(f"images have shape {list(images.shape)}; add the channel axis: images.unsqueeze(1) -> [N, {', '.join(map(str, shape))}]")
    if images.ndim != 4 or list(images.shape[1:]) != shape:
        raise ValueError(f"images must have shape [N, {', '.join(map(str, shape))}], got {list(images.shape)}")
    if images.dtype == torch.uint8:
        return
    if not images.is_floating_point():
        raise ValueError(
            f"images have dtype {images.dtype}; pass floats in [0, 1] (images.float() / 255 for 8-bit) or uint8"
        )
    finite = torch.isfinite(images)
    if not bool(finite.all()):
        raise ValueError(f"images contain {int((~finite).sum())} non-finite values ({_example(images, ~finite)})")
    lo, hi = float(images.min()), float(images.max())
    if lo < 0.0 or hi > 1.0:
        if hi <= 255.0 and lo >= 0.0 and bool((images == images.round()).all()):
            raise ValueError(
                f"images look like 8-bit values in [0, 255] (max {hi:g}); divide by 255 first "
                f"(encode(images / 255, info)) or pass them as uint8"
            )
        raise ValueError(f"images must be in [0, 1], got values in [{lo:g}, {hi:g}]")


def validate(x: Tensor, info: dict[str, Any], name: str = "batch") -> None:
    """Check an encoded batch before training on it; raise ``ValueError`` saying what is wrong.

    Checks: a floating tensor of shape [N, n_visible]; all values finite; for ``binary`` and
    ``bitplanes`` every value in {0, 1}. The messages name the likely cause (raw images,
    8-bit values, greyscale values fed to a binary model, wrong encoding) and the fix.
    """
    validate_info(info)
    enc, nv = info["encoding"], int(info["n_visible"])
    shape = [int(s) for s in info["image_shape"]]
    d = math.prod(shape)
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [N, {nv}], got {type(x).__name__}")
    if x.ndim >= 3 and list(x.shape[-3:]) == shape or (x.ndim == 3 and shape[0] == 1 and list(x.shape[1:]) == shape[1:]):
        raise ValueError(
            f"{name} has image shape {list(x.shape)}; models take encoded visibles [N, {nv}]: "
            f"use qidbm.data.encode(images, info) (encoding {enc!r})"
        )
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [N, {nv}] (encoding {enc!r} of images {shape}), got shape {list(x.shape)}")
    if x.shape[1] != nv:
        hint = ""
        if enc == "bitplanes" and x.shape[1] == d:
            hint = f"; it has one column per pixel, but 'bitplanes' uses {BITS} units per pixel: encode the images with encoding='bitplanes'"
        elif enc != "bitplanes" and x.shape[1] == BITS * d:
            hint = f"; it has {BITS} columns per pixel, i.e. looks bit-plane encoded: use encoding='bitplanes' (and a model with {BITS * d} visibles)"
        raise ValueError(f"{name} has {x.shape[1]} columns, the data info says n_visible = {nv} (encoding {enc!r}, images {shape}){hint}")
    if x.dtype == torch.uint8 or not x.is_floating_point():
        hi = float(x.max()) if x.numel() else 0.0
        if hi > 1:
            raise ValueError(
                f"{name} has integer dtype {x.dtype} with values up to {hi:g}: got 8-bit values in [0, 255]; "
                f"encode the images (divided by 255) with encoding='binary' (threshold 0.5), 'bitplanes' (all 8 bits) "
                f"or 'continuous' (Gaussian visibles)"
            )
        raise ValueError(f"{name} has dtype {x.dtype}; convert with x.float() (batches are float32)")
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        n_nan, n_inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
        raise ValueError(
            f"{name} has non-finite values ({n_nan} NaN, {n_inf} inf; {_example(x, ~finite)}); check the data "
            f"pipeline{' and the normalisation (std floor)' if enc == 'continuous' else ''}"
        )
    if x.numel() == 0:
        return
    lo, hi = float(x.min()), float(x.max())
    if hi > 1.0 and lo >= 0.0 and hi <= 255.0 and bool((x == x.round()).all()):
        raise ValueError(
            f"{name}: got 8-bit values in [0, 255] (max {hi:g}); scale to [0, 1] and encode with "
            f"qidbm.data.encode(images / 255, info) — encoding='binary' thresholds at 0.5, 'bitplanes' keeps "
            f"all 8 bits, 'continuous' normalises for Gaussian visibles"
        )
    if enc in ("binary", "bitplanes"):
        bad = (x != 0) & (x != 1)
        if bool(bad.any()):
            if lo >= 0.0 and hi <= 1.0:
                cause = (
                    "values in [0, 1] that are not 0/1 (greyscale pixels or probabilities); binarise with "
                    f"qidbm.data.encode(images, info) (encoding {enc!r}), or use encoding='continuous' for "
                    "Gaussian visibles"
                )
            else:
                cause = (
                    f"values in [{lo:g}, {hi:g}] (normalised or continuous data?); {enc!r} units take 0/1: "
                    "encode the images with qidbm.data.encode, or use encoding='continuous' for real values"
                )
            raise ValueError(f"{name}: encoding {enc!r} needs values in {{0, 1}}, got {cause} ({_example(x, bad)})")
