"""Tiny data sets on disk in torchvision's layouts, for tests (no network, milliseconds).

``make_idx_dataset(root, "MNIST")`` writes ``<root>/MNIST/raw/{train,t10k}-{images-idx3,
labels-idx1}-ubyte.gz`` (real IDX, magic 2051/2049, gzipped); ``make_celeba_folder(root)``
writes ``<root>/celeba/img_align_celeba/*.jpg`` (178x218 RGB) and the five annotation files
torchvision's CelebA reads. Both return the generated pixels so tests can compare exactly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .idx import write_idx

__all__ = ["make_celeba_folder", "make_idx_dataset", "CELEBA_ATTRS"]

CELEBA_ATTRS = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()


def make_idx_dataset(
    root: str | os.PathLike,
    name: str = "MNIST",
    n_train: int = 64,
    n_test: int = 32,
    *,
    seed: int = 0,
    gz: bool = True,
) -> dict[str, np.ndarray]:
    """Write a random 28x28 uint8 data set in ``<root>/<name>/raw/`` (gzipped unless ``gz=False``).

    Pixel values cover 0..255 (including the binarisation edge 127/128). Returns
    ``{"train": images [n_train, 28, 28], "test": ..., "train_labels": ..., "test_labels": ...}``.
    """
    rng = np.random.default_rng(seed)
    raw = Path(root) / name / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out: dict[str, np.ndarray] = {}
    ext = ".gz" if gz else ""
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[0, 0, :4] = [0, 127, 128, 255]
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte{ext}", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{ext}", labels)
        out[split], out[f"{split}_labels"] = images, labels
    return out


def make_celeba_folder(
    root: str | os.PathLike,
    partition: tuple[int, ...] = (0, 0, 0, 0, 0, 0, 1, 2, 2, 2),
    *,
    seed: int = 0,
    size: tuple[int, int] = (178, 218),
) -> dict[str, list[Path]]:
    """Write a tiny CelebA copy in torchvision's layout; image i goes to split ``partition[i]``
    (0 train, 1 valid, 2 test). Images are smooth random RGB JPEGs of ``size`` (width, height),
    like the aligned CelebA images. Returns ``{"train": [paths], "valid": [...], "test": [...]}``.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = Path(root) / "celeba"
    img_dir = base / "img_align_celeba"
    img_dir.mkdir(parents=True, exist_ok=True)
    w, h = size
    names = [f"{i + 1:06d}.jpg" for i in range(len(partition))]
    yy, xx = np.mgrid[0:h, 0:w]
    for name in names:
        # Smooth images (JPEG keeps them nearly intact), different per file and channel.
        a, b, c = rng.uniform(0.01, 0.08, size=3), rng.uniform(0.01, 0.08, size=3), rng.uniform(0, 6.3, size=3)
        img = np.stack([127.5 + 120 * np.sin(a[k] * xx + b[k] * yy + c[k]) for k in range(3)], axis=-1)
        Image.fromarray(img.round().astype(np.uint8), mode="RGB").save(img_dir / name, quality=95)
    lines_part = [f"{n} {p}" for n, p in zip(names, partition)]
    (base / "list_eval_partition.txt").write_text("\n".join(lines_part) + "\n")
    (base / "identity_CelebA.txt").write_text("\n".join(f"{n} {i % 3 + 1}" for i, n in enumerate(names)) + "\n")
    attr_rows = [f"{n} " + " ".join(str(int(v)) for v in rng.choice([-1, 1], size=40)) for n in names]
    (base / "list_attr_celeba.txt").write_text(f"{len(names)}\n" + " ".join(CELEBA_ATTRS) + "\n" + "\n".join(attr_rows) + "\n")
    bbox_rows = [f"{n} 95 71 226 313" for n in names]
    (base / "list_bbox_celeba.txt").write_text(f"{len(names)}\nimage_id x_1 y_1 width height\n" + "\n".join(bbox_rows) + "\n")
    lm_header = "lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y"
    lm_rows = [f"{n} 69 109 106 113 77 142 73 152 108 154" for n in names]
    (base / "list_landmarks_align_celeba.txt").write_text(f"{len(names)}\n{lm_header}\n" + "\n".join(lm_rows) + "\n")
    splits = {"train": 0, "valid": 1, "test": 2}
    return {s: [img_dir / n for n, p in zip(names, partition) if p == k] for s, k in splits.items()}
