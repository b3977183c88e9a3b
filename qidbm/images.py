"""Visible vectors as images: decoding with the recorded encoding, and PNG grids."""

from __future__ import annotations

import math
from pathlib import Path

from torch import Tensor


def visible_to_images(x: Tensor, data_info: dict | None) -> Tensor:
    """Decode visible vectors to images [N, C, H, W] in [0, 1] with the recorded encoding.

    Without data information (a model trained outside ``qidbm fit``), a square single-channel
    image is assumed for binary units.
    """
    if data_info is not None:
        from qidbm.data.encodings import decode

        return decode(x.detach().float().cpu(), data_info)
    n = x.shape[1]
    side = int(math.isqrt(n))
    if side * side != n:
        raise ValueError(f"cannot lay out {n} visible units as an image without data_info")
    return x.detach().float().cpu().clamp(0, 1).view(-1, 1, side, side)


def save_grid(images: Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Save images [N, C, H, W] in [0, 1] as one PNG grid (written atomically).

    Rows of features without an image shape (H == 1: data recorded with image shape [1, 1, D])
    are stacked one sample per line without padding, an N x D heat map, since a square grid
    of one-pixel strips hides more than it shows.
    """
    from torchvision.utils import save_image

    from qidbm.atomic import atomic_write

    strips = images.ndim == 4 and images.shape[2] == 1
    nrow = 1 if strips else nrow or max(1, int(math.sqrt(images.shape[0])))
    padding = 0 if strips else 2
    return atomic_write(path, lambda f: save_image(images, f, nrow=nrow, padding=padding, pad_value=0.5, format="png"),
                        fsync=False)
