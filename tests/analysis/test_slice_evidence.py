"""The per-slice P(abnormal) fuses the slice classifier with the infection map's lesion area."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.nets.segmenters import load_segmenters
from analysis.phantoms import Severity, make_phantom, random_spec
from analysis.pipeline.corona import corona_score
from analysis.pipeline.heatmaps import read_heat_maps
from analysis.pipeline.slice_evidence import (
    LESION_AREA_EVEN_CM2,
    fuse_slice_readings,
    lesion_areas_cm2,
    lesion_logit,
)


def test_lesion_reader_is_undecided_at_the_even_area_and_grows_with_the_area():
    logits = lesion_logit(np.array([0.0, 0.5, LESION_AREA_EVEN_CM2 - 0.05, 8.0, 30.0]))
    assert logits[2] == pytest.approx(0.0)
    assert np.all(np.diff(logits) > 0)
    assert logits[0] < -3  # a slice without lesion argues clearly for normal


def test_fused_probability_sides_with_the_reader_that_is_surer():
    p = np.array([0.5, 0.5, 0.5, 0.9, 0.9, 0.1])
    area = np.array([0.0, LESION_AREA_EVEN_CM2 - 0.05, 20.0, 0.0, 20.0, 20.0])
    fused = fuse_slice_readings(p, area)
    assert fused[0] < 0.5 < fused[2]  # an undecided classifier follows the lesions
    assert fused[1] == pytest.approx(0.5, abs=1e-6)  # both undecided
    assert fused[3] < 0.5  # "abnormal" at 0.9 but no lesion at all: the missing lesion wins
    assert fused[4] > fused[2]  # both say abnormal: surer than either alone
    assert 0.1 < fused[5] < 0.9
    assert np.all((fused >= 0) & (fused <= 1))
    # A classifier's hard 0 or 1 stays finite.
    assert np.isfinite(fuse_slice_readings(np.array([0.0, 1.0]), np.array([0.0, 0.0]))).all()


def test_fusion_refuses_mismatched_or_negative_areas():
    with pytest.raises(ValueError, match="one lesion area per slice"):
        fuse_slice_readings(np.full(4, 0.5), np.zeros(3))
    with pytest.raises(ValueError, match="negative"):
        lesion_logit(np.array([-1.0]))
    with pytest.raises(ValueError, match="positive"):
        lesion_logit(np.zeros(2), even_cm2=0.0)


def test_lesion_areas_are_the_infected_pixels_of_each_slice_in_square_centimetres():
    infection = np.zeros((3, 10, 10), np.uint8)
    infection[1, :5, :4] = 1  # 20 pixels
    infection[2, :, :] = 2  # 100 pixels
    np.testing.assert_allclose(lesion_areas_cm2(infection, pixel_area_mm2=0.64), [0.0, 0.128, 0.64])


def test_the_pipeline_s_slice_reading_and_heat_weights_use_the_lesions():
    classifier = load_segmenters()["classifier"]
    phantom = make_phantom(random_spec(9101, Severity.SEVERE), slice_thickness_mm=5.0, pixel_spacing_mm=2.0, matrix=192)
    lungs = phantom.lungs
    truth_areas = lesion_areas_cm2(phantom.lesions, phantom.volume.pixel_area_mm2)
    alone, corona_alone, _ = read_heat_maps(phantom.volume, lungs, classifier)
    fused, corona, heat = read_heat_maps(phantom.volume, lungs, classifier, lesion_area_cm2=truth_areas)
    _, corona_clear, heat_clear = read_heat_maps(
        phantom.volume, lungs, classifier, lesion_area_cm2=np.zeros(len(lungs))
    )

    assert corona_alone.slice_reading == "classifier"
    assert corona.slice_reading == "classifier+lesion-area"
    has_lung = lungs.reshape(len(lungs), -1).any(axis=1)
    np.testing.assert_allclose(fused[has_lung], fuse_slice_readings(alone, truth_areas)[has_lung], atol=1e-6)
    assert not fused[~has_lung].any()
    # With the true lesions as evidence, the fused reading separates the lesion slices better.
    lesion_slices = truth_areas > 0
    gap_alone = alone[has_lung & lesion_slices].mean() - alone[has_lung & ~lesion_slices].mean()
    gap_fused = fused[has_lung & lesion_slices].mean() - fused[has_lung & ~lesion_slices].mean()
    assert gap_fused > gap_alone
    # The slabs' heat weights read the lesions too: the same lungs told "no lesion anywhere" score far less,
    # and what heat is left there sits where the classifier alone is sure.
    assert corona.corona_score_ml > 2 * corona_clear.corona_score_ml
    assert corona.corona_score_ml == pytest.approx(corona_score(heat, phantom.volume.spacing))
    assert heat_clear.sum() < heat.sum()
    assert not heat[lungs == 0].any()
