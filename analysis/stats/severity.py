"""Severity from bio-markers: logistic regression, cross-validated ROC/AUC with a bootstrap CI, Youden cut-off.

Pure computation (numpy, scipy, scikit-learn; no Django), so it is tested directly. The label is 1 for a
severe scan and 0 for a non-severe one. Each feature set is judged on out-of-fold probabilities
(stratified k-fold, fixed seed), as in the paper's Table 2; the model that scores new scans is then fitted
on all scans. Features are standardised inside the model (the scaler's mean and scale travel with it).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import mannwhitneyu, rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score, roc_curve
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

# Fewest scans of each class a fit accepts: every one of the (up to) five folds then holds a scan of
# each class, and a bootstrap of fewer scans gives an interval too wide to mean anything.
MIN_PER_CLASS = 5
MAX_SPLITS = 5
SEED = 20200
BOOTSTRAP_SAMPLES = 2000


@dataclass(frozen=True)
class Feature:
    """How a bio-marker is named and printed (`scale` turns the stored value into the shown one)."""

    key: str
    label: str
    unit: str
    scale: float = 1.0
    digits: int = 1

    def format(self, value: float) -> str:
        shown = f"{value * self.scale:.{self.digits}f}".replace("-", "\u2212")
        return f"{shown} {self.unit}".rstrip()


FEATURES: dict[str, Feature] = {
    f.key: f
    for f in (
        Feature("poi", "POI", "%", scale=100.0),
        Feature("ihu", "iHU", "HU", digits=0),
        Feature("corona_score_ml", "Corona score", "mL", digits=0),
        Feature("ct_severity_score", "CT severity score", "/30", digits=0),
    )
}


class SeverityFitError(ValueError):
    """A feature set cannot be fitted on these scans; the message says why, for the user."""


class TooFewScans(SeverityFitError):
    """A class has fewer than MIN_PER_CLASS scans."""

    def __init__(self, n_severe: int, n_non_severe: int, needed: int = MIN_PER_CLASS):
        self.n_severe, self.n_non_severe, self.needed = n_severe, n_non_severe, needed
        super().__init__(
            f"too few scans: {n_severe} severe and {n_non_severe} non-severe; "
            f"at least {needed} of each class are needed"
        )


class MissingFeature(SeverityFitError):
    """A scan lacks a value of a feature (or the feature is unknown)."""


@dataclass(frozen=True)
class Fitted:
    """A logistic model on standardised features: P(severe) = 1 / (1 + exp(-(b0 + Σ bᵢ (xᵢ - meanᵢ) / scaleᵢ)))."""

    features: tuple[str, ...]
    coefficients: tuple[float, ...]
    intercept: float
    mean: tuple[float, ...]
    scale: tuple[float, ...]

    def probability(self, values: Mapping[str, float | None]) -> float:
        """P(severe) for one scan; MissingFeature when it lacks one of the model's features."""
        missing = [name for name in self.features if not _finite(values.get(name))]
        if missing:
            raise MissingFeature(f"this scan has no {', '.join(FEATURES[m].label for m in missing)}")
        z = self.intercept + sum(
            b * (float(values[name]) - m) / s
            for name, b, m, s in zip(self.features, self.coefficients, self.mean, self.scale, strict=True)
        )
        return 1.0 / (1.0 + math.exp(-z))


@dataclass(frozen=True)
class Evaluation:
    """One feature set judged on cross-validated probabilities, and the model fitted on all scans."""

    features: tuple[str, ...]
    n_severe: int
    n_non_severe: int
    n_splits: int
    probabilities: tuple[float, ...]  # out-of-fold P(severe), in the order of the scans given
    fpr: tuple[float, ...]
    tpr: tuple[float, ...]
    thresholds: tuple[float, ...]
    auc: float
    auc_ci: tuple[float, float]  # bootstrap 95 % percentile interval
    cutoff_probability: float  # Youden: P(severe) ≥ this calls a scan severe
    sensitivity: float
    specificity: float
    # Single-feature models only: the same rule in the feature's units (e.g. POI ≥ 12.3 %), taken from the
    # ROC of the feature itself, which is the ROC of the (monotone) final model on all scans.
    feature_cutoff: float | None
    feature_direction: str | None  # ">=" or "<="
    feature_sensitivity: float | None
    feature_specificity: float | None
    model: Fitted

    @property
    def name(self) -> str:
        return " + ".join(FEATURES[f].label for f in self.features)

    def cutoff_text(self) -> str | None:
        """The single-feature rule as a clinician reads it, e.g. "POI ≥ 12.3 %"; None for combined models."""
        if self.feature_cutoff is None:
            return None
        feature = FEATURES[self.features[0]]
        sign = "\u2265" if self.feature_direction == ">=" else "\u2264"
        return f"{feature.label} {sign} {feature.format(self.feature_cutoff)}"


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _matrix(rows: Sequence[Mapping[str, float | None]], features: Sequence[str]) -> np.ndarray:
    unknown = [f for f in features if f not in FEATURES]
    if unknown or not features:
        raise MissingFeature(f"unknown feature(s): {', '.join(unknown) or '(none given)'}")
    for name in features:
        lacking = sum(1 for row in rows if not _finite(row.get(name)))
        if lacking:
            raise MissingFeature(f"{lacking} scan(s) have no {FEATURES[name].label}")
    return np.array([[float(row[name]) for name in features] for row in rows], dtype=float)


def class_counts(labels: Sequence[int]) -> tuple[int, int]:
    """(severe, non-severe) counts of 1/0 labels."""
    severe = sum(1 for label in labels if label == 1)
    return severe, len(labels) - severe


def check_enough(labels: Sequence[int], needed: int = MIN_PER_CLASS) -> None:
    n_severe, n_non_severe = class_counts(labels)
    if min(n_severe, n_non_severe) < needed:
        raise TooFewScans(n_severe, n_non_severe, needed)


def _pipeline():
    return make_pipeline(StandardScaler(), LogisticRegression())


def youden_index(fpr: Sequence[float], tpr: Sequence[float]) -> int:
    """Index of the ROC point maximising sensitivity + specificity - 1 (the first one on ties)."""
    return int(np.argmax(np.asarray(tpr) - np.asarray(fpr)))


def _rank_auc(y: np.ndarray, s: np.ndarray) -> float:
    """AUC as the Mann-Whitney statistic (ties count one half): equal to roc_auc_score, and fast."""
    ranks = rankdata(s)
    positives = y == 1
    n1 = int(positives.sum())
    n0 = len(y) - n1
    return float((ranks[positives].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def bootstrap_auc_ci(
    labels: Sequence[int], scores: Sequence[float], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = SEED
) -> tuple[float, float]:
    """95 % percentile interval of the AUC over resamples of the scans (resamples with one class skipped)."""
    y = np.asarray(labels)
    s = np.asarray(scores)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(samples):
        index = rng.integers(0, len(y), len(y))
        if y[index].min() == y[index].max():
            continue
        aucs.append(_rank_auc(y[index], s[index]))
    low, high = np.percentile(aucs, [2.5, 97.5])
    return float(low), float(high)


def _feature_rule(y: np.ndarray, x: np.ndarray, coefficient: float):
    """Youden cut-off of one feature in its own units, in the direction the fitted model reads it."""
    rising = coefficient >= 0
    fpr, tpr, thresholds = roc_curve(y, x if rising else -x)
    best = youden_index(fpr, tpr)
    cutoff = float(thresholds[best]) if rising else -float(thresholds[best])
    return cutoff, (">=" if rising else "<="), float(tpr[best]), float(1 - fpr[best])


def evaluate(
    rows: Sequence[Mapping[str, float | None]],
    labels: Sequence[int],
    features: Sequence[str],
    *,
    seed: int = SEED,
    bootstrap_samples: int = BOOTSTRAP_SAMPLES,
) -> Evaluation:
    """Cross-validated ROC/AUC (+ CI), Youden cut-off and the final model of one feature set.

    `rows` hold the feature values of each scan (keys of FEATURES), `labels` 1 for severe and 0 for
    non-severe. TooFewScans when a class has fewer than MIN_PER_CLASS scans, MissingFeature when a scan
    lacks a value.
    """
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} rows but {len(labels)} labels")
    if any(label not in (0, 1) for label in labels):
        raise ValueError("labels must be 1 (severe) or 0 (non-severe)")
    features = tuple(features)
    x = _matrix(rows, features)
    y = np.asarray(labels, dtype=int)
    check_enough(labels)
    constant = [FEATURES[name].label for i, name in enumerate(features) if np.ptp(x[:, i]) == 0]
    if constant:
        raise SeverityFitError(f"{', '.join(constant)} is the same on every scan, so it cannot separate the groups")
    n_severe, n_non_severe = class_counts(labels)
    n_splits = min(MAX_SPLITS, n_severe, n_non_severe)
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    probabilities = cross_val_predict(_pipeline(), x, y, cv=folds, method="predict_proba")[:, 1]
    fpr, tpr, thresholds = roc_curve(y, probabilities)
    auc = float(roc_auc_score(y, probabilities))
    best = youden_index(fpr, tpr)

    final = _pipeline().fit(x, y)
    scaler, logistic = final[0], final[1]
    model = Fitted(
        features=features,
        coefficients=tuple(float(b) for b in logistic.coef_[0]),
        intercept=float(logistic.intercept_[0]),
        mean=tuple(float(m) for m in scaler.mean_),
        scale=tuple(float(s) for s in scaler.scale_),
    )
    rule = _feature_rule(y, x[:, 0], model.coefficients[0]) if len(features) == 1 else (None, None, None, None)
    return Evaluation(
        features=features,
        n_severe=n_severe,
        n_non_severe=n_non_severe,
        n_splits=n_splits,
        probabilities=tuple(float(p) for p in probabilities),
        fpr=tuple(float(v) for v in fpr),
        tpr=tuple(float(v) for v in tpr),
        thresholds=tuple(float(v) for v in thresholds),
        auc=auc,
        auc_ci=bootstrap_auc_ci(y, probabilities, samples=bootstrap_samples, seed=seed),
        cutoff_probability=float(thresholds[best]),
        sensitivity=float(tpr[best]),
        specificity=float(1 - fpr[best]),
        feature_cutoff=rule[0],
        feature_direction=rule[1],
        feature_sensitivity=rule[2],
        feature_specificity=rule[3],
        model=model,
    )


def group_difference_p(severe: Sequence[float], non_severe: Sequence[float]) -> float | None:
    """Two-sided Mann-Whitney U p-value between the groups' values; None when a group is empty."""
    a = [float(v) for v in severe if _finite(v)]
    b = [float(v) for v in non_severe if _finite(v)]
    if not a or not b:
        return None
    return float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
