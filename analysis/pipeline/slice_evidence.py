"""Per-slice P(abnormal) from two readers: the slice classifier and the run's own infection map.

Pure functions on arrays. Each reader gives a logit; the slice's P(abnormal) is the sigmoid of their mean.

Why not the classifier alone: on the held-out COVID-CT-MD scans its reading follows how much of the
crop the lungs fill (Spearman 0.9 against lung area on the normal scans), so mid-lung slices read high
whether or not they hold a lesion, and it ranks P001's labelled slices at AUC 0.891 only. The
segmentation knows where the lesions are but reads vessels and dependent density as small lesions.
They err on different slices: the mean of the two ranks P001 at 0.975 and cap001 at 0.964 (classifier
alone 0.891 / 0.946; pipeline 0.5.0, whose HU baseline no longer reads hilar vessels as consolidation),
and the slice curve agrees with the infection overlay (model card).

The lesion reader's logit is log(area + 0.05 cm^2) - log(LESION_AREA_EVEN_CM2): even odds at 2 cm^2 of
lesion in the slice (a 16 mm disc), where 95 % of the slices of the two normal scans read less; each
doubling of the area adds ln 2 to the logit. The ranking hardly depends on these two constants
(AUC within 0.01 for 1-4 cm^2 and scales 0.5-2; model card).
"""

from __future__ import annotations

import numpy as np

LESION_AREA_EVEN_CM2 = 2.0  # lesion area of a slice at which the segmentation reader is undecided
AREA_FLOOR_CM2 = 0.05  # keeps the logit finite on slices without lesion (about -3.7 there)
PROBABILITY_FLOOR = 1e-6  # keeps a classifier's 0 or 1 finite on the logit scale


def lesion_logit(lesion_area_cm2: np.ndarray, even_cm2: float = LESION_AREA_EVEN_CM2) -> np.ndarray:
    """Logit of the segmentation reader: log of the slice's lesion area against `even_cm2`."""
    area = np.asarray(lesion_area_cm2, dtype=np.float64)
    if np.any(area < 0):
        raise ValueError("lesion areas cannot be negative")
    if even_cm2 <= 0:
        raise ValueError(f"the even-odds area must be positive, got {even_cm2}")
    return np.log(area + AREA_FLOOR_CM2) - np.log(even_cm2)


def fuse_slice_readings(classifier_probability: np.ndarray, lesion_area_cm2: np.ndarray) -> np.ndarray:
    """P(abnormal) per slice: sigmoid of the mean of the classifier's logit and the lesion reader's logit."""
    p = np.clip(np.asarray(classifier_probability, dtype=np.float64), PROBABILITY_FLOOR, 1 - PROBABILITY_FLOOR)
    area = np.asarray(lesion_area_cm2, dtype=np.float64)
    if p.shape != area.shape:
        raise ValueError(f"one lesion area per slice is needed: {area.shape} areas for {p.shape} slices")
    mean_logit = (np.log(p / (1 - p)) + lesion_logit(area)) / 2
    return (1 / (1 + np.exp(-mean_logit))).astype(np.float32)


def lesion_areas_cm2(infection: np.ndarray, pixel_area_mm2: float) -> np.ndarray:
    """Infected area of each slice (z, y, x label map) in cm^2."""
    n = infection.shape[0]
    return (infection.reshape(n, -1) > 0).sum(axis=1) * pixel_area_mm2 / 100.0
