"""The heat-map stage: per-slice P(abnormal), positive ratio, Grad-CAM heat maps and the corona score.

Pure: numpy in, arrays and a CoronaResult out; the classifier is passed in (analysis.nets.segmenters).

Why the heat maps are computed on slabs of a common thickness, not on the scan's own slices:
a 10 mm slice is, to a good approximation, the mean of the thin slices it covers, and the classifier
answers differently for the two (P001: 51 % positive slices at 2 mm, 29 % at 10 mm). Its heat therefore
depended on the reconstruction even though the score is weighted by voxel volume. Thin scans are
averaged into slabs of about REFERENCE_SLAB_MM before Grad-CAM, so a 2.5 mm and a 10 mm scan of the
same lungs show the classifier the same images; each slab's map is spread over the slices it covers.
Measured with slice-resnet2d 1.0 (2.5 mm vs 10 mm phantoms 9100-9103, P001/cap001 2 mm vs 10 mm
slabs): within 4 % instead of -43 % to +364 % per scan. The slabs also damp noise that the classifier
took for lesions on thin normal slices (normal001's score fell from 26 % to 8 % of P001's).

The per-slice probabilities, the positive ratio and the "suspected" flag stay on the scan's own
slices: they are what the slice curve shows, and thin slices rank P001's labelled slices better
(AUC 0.878 against 0.863 on slabs). Given the run's infection map, they are the classifier's reading
fused with the slice's lesion area (analysis.pipeline.slice_evidence), and so is each slab's weight (its
lesion area: the mean of its slices'). The maps stay the classifier's Grad-CAM. With the classifier's
weights alone, the score followed how much lung a slab held more than its lesions: a phantom patient
whose infection went 34 -> 142 -> 17 mL scored 246 -> 370 -> 236 mL; with the fused weights 465 ->
1208 -> 261 mL, still within 7 % between 2.5 and 10 mm (model card).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Protocol

import numpy as np

from analysis.pipeline.corona import SLICE_THRESHOLD, corona_score, positive_ratio
from analysis.pipeline.result import CoronaResult, ModelInfo
from analysis.pipeline.slice_evidence import fuse_slice_readings
from analysis.pipeline.volume import CTVolume

REFERENCE_SLAB_MM = 10.0  # the thickest reconstruction the thick-section method expects
# A slab's heat counts in proportion to where its P(abnormal) lies in this range (0 below, 1 above).
# A hard cut at the slice threshold made the score jump when one slab's P moved from 0.49 to 0.51
# (phantom 9102: 99 mL at 2.5 mm, 186 mL at 10 mm); the ramp is continuous, so it cannot.
HEAT_RAMP = (0.4, 0.8)


class SliceClassifier(Protocol):
    """P(abnormal) per slice and Grad-CAM heat maps of chosen slices (analysis.nets.segmenters.SliceClassifier)."""

    info: ModelInfo

    def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray: ...

    def heat_maps(
        self,
        volume: CTVolume,
        lungs: np.ndarray,
        slices: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray: ...


def slab_index(n_slices: int, slice_mm: float, reference_mm: float = REFERENCE_SLAB_MM) -> np.ndarray:
    """Slab number of each slice: runs of round(reference_mm / slice_mm) slices (at least 1) from the top.

    A trailing run that is shorter makes a thinner last slab rather than being dropped, so every
    slice gets heat.
    """
    if slice_mm <= 0:
        raise ValueError(f"slice spacing must be positive, got {slice_mm}")
    per_slab = max(1, round(reference_mm / slice_mm))
    return np.arange(n_slices) // per_slab


def _slab_runs(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(first slice, number of slices) of each slab of a slab_index."""
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    return starts, np.diff(np.r_[starts, len(index)])


def slab_means(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Mean over each slab's slices of a per-slice array (axis 0)."""
    starts, counts = _slab_runs(index)
    means = np.add.reduceat(np.asarray(values), starts, axis=0, dtype=np.float64)
    return means / counts.reshape((-1,) + (1,) * (means.ndim - 1))


def average_slabs(volume: CTVolume, lungs: np.ndarray, index: np.ndarray) -> tuple[CTVolume, np.ndarray]:
    """(slab volume: mean HU of each slab's slices, slab lung mask: union of its slices' lungs)."""
    starts, counts = _slab_runs(index)
    hu = slab_means(volume.hu, index)
    slab_lungs = np.maximum.reduceat(lungs > 0, starts, axis=0).astype(np.uint8)
    per_slab = int(counts.max())
    sz, sy, sx = volume.spacing
    slab_volume = replace(
        volume,
        hu=np.rint(hu).astype(np.int16),
        spacing=(sz * per_slab, sy, sx),
        slice_uids=None,
        slice_thickness=sz * per_slab,
    )
    return slab_volume, slab_lungs


def heat_weight(probabilities: np.ndarray, ramp: tuple[float, float] = HEAT_RAMP) -> np.ndarray:
    """Weight in [0, 1] of each slab's heat map: 0 up to ramp[0], rising linearly to 1 at ramp[1]."""
    low, high = ramp
    return np.clip((np.asarray(probabilities, dtype=np.float32) - low) / (high - low), 0.0, 1.0)


def _read_slices(
    classifier: SliceClassifier, volume: CTVolume, lungs: np.ndarray, lesion_area_cm2: np.ndarray | None
) -> np.ndarray:
    """P(abnormal) per slice: the classifier's, fused with the lesion area when given (0 without lung)."""
    p = np.asarray(classifier(volume, lungs), dtype=np.float32)
    if lesion_area_cm2 is None:
        return p
    has_lung = lungs.reshape(len(lungs), -1).any(axis=1)
    return np.where(has_lung, fuse_slice_readings(p, lesion_area_cm2), 0.0).astype(np.float32)


def read_heat_maps(
    volume: CTVolume,
    lungs: np.ndarray,
    classifier: SliceClassifier,
    slice_threshold: float = SLICE_THRESHOLD,
    reference_mm: float = REFERENCE_SLAB_MM,
    lesion_area_cm2: np.ndarray | None = None,
) -> tuple[np.ndarray, CoronaResult, np.ndarray]:
    """(P(abnormal) per slice, the read-outs, heat map in [0, 1] on the volume's grid, 0 outside the lungs).

    With `lesion_area_cm2` (the infection map's area per slice), P(abnormal) and the slabs' heat weights
    fuse it with the classifier's reading; without it, both are the classifier's alone.
    """
    has_lung = lungs.reshape(len(lungs), -1).any(axis=1)
    probabilities = _read_slices(classifier, volume, lungs, lesion_area_cm2)
    index = slab_index(volume.shape[0], volume.spacing[0], reference_mm)
    if index[-1] == len(index) - 1:  # already as thick as the reference: the slices are the slabs
        slab_volume, slab_lungs, slab_p = volume, lungs, probabilities
    else:
        slab_volume, slab_lungs = average_slabs(volume, lungs, index)
        slab_area = None if lesion_area_cm2 is None else slab_means(lesion_area_cm2, index)
        slab_p = _read_slices(classifier, slab_volume, slab_lungs, slab_area)
    weights = heat_weight(slab_p)
    slab_heat = classifier.heat_maps(slab_volume, slab_lungs, np.flatnonzero(weights > 0), weights)
    heat = slab_heat[index]
    heat[lungs == 0] = 0
    corona = CoronaResult(
        slice_threshold=slice_threshold,
        positive_slices=int(np.count_nonzero((probabilities > slice_threshold) & has_lung)),
        slices_with_lung=int(np.count_nonzero(has_lung)),
        positive_ratio=positive_ratio(probabilities, has_lung, slice_threshold),
        corona_score_ml=corona_score(heat, volume.spacing),
        heat_slab_mm=float(slab_volume.spacing[0]),
        slice_reading="classifier" if lesion_area_cm2 is None else "classifier+lesion-area",
    )
    return probabilities, corona, heat
