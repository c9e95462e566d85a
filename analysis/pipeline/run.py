"""The whole imaging pipeline on one CT volume: lungs -> infection -> measurements -> opacities.

`run_pipeline` is what the Celery task and `manage.py analyse` call. Segmenters (trained networks)
are passed in; without them the classical lung method and the HU-band infection baseline run, and
the result's ModelInfo entries say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import numpy as np

from analysis.pipeline.corona import SLICE_THRESHOLD, corona_score, positive_ratio
from analysis.pipeline.infection import segment_infection
from analysis.pipeline.lungs import segment_lungs
from analysis.pipeline.measure import measure_regions, measure_slices
from analysis.pipeline.opacities import find_opacities
from analysis.pipeline.result import CoronaResult, ModelInfo, PipelineResult
from analysis.pipeline.version import PIPELINE_VERSION
from analysis.pipeline.volume import CTVolume

STAGES = ("lungs", "infection", "measure", "opacities", "heatmaps")


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


THICK_SLICE_MM = 8.0  # above this, small opacities blur into the lung: say so


def run_pipeline(
    volume: CTVolume,
    *,
    progress: Callable[[str, int], None] | None = None,
    lung_segmenter: Callable[[CTVolume], np.ndarray] | None = None,
    infection_segmenter: Callable[[CTVolume, np.ndarray], np.ndarray] | None = None,
    classifier: SliceClassifier | None = None,
    slice_threshold: float = SLICE_THRESHOLD,
) -> PipelineResult:
    """Analyse `volume`; `progress(stage, percent)` is called as each stage starts and at 100 % at the end.

    Raises PipelineError (a ValueError) when the scan cannot be analysed, e.g. when it holds no lungs.
    """
    report = progress or (lambda stage, percent: None)
    timings: dict[str, float] = {}
    warnings: list[str] = []

    def stage(name: str) -> float:
        report(name, round(100 * STAGES.index(name) / len(STAGES)))
        return time.perf_counter()

    start = stage("lungs")
    lungs = segment_lungs(volume, lung_segmenter)
    warnings += lungs.warnings
    timings["lungs"] = time.perf_counter() - start

    start = stage("infection")
    infection = segment_infection(volume, lungs.labels, infection_segmenter)
    timings["infection"] = time.perf_counter() - start

    start = stage("measure")
    regions = measure_regions(volume, lungs.labels, infection.labels)
    slices = measure_slices(volume, lungs.labels, infection.labels)
    timings["measure"] = time.perf_counter() - start

    start = stage("opacities")
    opacities = find_opacities(volume, lungs.labels, infection.labels)
    timings["opacities"] = time.perf_counter() - start

    corona, heat, models = None, None, [lungs.model, infection.model]
    if classifier is not None:
        start = stage("heatmaps")
        # Heat maps only for the positive slices, as the published system does: it is also what keeps
        # Grad-CAM within the time budget. Each map is weighted by its slice's P(abnormal), so a slab
        # that averages a lesion with normal lung adds less heat per slice, as its thinner slices would.
        probabilities = np.asarray(classifier(volume, lungs.labels), dtype=np.float32)
        has_lung = lungs.labels.reshape(len(lungs.labels), -1).any(axis=1)
        positive = np.flatnonzero((probabilities > slice_threshold) & has_lung)
        heat = classifier.heat_maps(volume, lungs.labels, positive, probabilities)
        corona = CoronaResult(
            slice_threshold=slice_threshold,
            positive_slices=len(positive),
            slices_with_lung=int(np.count_nonzero(has_lung)),
            positive_ratio=positive_ratio(probabilities, has_lung, slice_threshold),
            corona_score_ml=corona_score(heat, volume.spacing),
        )
        slices = [
            replace(s, abnormal_probability=float(probabilities[s.index])) if has_lung[s.index] else s for s in slices
        ]
        models.append(classifier.info)
        timings["heatmaps"] = time.perf_counter() - start
    report("done", 100)

    if volume.spacing[0] > THICK_SLICE_MM:
        warnings.append(
            f"slices are {volume.spacing[0]:g} mm apart: small opacities may be missed and volumes are less exact"
        )
    if infection.model.kind == "baseline":
        warnings.append("infection comes from an HU-band baseline, not a trained network: treat it as an estimate")
    return PipelineResult(
        pipeline_version=PIPELINE_VERSION,
        models=models,
        timings=timings,
        regions=regions,
        opacities=opacities,
        slices=slices,
        spacing=volume.spacing,
        lungs=lungs.labels,
        infection=infection.labels,
        warnings=warnings,
        corona=corona,
        heat_map=heat,
    )
