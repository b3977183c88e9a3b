"""Class coverage, precision/recall and the copying check: exact small cases and the shipped classifier."""

import math
from pathlib import Path

import pytest
import torch

from qidbm.metrics.classifier import (
    CLASSIFIER_FILES,
    class_coverage,
    class_histogram,
    classifier_card,
    coverage_summary,
    load_classifier,
    predict_classes,
)
from qidbm.metrics.precision_recall import copying_report, nearest_neighbour_distances, precision_recall

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


def test_histogram_and_summary_exact():
    f = class_histogram(torch.tensor([0, 0, 1, 3]), num_classes=4)
    assert f.tolist() == [0.5, 0.25, 0.0, 0.25]
    s = coverage_summary(torch.full((10,), 0.1, dtype=torch.float64))
    assert s["classes_in_range"] == 10 and s["all_in_range"] and abs(s["kl_from_uniform"]) < 1e-12
    one = torch.zeros(10, dtype=torch.float64)
    one[7] = 1
    s = coverage_summary(one)
    assert s["classes_in_range"] == 0 and not s["all_in_range"]
    assert s["kl_from_uniform"] == pytest.approx(math.log(10))
    with pytest.raises(ValueError, match="at least one label"):
        class_histogram(torch.zeros(0, dtype=torch.long))


@pytest.mark.parametrize("dataset", sorted(CLASSIFIER_FILES))
def test_shipped_classifiers_load_and_state_their_accuracy(dataset):
    net = load_classifier(dataset)
    card = classifier_card(dataset)
    assert card["dataset"] == dataset and card["test_accuracy_grey"] > 0.85 and "command" in card
    out = predict_classes(net, torch.rand(5, 784))
    assert out.shape == (5,) and out.dtype == torch.long


def test_unknown_dataset_names_the_fix():
    with pytest.raises(ValueError, match="scripts/train_classifier.py"):
        load_classifier("CelebA")


@pytest.mark.skipif(not (SHARED / "MNIST").is_dir(), reason="needs ../shared/data")
def test_mnist_classifier_on_real_test_digits_covers_every_class():
    from qidbm.data import MNISTDataModule

    x, y = MNISTDataModule(root=str(SHARED)).labelled_split("test")
    x = x[:2000].float() / 255
    y = y[:2000]
    net = load_classifier("MNIST")
    assert (predict_classes(net, x) == y).double().mean() > 0.97
    assert (predict_classes(net, (x > 0.5).float()) == y).double().mean() > 0.97
    cov = class_coverage((x > 0.5).float(), "MNIST", net)
    assert cov["all_in_range"]  # the data itself passes the 4-20 % acceptance band
    only_ones = (x[y == 1][:300] > 0.5).float()
    assert class_coverage(only_ones, "MNIST", net)["classes_in_range"] == 0


def test_precision_recall_exact_small_case():
    real = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    # generated points: two inside the real balls, one far away
    gen = torch.tensor([[0.5], [2.5], [50.0], [51.0], [52.0]])
    r = precision_recall(gen, real, neighbourhood=1)
    # real 1-NN radii: 1, 1, 1, 1, 7 -> 0.5 and 2.5 are inside, 50, 51, 52 are not
    assert r["precision"] == pytest.approx(2 / 5)
    # generated 1-NN radii: 2, 2, 1, 1, 1 -> real 0, 1, 2 lie within 2 of 0.5 / 2.5; 3 within 2 of 2.5; 10 not
    assert r["recall"] == pytest.approx(4 / 5)
    with pytest.raises(ValueError, match="same D"):
        precision_recall(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="more than neighbourhood"):
        precision_recall(torch.zeros(3, 2), torch.zeros(5, 2), neighbourhood=3)


def test_copying_report_flags_memorised_samples():
    g = torch.Generator().manual_seed(0)
    train = (torch.rand(500, 64, generator=g) < 0.3).float()
    test = (torch.rand(100, 64, generator=g) < 0.3).float()
    fresh = (torch.rand(100, 64, generator=g) < 0.3).float()
    assert nearest_neighbour_distances(train[:3], train).tolist() == [0.0, 0.0, 0.0]
    copied = copying_report(train[:100], train, test)
    honest = copying_report(fresh, train, test)
    assert copied["ratio"] == 0.0 and copied["fraction_closer_than_test_1pct"] == 1.0
    assert 0.8 < honest["ratio"] < 1.2 and honest["fraction_closer_than_test_1pct"] < 0.1
