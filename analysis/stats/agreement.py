"""Agreement between the software's progression labels and the radiology reports. No Django.

For two consecutive scans the software labels each measure (POI, iHU, corona score) as increase,
decrease or stable from its change and a tolerance; the report of the later scan says progression,
regression, stable or partial (patients.reports). As in the paper's Table 3, the tables cross the report
labels (rows) with the software's labels (columns), and Cohen's kappa compares them:

- binary: progression vs increase and regression vs decrease only; pairs where either side is stable,
  partial or unlabelled are left out (the paper's comparison);
- three-class: progression / regression / stable vs increase / decrease / stable; partial, uncertain and
  unlabelled reports are left out.

Kappa is scikit-learn's `cohen_kappa_score`; its 95 % confidence interval uses the large-sample standard
error of Fleiss, Cohen and Everitt (1969), kappa +- 1.96 SE, clipped to [-1, 1]. A rise of iHU (denser
infection, towards consolidation) counts as an increase, like a rise of POI.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

INCREASE = "increase"
DECREASE = "decrease"
STABLE = "stable"
IMAGE_LABELS: tuple[str, ...] = (INCREASE, DECREASE, STABLE)

# Report labels (patients.reports), in the tables' row order.
PROGRESSION = "progression"
REGRESSION = "regression"
REPORT_STABLE = "stable"
PARTIAL = "partial"
REPORT_LABELS: tuple[str, ...] = (PROGRESSION, REGRESSION, REPORT_STABLE, PARTIAL)

# The image label each report label corresponds to (partial has none).
REPORT_TO_IMAGE: dict[str, str] = {PROGRESSION: INCREASE, REGRESSION: DECREASE, REPORT_STABLE: STABLE}

Z95 = 1.959963984540054


def image_label(delta: float | None, tolerance: float) -> str | None:
    """increase / decrease when the change passes the tolerance either way, else stable; None without a change."""
    if delta is None or (isinstance(delta, float) and math.isnan(delta)):
        return None
    if delta > tolerance:
        return INCREASE
    if delta < -tolerance:
        return DECREASE
    return STABLE


def relative_change(earlier: float | None, later: float | None) -> float | None:
    """(later - earlier) / earlier; from zero, any rise is +inf and no change is 0; None when a value is missing."""
    if earlier is None or later is None:
        return None
    if earlier == 0:
        return 0.0 if later == 0 else math.copysign(math.inf, later)
    return (later - earlier) / abs(earlier)


@dataclass(frozen=True)
class Table:
    """Counts of report label (rows) by image label (columns); `unlabelled` counts pairs without a report label."""

    rows: tuple[str, ...]
    columns: tuple[str, ...]
    counts: tuple[tuple[int, ...], ...]
    unlabelled: int = 0

    @property
    def total(self) -> int:
        return sum(sum(r) for r in self.counts)

    def count(self, row: str, column: str) -> int:
        return self.counts[self.rows.index(row)][self.columns.index(column)]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {r: dict(zip(self.columns, c, strict=True)) for r, c in zip(self.rows, self.counts, strict=True)}


def contingency(pairs: Sequence[tuple[str | None, str | None]]) -> Table:
    """The Table-3 cross table of (report label, image label) pairs; pairs without an image label are left out."""
    counts = [[0] * len(IMAGE_LABELS) for _ in REPORT_LABELS]
    unlabelled = 0
    for report, image in pairs:
        if image not in IMAGE_LABELS:
            continue
        if report not in REPORT_LABELS:
            unlabelled += 1
            continue
        counts[REPORT_LABELS.index(report)][IMAGE_LABELS.index(image)] += 1
    return Table(REPORT_LABELS, IMAGE_LABELS, tuple(tuple(r) for r in counts), unlabelled)


@dataclass(frozen=True)
class Kappa:
    """Cohen's kappa with its 95 % CI; `kappa` is None when undefined (no pairs, or both raters used one and
    the same class); the interval is None when one rater used a single class (kappa is then 0 by construction)."""

    kappa: float | None
    low: float | None
    high: float | None
    se: float | None
    n: int
    observed: float | None  # share of pairs that agree
    classes: tuple[str, ...]


def kappa_standard_error(matrix: np.ndarray) -> float:
    """Large-sample SE of kappa for a square table of counts (Fleiss, Cohen & Everitt 1969)."""
    n = matrix.sum()
    p = matrix / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    po = np.trace(p)
    pe = float(rows @ cols)
    kappa = (po - pe) / (1 - pe)
    k = len(p)
    diagonal = sum(p[i, i] * (1 - (rows[i] + cols[i]) * (1 - kappa)) ** 2 for i in range(k))
    off = (1 - kappa) ** 2 * sum(p[i, j] * (cols[i] + rows[j]) ** 2 for i in range(k) for j in range(k) if i != j)
    variance = (diagonal + off - (kappa - pe * (1 - kappa)) ** 2) / (n * (1 - pe) ** 2)
    return math.sqrt(max(float(variance), 0.0))


def cohen_kappa(truth: Sequence[str], rated: Sequence[str], classes: Sequence[str]) -> Kappa:
    """Kappa of two label sequences over `classes` (pairs outside them must be removed by the caller)."""
    classes = tuple(classes)
    n = len(truth)
    if n == 0:
        return Kappa(None, None, None, None, 0, None, classes)
    observed = sum(a == b for a, b in zip(truth, rated, strict=True)) / n
    matrix = np.zeros((len(classes), len(classes)))
    for a, b in zip(truth, rated, strict=True):
        matrix[classes.index(a), classes.index(b)] += 1
    rows, cols = matrix.sum(axis=1) / n, matrix.sum(axis=0) / n
    if float(rows @ cols) >= 1 - 1e-12:  # both raters used one and the same class: kappa is 0/0
        return Kappa(None, None, None, None, n, observed, classes)
    from sklearn.metrics import cohen_kappa_score  # here, so pages that never compute kappa do not load sklearn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        kappa = float(cohen_kappa_score(list(truth), list(rated), labels=list(classes)))
    kappa = 0.0 if abs(kappa) < 1e-12 else kappa  # no "-0.00" from rounding noise
    if np.count_nonzero(rows) < 2 or np.count_nonzero(cols) < 2:
        # One rater used a single class: kappa is 0 whatever the data, and its large-sample variance
        # collapses to zero, which would print a misleading interval of [0, 0].
        return Kappa(kappa, None, None, None, n, observed, classes)
    se = kappa_standard_error(matrix)
    low, high = max(-1.0, kappa - Z95 * se), min(1.0, kappa + Z95 * se)
    return Kappa(kappa, low, high, se, n, observed, classes)


def binary_kappa(pairs: Sequence[tuple[str | None, str | None]]) -> Kappa:
    """Progression/regression against increase/decrease, leaving out every other pair (as the paper)."""
    kept = [(REPORT_TO_IMAGE[r], i) for r, i in pairs if r in (PROGRESSION, REGRESSION) and i in (INCREASE, DECREASE)]
    return cohen_kappa([r for r, _ in kept], [i for _, i in kept], (INCREASE, DECREASE))


def three_class_kappa(pairs: Sequence[tuple[str | None, str | None]]) -> Kappa:
    """Progression/regression/stable against increase/decrease/stable; partial and unlabelled left out."""
    kept = [(REPORT_TO_IMAGE[r], i) for r, i in pairs if r in REPORT_TO_IMAGE and i in IMAGE_LABELS]
    return cohen_kappa([r for r, _ in kept], [i for _, i in kept], IMAGE_LABELS)


@dataclass(frozen=True)
class Agreement:
    """Table and both kappas of one measure (POI, iHU or corona score)."""

    measure: str
    table: Table
    binary: Kappa
    three_class: Kappa

    @property
    def kappas(self) -> tuple[tuple[str, Kappa], ...]:
        return (("binary", self.binary), ("three-class", self.three_class))


def agreement(measure: str, pairs: Sequence[tuple[str | None, str | None]]) -> Agreement:
    """Everything the agreement page shows for one measure, from (report label, image label) pairs."""
    return Agreement(measure, contingency(pairs), binary_kappa(pairs), three_class_kappa(pairs))
