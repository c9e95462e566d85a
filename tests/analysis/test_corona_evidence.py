"""Issue 5 evidence: the corona score of the shipped slice classifier is thickness-robust, follows a
growing phantom, and the classifier separates real infected slices and scans (COVID-CT-MD).

The shipped classifier (slice-resnet2d 1.0) was trained on none of the four real cases' labels, so
every real-data figure is held out; targets it does not reach yet are strict xfails with the
measured figure (analysis/nets/MODEL_CARD.md).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from analysis.nets.segmenters import load_segmenters
from analysis.phantoms import Severity, make_phantom, patient_course, random_spec
from analysis.pipeline.corona import positive_ratio, relative_score
from analysis.pipeline.run import run_pipeline
from analysis.pipeline.volume import CTVolume, load_volume
from analysis.training.datasets import read_slice_labels
from analysis.training.trainer import auc
from patients.models import SUSPECTED_RATIO_THRESHOLD
from tests.conftest import ctdata_path


@pytest.fixture(scope="module")
def classifier():
    return load_segmenters()["classifier"]


def _read_out(classifier, volume: CTVolume, lungs: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(P(abnormal) per slice, positive ratio, corona score in mL) the way the pipeline computes them."""
    result = run_pipeline(volume, lung_segmenter=lambda v: lungs, classifier=classifier)
    probabilities = np.array([s.abnormal_probability or 0.0 for s in result.slices], dtype=np.float32)
    return probabilities, result.corona.positive_ratio, result.corona.corona_score_ml


UNMET = "the classifier fires on different shares of slices at 2.5 and 10 mm (2026-11-28: {})"


@pytest.mark.parametrize(
    ("seed", "severity"),
    [
        pytest.param(
            9100, Severity.MODERATE, marks=pytest.mark.xfail(strict=True, reason=UNMET.format("+40 %, 250 -> 350 mL"))
        ),
        pytest.param(
            9101, Severity.SEVERE, marks=pytest.mark.xfail(strict=True, reason=UNMET.format("+17 %, 262 -> 307 mL"))
        ),
    ],
)
def test_corona_score_of_a_phantom_at_2_5_and_10_mm_agrees_within_10_percent(classifier, seed, severity):
    scores = {}
    for thickness in (2.5, 10.0):
        phantom = make_phantom(
            random_spec(seed, severity), slice_thickness_mm=thickness, pixel_spacing_mm=1.4, matrix=256
        )
        scores[thickness] = _read_out(classifier, phantom.volume, phantom.lungs)[2]
    assert scores[2.5] > 0
    assert scores[10.0] == pytest.approx(scores[2.5], rel=0.10), scores


def test_relative_corona_score_rises_while_the_lesions_of_a_phantom_patient_grow(classifier):
    # patient_course: lesions grow from 0.55 of their radius to their peak at the second scan of four.
    specs = patient_course(9200, 4)[:2]
    scores = []
    for spec in specs:
        phantom = make_phantom(spec, slice_thickness_mm=5.0, pixel_spacing_mm=1.4, matrix=256)
        scores.append(_read_out(classifier, phantom.volume, phantom.lungs)[2])
    assert scores[0] > 0
    assert relative_score(scores[1], scores[0]) > 1.1, scores


@lru_cache(maxsize=2)
def _real_case(name: str) -> tuple[CTVolume, np.ndarray]:
    from analysis.training.datasets import classical_lungs

    volume = load_volume(ctdata_path("covid-ct-md", name))
    return volume, classical_lungs(volume)


@pytest.mark.realdata
@pytest.mark.xfail(strict=True, reason="slice-resnet2d 1.0 reaches AUC 0.878 on P001 (2026-11-28); target 0.95")
def test_p001_slice_probabilities_reach_auc_095_against_its_labels(classifier):
    volume, lungs = _real_case("P001")
    labels = read_slice_labels(ctdata_path("covid-ct-md", "P001_slice_labels.csv"), volume)
    probabilities = classifier(volume, lungs)
    known = labels >= 0
    assert auc(probabilities[known], labels[known]) >= 0.95


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("name", "suspected"), [("normal001", False), ("normal002", False), ("P001", True), ("cap001", True)]
)
def test_normal_scans_are_not_flagged_and_pneumonia_scans_are(classifier, name, suspected):
    volume, lungs = _real_case(name)
    probabilities = classifier(volume, lungs)
    has_lung = lungs.reshape(len(lungs), -1).any(axis=1)
    ratio = positive_ratio(probabilities, has_lung)
    assert (ratio >= SUSPECTED_RATIO_THRESHOLD) is suspected, ratio
