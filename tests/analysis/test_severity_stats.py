"""Severity statistics (pure, no database): AUC ordering, agreement with scikit-learn, cut-offs, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from analysis.stats.severity import (
    MIN_PER_CLASS,
    SEED,
    MissingFeature,
    SeverityFitError,
    TooFewScans,
    evaluate,
    group_difference_p,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent.parent


def synthetic_cohort(n_per_class: int = 20, seed: int = 7) -> tuple[list[dict], list[int]]:
    """POI separates severe from non-severe strongly (0.30 vs 0.08), iHU weakly (-520 vs -560 HU, sd 80)."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for severe in (1, 0):
        for _ in range(n_per_class):
            rows.append(
                {
                    "poi": float(np.clip(rng.normal(0.30 if severe else 0.08, 0.07), 0.0, 1.0)),
                    "ihu": float(rng.normal(-520 if severe else -560, 80)),
                }
            )
            labels.append(severe)
    return rows, labels


@pytest.fixture(scope="module")
def cohort():
    return synthetic_cohort()


@pytest.fixture(scope="module")
def fits(cohort):
    rows, labels = cohort
    return {features: evaluate(rows, labels, features) for features in [("poi",), ("ihu",), ("poi", "ihu")]}


def test_strong_marker_outranks_weak_one_and_combining_loses_little(fits):
    poi, ihu, both = fits[("poi",)], fits[("ihu",)], fits[("poi", "ihu")]
    assert poi.auc > 0.9
    assert ihu.auc < poi.auc - 0.15
    assert both.auc >= poi.auc - 0.03
    for fit in fits.values():
        low, high = fit.auc_ci
        assert low <= fit.auc <= high
        assert 0.0 <= low < high <= 1.0
    assert fits[("poi",)].auc_ci[0] > fits[("ihu",)].auc_ci[0]


def test_auc_and_youden_cutoff_equal_scikit_learn_on_the_same_predictions(cohort, fits):
    rows, labels = cohort
    x = np.array([[r["poi"], r["ihu"]] for r in rows])
    y = np.array(labels)
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=SEED)
    expected = cross_val_predict(
        make_pipeline(StandardScaler(), LogisticRegression()), x, y, cv=folds, method="predict_proba"
    )[:, 1]
    fit = fits[("poi", "ihu")]
    assert fit.n_splits == 5
    assert np.allclose(fit.probabilities, expected)
    assert fit.auc == pytest.approx(roc_auc_score(y, expected))
    fpr, tpr, thresholds = roc_curve(y, expected)
    best = int(np.argmax(tpr - fpr))
    assert fit.cutoff_probability == pytest.approx(thresholds[best])
    assert fit.sensitivity == pytest.approx(tpr[best])
    assert fit.specificity == pytest.approx(1 - fpr[best])
    assert np.allclose(fit.fpr, fpr)
    assert np.allclose(fit.tpr, tpr)


def test_single_feature_cutoff_is_read_in_the_features_units(cohort, fits):
    rows, labels = cohort
    poi = np.array([r["poi"] for r in rows])
    y = np.array(labels)
    fpr, tpr, thresholds = roc_curve(y, poi)
    best = int(np.argmax(tpr - fpr))
    fit = fits[("poi",)]
    assert fit.feature_direction == ">="
    assert fit.feature_cutoff == pytest.approx(thresholds[best])
    called = poi >= fit.feature_cutoff
    assert fit.feature_sensitivity == pytest.approx(called[y == 1].mean())
    assert fit.feature_specificity == pytest.approx(1 - called[y == 0].mean())
    assert fit.cutoff_text() == f"POI \u2265 {thresholds[best] * 100:.1f} %"
    assert fits[("poi", "ihu")].cutoff_text() is None


def test_a_falling_marker_gets_a_less_or_equal_rule():
    rows, labels = synthetic_cohort()
    flipped = [{"ihu": -r["poi"] * 1000} for r in rows]  # higher value now means milder
    fit = evaluate(flipped, labels, ["ihu"])
    assert fit.feature_direction == "<="
    assert fit.cutoff_text().startswith("iHU \u2264 \u2212")
    assert fit.model.coefficients[0] < 0


def test_final_model_gives_the_probability_scikit_learn_gives(cohort, fits):
    rows, labels = cohort
    x = np.array([[r["poi"], r["ihu"]] for r in rows])
    reference = make_pipeline(StandardScaler(), LogisticRegression()).fit(x, labels)
    model = fits[("poi", "ihu")].model
    for scan in ({"poi": 0.02, "ihu": -700.0}, {"poi": 0.4, "ihu": -450.0}):
        expected = reference.predict_proba([[scan["poi"], scan["ihu"]]])[0, 1]
        assert model.probability(scan) == pytest.approx(expected)
    assert model.probability({"poi": 0.45, "ihu": -500.0}) > 0.9 > 0.1 > model.probability({"poi": 0.01, "ihu": -600})
    with pytest.raises(MissingFeature, match="iHU"):
        model.probability({"poi": 0.2, "ihu": None})


def test_too_small_a_class_is_refused_with_the_counts():
    rows, labels = synthetic_cohort(n_per_class=MIN_PER_CLASS)
    keep = [i for i, label in enumerate(labels) if label == 0 or i < MIN_PER_CLASS - 1]
    with pytest.raises(TooFewScans) as refused:
        evaluate([rows[i] for i in keep], [labels[i] for i in keep], ["poi"])
    assert str(refused.value) == (
        f"too few scans: {MIN_PER_CLASS - 1} severe and {MIN_PER_CLASS} non-severe; "
        f"at least {MIN_PER_CLASS} of each class are needed"
    )
    # The smallest accepted cohort fits with as many folds as the minority class has scans.
    assert evaluate(rows, labels, ["poi"]).n_splits == MIN_PER_CLASS


def test_a_missing_or_unknown_feature_is_refused():
    rows, labels = synthetic_cohort()
    rows[3] = {"poi": 0.2, "ihu": None}
    with pytest.raises(MissingFeature, match="1 scan"):
        evaluate(rows, labels, ["poi", "ihu"])
    with pytest.raises(MissingFeature, match="unknown feature"):
        evaluate(rows, labels, ["age"])


def test_group_difference_p_value_is_mann_whitney():
    from scipy.stats import mannwhitneyu

    severe, mild = [0.3, 0.4, 0.35, 0.5, 0.45], [0.05, 0.1, 0.08, 0.2, 0.12]
    assert group_difference_p(severe, mild) == pytest.approx(mannwhitneyu(severe, mild).pvalue)
    assert group_difference_p(severe, mild) < 0.05
    assert group_difference_p(severe, []) is None


def test_a_marker_with_one_value_for_every_scan_is_refused():
    rows, labels = synthetic_cohort()
    with pytest.raises(SeverityFitError, match="CT severity score is the same on every scan"):
        evaluate([{"ct_severity_score": 9} for _ in rows], labels, ["ct_severity_score"])


def test_the_statistics_import_without_django():
    import subprocess
    import sys

    code = "import sys, analysis.stats.severity; assert 'django' not in sys.modules, 'django was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, env={"PYTHONPATH": "."}, cwd=PROJECT_ROOT)
