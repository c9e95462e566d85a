"""The whole imaging pipeline on one CT volume: lungs -> infection -> measurements -> opacities.

`run_pipeline` is what the Celery task and `manage.py analyse` call. Segmenters (trained networks)
are passed in; without them the classical lung method and the HU-band infection baseline run, and
the result's ModelInfo entries say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from analysis.pipeline.corona import SLICE_THRESHOLD
from analysis.pipeline.heatmaps import SliceClassifier, read_heat_maps
from analysis.pipeline.infection import segment_infection
from analysis.pipeline.lungs import segment_lungs
from analysis.pipeline.measure import measure_regions, measure_slices
from analysis.pipeline.opacities import find_opacities
from analysis.pipeline.result import PipelineResult
from analysis.pipeline.slice_evidence import lesion_areas_cm2
from analysis.pipeline.version import PIPELINE_VERSION
from analysis.pipeline.volume import CTVolume

STAGES = ("lungs", "infection", "measure", "opacities", "heatmaps")


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
        areas = lesion_areas_cm2(infection.labels, volume.pixel_area_mm2)
        probabilities, corona, heat = read_heat_maps(
            volume, lungs.labels, classifier, slice_threshold, lesion_area_cm2=areas
        )
        has_lung = lungs.labels.reshape(len(lungs.labels), -1).any(axis=1)
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
        # Also with the infection network's veto: the network only removes pieces, the HU band reads.
        warnings.append(
            "infection is read by an HU-band rule, not segmented by a trained network: treat it as an estimate"
        )
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
