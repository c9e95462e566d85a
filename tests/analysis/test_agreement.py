"""Progression labels from changes, the Table-3 cross table and Cohen's kappa with its confidence interval."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from analysis.stats import agreement as a


@pytest.mark.parametrize(
    ("delta", "tolerance", "label"),
    [(2.0, 1.0, a.INCREASE), (-2.0, 1.0, a.DECREASE), (1.0, 1.0, a.STABLE), (-0.5, 1.0, a.STABLE), (None, 1.0, None)],
)
def test_image_label_uses_the_tolerance_both_ways(delta, tolerance, label):
    assert a.image_label(delta, tolerance) == label


def test_relative_change_from_zero_and_missing_values():
    assert a.relative_change(10.0, 15.0) == 0.5
    assert a.relative_change(0.0, 0.0) == 0.0
    assert a.relative_change(0.0, 3.0) == math.inf
    assert a.relative_change(None, 3.0) is None


def test_contingency_table_rows_are_report_labels_and_columns_image_labels():
    pairs = [
        ("progression", "increase"),
        ("progression", "increase"),
        ("progression", "stable"),
        ("regression", "decrease"),
        ("partial", "decrease"),
        ("stable", "stable"),
        (None, "increase"),  # no report: counted apart
        ("regression", None),  # no image label: not a pair
    ]
    table = a.contingency(pairs)
    assert table.as_dict() == {
        "progression": {"increase": 2, "decrease": 0, "stable": 1},
        "regression": {"increase": 0, "decrease": 1, "stable": 0},
        "stable": {"increase": 0, "decrease": 0, "stable": 1},
        "partial": {"increase": 0, "decrease": 1, "stable": 0},
    }
    assert table.unlabelled == 1
    assert table.total == 6


def _random_pairs(seed: int, n: int) -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    reports = rng.choice(["progression", "regression", "stable", "partial"], size=n, p=[0.35, 0.35, 0.2, 0.1])
    images = []
    for r in reports:  # the software agrees most of the time
        agree = {"progression": "increase", "regression": "decrease", "stable": "stable"}.get(r)
        images.append(agree if agree and rng.random() < 0.75 else str(rng.choice(a.IMAGE_LABELS)))
    return list(zip(reports.tolist(), images, strict=True))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_kappa_equals_scikit_learn_on_the_same_labels(seed):
    pairs = _random_pairs(seed, 120)
    binary = [(a.REPORT_TO_IMAGE[r], i) for r, i in pairs if r in ("progression", "regression") and i != "stable"]
    three = [(a.REPORT_TO_IMAGE[r], i) for r, i in pairs if r != "partial"]
    assert a.binary_kappa(pairs).kappa == pytest.approx(cohen_kappa_score(*zip(*binary, strict=True)), abs=1e-12)
    assert a.binary_kappa(pairs).n == len(binary)
    assert a.three_class_kappa(pairs).kappa == pytest.approx(cohen_kappa_score(*zip(*three, strict=True)), abs=1e-12)
    assert a.three_class_kappa(pairs).n == len(three)


def test_confidence_interval_matches_a_seeded_bootstrap():
    pairs = _random_pairs(7, 400)
    result = a.three_class_kappa(pairs)
    kept = [(a.REPORT_TO_IMAGE[r], i) for r, i in pairs if r != "partial"]
    truth, rated = np.array([k[0] for k in kept]), np.array([k[1] for k in kept])
    rng = np.random.default_rng(0)
    boot = []
    for _ in range(500):
        idx = rng.integers(0, len(kept), len(kept))
        boot.append(cohen_kappa_score(truth[idx], rated[idx]))
    assert result.se == pytest.approx(np.std(boot), rel=0.15)
    assert result.low < result.kappa < result.high
    assert result.high - result.low == pytest.approx(2 * a.Z95 * result.se)


def test_textbook_two_by_two_example():
    # 20 agree on increase, 15 on decrease, 15 disagree: po = 0.7, pe = 0.5, kappa = 0.4.
    truth = ["increase"] * 25 + ["decrease"] * 25
    rated = ["increase"] * 20 + ["decrease"] * 5 + ["increase"] * 10 + ["decrease"] * 15
    result = a.cohen_kappa(truth, rated, (a.INCREASE, a.DECREASE))
    assert result.kappa == pytest.approx(0.4)
    assert result.observed == pytest.approx(0.7)
    assert 0.1 < result.low < 0.4 < result.high < 0.7


def test_kappa_is_undefined_without_pairs_or_with_one_class_only():
    assert a.cohen_kappa([], [], a.IMAGE_LABELS).kappa is None
    single = a.cohen_kappa(["increase"] * 3, ["increase"] * 3, (a.INCREASE, a.DECREASE))
    assert (single.kappa, single.n, single.observed) == (None, 3, 1.0)


def test_a_rater_with_a_single_class_gets_kappa_zero_without_an_interval():
    result = a.cohen_kappa(["increase", "decrease", "decrease"], ["increase"] * 3, (a.INCREASE, a.DECREASE))
    assert result.kappa == 0.0 == cohen_kappa_score(["increase", "decrease", "decrease"], ["increase"] * 3)
    assert (result.low, result.high, result.se) == (None, None, None)
