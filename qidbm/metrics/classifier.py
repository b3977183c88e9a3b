"""Class coverage of generated images: a small shipped digit/clothing classifier.

FID alone does not say *which* classes a model draws: a machine that draws only 7s can
still score a middling FID. Class coverage is the histogram of the classes a fixed
classifier predicts for the samples; a model that generates the data draws every class
near its data frequency (about 10 % each on MNIST and Fashion-MNIST).

The classifier (:class:`DigitClassifier`, two conv layers and two linear layers) is
trained by ``scripts/train_classifier.py`` on the 60,000 training images, half of each
batch binarised at 0.5, so it reads both the binarised samples of DBMs and the grey
samples of GRBMs. Its weights ship with the package (``qidbm/metrics/weights/``); its
test accuracies are stored beside them and printed by :func:`load_classifier`'s caller.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS_PACKAGE = "qidbm.metrics.weights"
#: data set name (as in a checkpoint's ``data_info["dataset"]``) -> shipped weights file
CLASSIFIER_FILES = {"MNIST": "classifier_mnist.pt", "FashionMNIST": "classifier_fashion_mnist.pt"}
CLASS_NAMES = {
    "MNIST": [str(i) for i in range(10)],
    "FashionMNIST": ["T-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"],
}


class DigitClassifier(nn.Module):
    """28x28 grey-level (or binary) image -> 10 class logits.

    conv3x3(1->16) relu maxpool2, conv3x3(16->32) relu maxpool2, linear(1568->128) relu, linear(128->10).
    Inputs are images [N, 1, 28, 28] (or flat [N, 784]) with pixels in [0, 1].
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            x = x.view(-1, 1, 28, 28)
        return self.head(self.features(x - 0.5))


def classifier_path(dataset: str) -> Path:
    """Path of the shipped weights for ``dataset`` ("MNIST" or "FashionMNIST")."""
    if dataset not in CLASSIFIER_FILES:
        raise ValueError(
            f"no shipped classifier for data set {dataset!r}; class coverage is available for "
            f"{sorted(CLASSIFIER_FILES)} (train one with scripts/train_classifier.py)"
        )
    return Path(str(resources.files(WEIGHTS_PACKAGE).joinpath(CLASSIFIER_FILES[dataset])))


def load_classifier(dataset: str, path: str | Path | None = None, map_location: str | torch.device = "cpu") -> DigitClassifier:
    """The trained classifier for ``dataset`` (shipped weights unless ``path`` is given), in eval mode."""
    p = Path(path) if path is not None else classifier_path(dataset)
    if not p.is_file():
        raise FileNotFoundError(
            f"classifier weights {p} not found; reinstall qidbm (they ship with the package) or train them with "
            f"`python scripts/train_classifier.py --dataset {dataset}`"
        )
    from qidbm.checkpoint import safe_torch_load

    net = DigitClassifier()
    net.load_state_dict(safe_torch_load(p, map_location, what="classifier weights"))  # data only: code is refused
    return net.eval()


def classifier_card(dataset: str) -> dict:
    """The JSON card stored beside the shipped weights: test accuracies and the training command."""
    p = classifier_path(dataset).with_suffix(".json")
    return json.loads(p.read_text()) if p.is_file() else {}


@torch.no_grad()
def predict_classes(classifier: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted class index per image; ``images`` [N, 1, 28, 28] or [N, 784] in [0, 1]."""
    device = next(classifier.parameters()).device
    out = [classifier(b.to(device, torch.float32)).argmax(1).cpu() for b in images.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def class_histogram(labels: Tensor, num_classes: int = 10) -> Tensor:
    """Fraction of samples per class, ``[num_classes]`` float64 summing to 1."""
    if labels.numel() == 0:
        raise ValueError("class_histogram needs at least one label")
    counts = torch.bincount(labels.long().flatten(), minlength=num_classes).to(torch.float64)
    return counts / counts.sum()


def coverage_summary(fractions: Tensor, low: float = 0.04, high: float = 0.20) -> dict:
    """Coverage figures of a class histogram: how many classes lie in ``[low, high]``, the smallest
    and largest fraction, and the KL divergence ``sum_c f_c log(f_c K)`` from the uniform distribution
    over the K classes (0 for perfectly balanced samples, log K when one class takes all)."""
    f = fractions.to(torch.float64)
    k = f.numel()
    nz = f[f > 0]
    return {
        "fractions": [round(float(x), 4) for x in f],
        "classes_in_range": int(((f >= low) & (f <= high)).sum()),
        "range": [low, high],
        "min_fraction": float(f.min()),
        "max_fraction": float(f.max()),
        "kl_from_uniform": float((nz * torch.log(nz * k)).sum()),
        "all_in_range": bool(((f >= low) & (f <= high)).all()),
    }


def class_coverage(images: Tensor, dataset: str, classifier: nn.Module | None = None) -> dict:
    """Class coverage of generated ``images`` of ``dataset``: :func:`coverage_summary` of the
    predicted-class histogram, plus the class names."""
    net = classifier if classifier is not None else load_classifier(dataset)
    frac = class_histogram(predict_classes(net, images))
    out = coverage_summary(frac)
    out["classes"] = CLASS_NAMES.get(dataset, [str(i) for i in range(frac.numel())])
    return out
