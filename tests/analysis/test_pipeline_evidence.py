"""Accuracy of the pipeline as the worker runs it (shipped networks, classical fallbacks), on truth we trust.

Phantoms give exact truth at any slice thickness; the real COVID-CT-MD cases give normal lungs,
radiologists' slice labels and the thin/thick consistency the thick-section method relies on.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from analysis.execute import default_pipeline
from analysis.phantoms import LesionKind, LesionSpec, PhantomSpec, Severity, Side, make_phantom, random_spec
from analysis.pipeline.result import PipelineResult
from analysis.training.datasets import read_slice_labels
from tests.conftest import analysed_real_scan, ctdata_path

THICKNESSES = (1.0, 2.5, 5.0, 10.0)
# The 15 HU. Reached since pipeline 0.8.0, when the lung network's rim of chest wall beyond the
# aerated lung's hull stopped counting as lung (moderate phantom: 20 / 21 / 22 / 16 -> 12 / 13 / 13 / 8 HU
# high at 1 / 2.5 / 5 / 10 mm; what remains is faint ground-glass edge below the -700 HU band).
IHU_TOLERANCE_HU = 15


def _scan_ihu(phantom) -> float:
    """Mean HU of the true infection on the scan as reconstructed (partial volume included)."""
    return float(phantom.volume.hu[phantom.infection > 0].mean())


@pytest.mark.parametrize("thickness", THICKNESSES)
@pytest.mark.parametrize("severity", [Severity.MODERATE, Severity.SEVERE])
def test_phantom_lung_volume_poi_and_ihu_match_the_truth_at_every_thickness(severity, thickness):
    phantom = make_phantom(
        random_spec(9100 + (severity == Severity.SEVERE), severity),
        slice_thickness_mm=thickness,
        pixel_spacing_mm=1.4,
        matrix=256,
    )
    result = default_pipeline(phantom.volume)
    both, truth = result.region("both"), phantom.truth

    assert both.lung_volume_ml == pytest.approx(truth.lung_volume_ml, rel=0.03)
    assert abs(both.poi - truth.poi) <= 0.01, f"POI {both.poi:.4f} vs truth {truth.poi:.4f}"
    assert both.ihu is not None
    assert abs(both.ihu - _scan_ihu(phantom)) <= IHU_TOLERANCE_HU, (
        f"iHU {both.ihu:.0f} vs scan truth {_scan_ihu(phantom):.0f}"
    )
    right, left = result.region("right"), result.region("left")
    assert right.lung_volume_ml == pytest.approx(truth.right_lung_ml, rel=0.05)
    assert left.lung_volume_ml == pytest.approx(truth.left_lung_ml, rel=0.05)


@pytest.mark.parametrize("thickness", THICKNESSES)
def test_a_phantom_without_lesions_reads_almost_no_infection_at_every_thickness(thickness):
    # What is read is vessels: 0.00-0.09 % on phantom 9300 since the infection network vetoes the dense
    # pieces it sees no lesion in (pipeline 0.7.0; 0.14-0.24 % before); real normal lungs 0.00-0.02 % at
    # 2 mm and 0.11-0.45 % in 10 mm slabs. Before 2026-12-04 the phantom's vessels met in a hub 26 mm inside
    # each lung and read 0.33-0.50 %, which hid the baseline's iHU bias (model card).
    phantom = make_phantom(
        random_spec(9300, Severity.NORMAL), slice_thickness_mm=thickness, pixel_spacing_mm=1.4, matrix=256
    )
    assert phantom.truth.poi == 0
    both = default_pipeline(phantom.volume).region("both")
    assert both.poi < 0.002, f"POI {100 * both.poi:.2f} % at {thickness} mm"


@pytest.mark.xfail(
    strict=True,
    reason="known gap: consolidation against the heart (no aerated lung medial to it) and resting on the "
    "diaphragm (no lung below it) is only partly recovered by the lung network, so POI reads 2.6-4.3 points low",
)
@pytest.mark.parametrize("seed", [9102, 9106])
def test_severe_phantoms_with_consolidation_against_the_heart_and_diaphragm_match_the_poi(seed):
    phantom = make_phantom(random_spec(seed, Severity.SEVERE), slice_thickness_mm=5.0, pixel_spacing_mm=1.4, matrix=256)
    both = default_pipeline(phantom.volume).region("both")
    assert abs(both.poi - phantom.truth.poi) <= 0.01, f"POI {both.poi:.4f} vs truth {phantom.truth.poi:.4f}"


SEPARATE_LESIONS = PhantomSpec(
    seed=9200,
    lesions=(
        LesionSpec(LesionKind.GGO, 22.0, -550.0, Side.RIGHT, height_frac=0.7, angle_deg=60, depth_frac=0.95),
        LesionSpec(LesionKind.CONSOLIDATION, 18.0, -20.0, Side.RIGHT, height_frac=0.25, angle_deg=100, depth_frac=1.0),
        LesionSpec(LesionKind.GGO, 25.0, -480.0, Side.LEFT, height_frac=0.3, angle_deg=90, depth_frac=1.0),
        LesionSpec(LesionKind.CONSOLIDATION, 16.0, 0.0, Side.LEFT, height_frac=0.75, angle_deg=20, depth_frac=0.3),
    ),
    description="four separate lesions",
)


def _opacities_found(thickness: float) -> list[tuple[int, float, object]]:
    """(lesion number, true volume, the measured opacity nearest to it) for each phantom lesion."""
    phantom = make_phantom(SEPARATE_LESIONS, slice_thickness_mm=thickness, pixel_spacing_mm=1.4, matrix=256)
    result = default_pipeline(phantom.volume)
    large = sorted(result.opacities, key=lambda o: -o.volume_ml)[: len(SEPARATE_LESIONS.lesions)]
    found = []
    for number, expected_ml in enumerate(phantom.truth.lesion_volumes_ml, start=1):
        zz, yy, xx = np.nonzero(phantom.lesions == number)
        centre = np.array([zz.mean(), yy.mean(), xx.mean()])
        nearest = min(large, key=lambda o: np.linalg.norm(np.array(o.centroid_voxel) - centre))
        found.append((number, expected_ml, nearest))
    return found


@pytest.mark.parametrize("thickness", THICKNESSES)
def test_each_focal_opacity_is_found_with_its_volume_within_ten_percent(thickness):
    # 1: GGO against the lateral chest wall (read 20-36 % small until pipeline 0.6.0, when the wall raised
    # its half-maximum edge); 2: consolidation in the posterior costophrenic recess (half outside the
    # classical lung mask until the lung network's dense-lung recovery); 3: posterior subpleural GGO;
    # 4: central consolidation. At 10 mm the consolidation's partial-volume shell adds ~13 %: 10 % holds
    # up to 5 mm.
    tolerance = 0.10 if thickness <= 5.0 else 0.15
    for number, expected_ml, opacity in _opacities_found(thickness):
        assert opacity.volume_ml == pytest.approx(expected_ml, rel=tolerance), f"lesion {number} at {thickness} mm"
        ggo = SEPARATE_LESIONS.lesions[number - 1].kind == "ggo"
        assert opacity.kind in (("ggo", "mixed") if ggo else ("consolidation", "mixed"))


# --- real data -----------------------------------------------------------------------------------


@pytest.mark.realdata
@pytest.mark.parametrize("case", ["normal001", "normal002"])
def test_normal_lungs_have_almost_no_infection(case):
    _, result = analysed_real_scan(case)
    both = result.region("both")
    assert both.lung_volume_ml > 2000
    assert both.poi < 0.005, f"{case}: POI {100 * both.poi:.2f} %"


@pytest.mark.realdata
def test_p001_slice_infection_area_separates_the_radiologists_infected_slices():
    volume, result = analysed_real_scan("P001")
    labels = read_slice_labels(ctdata_path("covid-ct-md", "P001_slice_labels.csv"), volume)
    area = np.array([s.infection_area_mm2 / max(s.lung_area_mm2, 1.0) for s in result.slices])
    known = labels >= 0
    auc = roc_auc_score(labels[known], area[known])
    print(f"P001 slice-level AUC {auc:.3f}")
    assert auc >= 0.90


# The issue asks for 1 percentage point. cap001 (lobar pneumonia) read 1.3 points higher at 10 mm until
# infection at the lungs' craniocaudal edge (the diaphragm dome's partial volume) was dropped: +0.8 now.
POI_SLAB_TOLERANCE = {"P001": 0.01, "cap001": 0.01}


@pytest.mark.realdata
@pytest.mark.parametrize("case", ["P001", "cap001"])
def test_ten_millimetre_slabs_give_the_same_poi_and_lung_volume_as_the_thin_scan(case):
    _, thin = analysed_real_scan(case)
    thick_volume, thick = analysed_real_scan(case, slices_per_slab=5)
    assert thick_volume.spacing[0] == pytest.approx(10.0)
    a, b = thin.region("both"), thick.region("both")
    assert b.lung_volume_ml == pytest.approx(a.lung_volume_ml, rel=0.03)
    assert abs(b.poi - a.poi) <= POI_SLAB_TOLERANCE[case], (
        f"{case}: POI {100 * a.poi:.2f} % thin vs {100 * b.poi:.2f} % at 10 mm"
    )


def _largest_air_body_ml(volume, lungs: np.ndarray) -> float:
    """Largest 3-D body of pure air (HU < -950) in the lowest third of the lung mask, in mL.

    Lung parenchyma has tissue in it (about -850 HU) even in 10 mm slabs; stomach and colon gas does not.
    """
    from scipy import ndimage

    zs = np.flatnonzero(lungs.any(axis=(1, 2)))
    low = slice(zs[0], zs[0] + (zs[-1] - zs[0] + 1) // 3)
    bodies, n = ndimage.label((lungs[low] > 0) & (volume.hu[low] < -950))
    return float(np.bincount(bodies.ravel())[1:].max() * volume.voxel_volume_ml) if n else 0.0


@pytest.mark.realdata
@pytest.mark.parametrize(("case", "slab"), [("cap001", 1), ("cap001", 5), ("normal002", 5)])
def test_stomach_and_colon_gas_under_the_diaphragm_stay_out_of_the_lungs(case, slab):
    # The colon's splenic flexure joins cap001's lungs at 2 mm (61 mL of it was lung) and normal002's
    # left lung in 10 mm slabs (33 mL); the lung network's gas veto leaves them out (lungs.drop_abdominal_gas).
    volume, result = analysed_real_scan(case, slab)
    assert _largest_air_body_ml(volume, result.lungs) < 20.0
    if case == "normal002":
        _, thin = analysed_real_scan(case)
        assert result.region("left").lung_volume_ml == pytest.approx(thin.region("left").lung_volume_ml, rel=0.03)


# --- the shipped networks, combined with the classical rules (opt-in, not yet the default) ---------------
# The lung network guides the classical mask and the infection network is completed by the baseline's
# dense cores (analysis.nets.segmenters.pipeline_stages). They meet the phantom targets the classical
# methods miss; they are not the default because 10 mm slabs of real scans read higher than the thin scan
# (cap001 +2.0 points; model card), which the thick-section method cannot accept.


@pytest.fixture(scope="module")
def combined_stages() -> dict:
    from analysis.nets.segmenters import pipeline_stages

    return pipeline_stages(defaults_only=False)


def _combined(stages: dict, volume) -> PipelineResult:
    from analysis.pipeline.run import run_pipeline

    return run_pipeline(volume, lung_segmenter=stages["lungs"], infection_segmenter=stages["infection"])


@pytest.mark.parametrize("thickness", THICKNESSES)
@pytest.mark.parametrize("severity", [Severity.MODERATE, Severity.SEVERE])
def test_combined_networks_meet_the_phantom_targets_at_every_thickness(combined_stages, severity, thickness):
    phantom = make_phantom(
        random_spec(9100 + (severity == Severity.SEVERE), severity),
        slice_thickness_mm=thickness,
        pixel_spacing_mm=1.4,
        matrix=256,
    )
    both, truth = _combined(combined_stages, phantom.volume).region("both"), phantom.truth
    assert both.lung_volume_ml == pytest.approx(truth.lung_volume_ml, rel=0.03)
    assert abs(both.poi - truth.poi) <= 0.01, f"POI {both.poi:.4f} vs truth {truth.poi:.4f}"
    # 25 HU, not 15: the network reads the moderate phantom's faint lesion edges as ground glass, 16-22 HU low
    # (pipeline 0.8.0; until 0.7.0 a rim of chest wall in the lung mask made up for it, 11-15 HU).
    assert abs(both.ihu - _scan_ihu(phantom)) <= 25, f"iHU {both.ihu:.0f} vs scan truth {_scan_ihu(phantom):.0f}"


@pytest.mark.parametrize(
    "seed",
    [
        9102,
        pytest.param(9106, marks=pytest.mark.xfail(strict=True, reason="measured 1.27 points low (2026-12-04)")),
    ],
)
def test_combined_networks_measure_consolidation_against_the_heart_and_diaphragm(combined_stages, seed):
    phantom = make_phantom(random_spec(seed, Severity.SEVERE), slice_thickness_mm=5.0, pixel_spacing_mm=1.4, matrix=256)
    both = _combined(combined_stages, phantom.volume).region("both")
    assert abs(both.poi - phantom.truth.poi) <= 0.01, f"POI {both.poi:.4f} vs truth {phantom.truth.poi:.4f}"
