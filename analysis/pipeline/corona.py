"""Slice-classifier read-outs of the heat-map system: positive-slice ratio, corona score, relative score.

Pure functions on arrays. The corona score sums the Grad-CAM heat map over voxels weighted by the
voxel volume, so a 10 mm and a 2.5 mm reconstruction of the same lungs give the same score (mL of
"heat"), unlike a plain sum over voxels.
"""

from __future__ import annotations

import numpy as np

# P(abnormal slice) above which a slice is positive; the classifier's validation accuracy peaks near it.
SLICE_THRESHOLD = 0.5


def positive_ratio(probabilities: np.ndarray, has_lung: np.ndarray, threshold: float = SLICE_THRESHOLD) -> float:
    """Positive slices / slices containing lung (0 when no slice holds lung)."""
    has_lung = np.asarray(has_lung, dtype=bool)
    if not has_lung.any():
        return 0.0
    return float(np.count_nonzero((np.asarray(probabilities) > threshold) & has_lung) / np.count_nonzero(has_lung))


def corona_score(heat: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Sum of the heat map (values in [0, 1]) times the voxel volume, in mL."""
    heat = np.asarray(heat, dtype=np.float64)
    if heat.size and (heat.min() < 0 or heat.max() > 1):
        raise ValueError("heat map values must lie in [0, 1]")
    return float(heat.sum() * np.prod(spacing) / 1000.0)


def relative_score(score: float, first_score: float | None) -> float | None:
    """Score / the patient's first analysed scan's score; None when there is no usable first score."""
    if first_score is None or first_score <= 0:
        return None
    return score / first_score
