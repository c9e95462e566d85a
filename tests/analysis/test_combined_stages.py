"""The two combinations of a network with a classical rule: network-guided dense-lung recovery and the
infection network completed by the HU baseline's dense cores, and the HU baseline with the infection
network's veto on dense pieces it sees no lesion in (analysis/pipeline/lungs.py, infection.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial import ConvexHull

from analysis.phantoms import Severity, make_phantom, random_spec
from analysis.pipeline.infection import (
    CONSOLIDATION,
    GGO,
    BaselineWithNetworkVeto,
    NetworkWithDenseCores,
    add_touching_consolidation,
    drop_craniocaudal_partial_volume,
)
from analysis.pipeline.lungs import (
    LEFT,
    RIGHT,
    NetworkGuidedLungSegmenter,
    _beyond_convex_hull_mm,
    drop_abdominal_gas,
    recover_dense_lung,
)
from analysis.pipeline.result import ModelInfo
from analysis.pipeline.volume import CTVolume


def _chest() -> tuple[CTVolume, np.ndarray]:
    """20 slices of 1 mm pixels: soft tissue, a right lung of air (x 10..129) and a rib of bone."""
    hu = np.full((20, 80, 200), 40, dtype=np.int16)
    lungs = np.zeros(hu.shape, dtype=np.uint8)
    hu[:, 20:60, 10:130] = -850
    lungs[:, 20:60, 10:130] = RIGHT
    hu[:, 20:60, 5:8] = 700  # bone beside the lung
    return CTVolume(hu=hu, spacing=(2.0, 1.0, 1.0)), lungs


def test_dense_lung_the_network_sees_next_to_the_classical_mask_is_recovered_and_nothing_else():
    volume, classical = _chest()
    guide = classical.copy()
    guide[4:16, 25:55, 130:150] = RIGHT  # a 20 mm block of consolidation medial to the aerated lung
    guide[:, 17:20, 60:100] = RIGHT  # the network's coarse edge: a 3 mm rim of chest wall
    guide[:, 20:60, 5:10] = RIGHT  # ... and the rib next to the lung
    guide[4:16, 65:75, 150:165] = RIGHT  # dense tissue that does not touch the lung
    guide[4:16, 25:55, 170:180] = LEFT  # the other side's label never joins this lung

    labels = recover_dense_lung(volume, classical, guide)

    assert (labels[4:16, 25:55, 130:150] == RIGHT).all()
    assert not labels[:, 17:19].any()  # thinner than the opening: not lung (one pixel may grow back)
    assert not labels[:, :, 5:8].any()  # bone is never lung
    assert not labels[:, 65:75].any()
    assert not labels[:, :, 170:].any()
    np.testing.assert_array_equal(labels[classical > 0], classical[classical > 0])  # nothing is taken away


def test_the_network_s_rim_of_chest_wall_beyond_the_lung_s_hull_stays_out_and_a_consolidated_mass_does_not():
    volume, classical = _chest()  # the aerated lung's hull is its box: y 20..59
    guide = classical.copy()
    guide[4:16, 60:68, 20:60] = RIGHT  # the network's coarse edge, 8 mm into the wall beside the lung
    guide[4:16, 60:80, 80:120] = RIGHT  # a consolidated mass reaching 20 mm past the hull

    labels = recover_dense_lung(volume, classical, guide)

    assert (labels[4:16, 60:63, 20:60] == RIGHT).all()  # within 3 mm of the hull (a recess's consolidation)
    assert not labels[:, 63:68, 20:60].any()  # further, and no deeper than a rim: chest wall
    assert (labels[4:16, 60:80, 80:120] == RIGHT).all()
    unlimited = recover_dense_lung(volume, classical, guide, hull_margin_mm=None)
    assert (unlimited[4:16, 60:68, 20:60] == RIGHT).all()


def test_the_distance_beyond_a_mask_s_hull_is_measured_in_mm_from_its_row_ends():
    rng = np.random.default_rng(3)
    mask = ndimage.binary_dilation(rng.random((12, 30, 40)) > 0.985, iterations=3)
    spacing = np.array([2.5, 0.8, 0.8], dtype=np.float32)
    points = np.argwhere(np.ones(mask.shape, dtype=bool))
    beyond = _beyond_convex_hull_mm(mask, points, spacing)
    hull = ConvexHull(np.argwhere(mask) * spacing)  # from every voxel, not only the ends of rows
    expected = (points * spacing @ hull.equations[:, :3].T + hull.equations[:, 3]).max(axis=1)
    np.testing.assert_allclose(beyond, expected, atol=1e-3)
    assert (beyond[mask.ravel()] <= 1e-3).all()
    flat = np.zeros((3, 10, 10), dtype=bool)
    flat[1, 2:5, 2:5] = True  # no volume: nothing can be measured against it
    assert np.isinf(_beyond_convex_hull_mm(flat, points[:5], spacing)).all()


def test_the_guided_segmenter_records_the_network_and_returns_the_classical_mask_plus_recovery():
    phantom = make_phantom(random_spec(9106, Severity.SEVERE), slice_thickness_mm=5.0, pixel_spacing_mm=1.4, matrix=256)
    info = ModelInfo(stage="lungs", name="toy-net", version="2.0", sha256="ab" * 32)

    class TruthNetwork:  # a "network" that knows the phantom's lungs exactly
        def __init__(self) -> None:
            self.info = info

        def __call__(self, volume: CTVolume) -> np.ndarray:
            return phantom.lungs

    segmenter = NetworkGuidedLungSegmenter(TruthNetwork())
    labels = segmenter(phantom.volume)
    classical = segmenter.classical(phantom.volume)
    consolidated = phantom.infection == CONSOLIDATION

    # The classical mask leaves out the consolidation against the heart and on the diaphragm ...
    assert (classical[consolidated] > 0).mean() < 0.85
    # ... the guided one recovers most of it, and stays within the true lungs.
    assert (labels[consolidated] > 0).mean() > 0.97
    assert ((labels > 0) & (phantom.lungs == 0)).sum() < 0.002 * (phantom.lungs > 0).sum()
    assert segmenter.info.sha256 == info.sha256
    assert segmenter.info.name.endswith("+toy-net")
    assert segmenter.info.kind == "network"


def test_only_the_baseline_consolidation_that_touches_a_network_lesion_is_added():
    network = np.zeros((10, 60, 60), dtype=np.uint8)
    network[3:7, 10:20, 10:20] = GGO
    baseline = np.zeros_like(network)
    baseline[3:7, 20:30, 12:18] = CONSOLIDATION  # the dense core the network under-read, touching its lesion
    baseline[3:7, 45:50, 45:50] = CONSOLIDATION  # a vessel far from any lesion
    baseline[3:7, 12:15, 12:15] = GGO  # the baseline's GGO adds nothing

    out = add_touching_consolidation(network, baseline)

    assert (out[3:7, 20:30, 12:18] == CONSOLIDATION).all()
    assert not out[:, 45:50, 45:50].any()
    assert (out[3:7, 10:20, 10:20] == GGO).all()
    np.testing.assert_array_equal(add_touching_consolidation(network, np.zeros_like(baseline)), network)


def test_the_combined_infection_stage_stays_inside_the_lungs_and_names_both_methods():
    volume, lungs = _chest()
    volume.hu[5:10, 30:40, 20:30] = -20  # a consolidation in the lateral lung (far from the hilum)

    class EverythingGGO:
        info = ModelInfo(stage="infection", name="toy-infection", version="1.0", sha256="cd" * 32)

        def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
            return np.full(volume.shape, GGO, dtype=np.uint8)

    stage = NetworkWithDenseCores(EverythingGGO())
    labels = stage(volume, lungs)
    assert not labels[lungs == 0].any()
    assert (labels[5:10, 32:38, 22:28] == CONSOLIDATION).all()
    assert stage.info.name == "toy-infection+hu-band-baseline"
    assert stage.info.sha256 == "cd" * 32


def test_the_network_vetoes_the_baselines_dense_pieces_without_a_lesion_and_keeps_faint_ones():
    volume, lungs = _chest()
    volume.hu[2:18, 35:45, 30:40] = 40  # a 10 mm vessel running through the slices: survives the opening
    volume.hu[5:10, 30:45, 90:105] = -20  # a consolidation the network sees
    volume.hu[5:10, 30:45, 60:75] = -560  # faint ground glass the network does not see

    class SeesTheConsolidation:
        info = ModelInfo(stage="infection", name="toy-infection", version="1.0", sha256="cd" * 32)

        def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
            labels = np.zeros(volume.shape, dtype=np.uint8)
            labels[6:9, 33:42, 93:102] = GGO  # inside it, smaller than the dense piece
            return labels

    stage = BaselineWithNetworkVeto(SeesTheConsolidation())
    labels = stage(volume, lungs)
    baseline = stage.baseline(volume, lungs)
    assert baseline[2:18, 37:43, 32:38].all()  # the density rule alone counts the vessel
    assert not labels[:, 35:45, 30:40].any()
    assert (labels[5:10, 32:43, 92:103] == CONSOLIDATION).all()
    assert (labels[5:10, 32:43, 62:73] == GGO).all()
    np.testing.assert_array_equal(labels[:, :, 50:], baseline[:, :, 50:])  # nothing else changes
    assert stage.info.name == "hu-band-baseline+toy-infection veto"
    assert (stage.info.kind, stage.info.sha256) == ("baseline", "cd" * 32)  # still a density rule: the run warns


def test_the_veto_reads_only_the_slices_that_decide_and_decides_as_a_reading_of_the_whole_study():
    phantom = make_phantom(
        random_spec(9100, Severity.MODERATE), slice_thickness_mm=5.0, pixel_spacing_mm=1.4, matrix=256
    )
    lesions = phantom.infection > 0

    class KnowsTheLesions:  # reads any slice it is asked for and labels the true lesions there
        info = ModelInfo(stage="infection", name="truth", version="1.0", sha256="ef" * 32)

        def __init__(self) -> None:
            self.read: list[int] = []

        def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
            return lesions.astype(np.uint8)

    class ReadsSlices(KnowsTheLesions):
        def segment_slices(self, volume: CTVolume, lungs: np.ndarray, zs: np.ndarray) -> np.ndarray:
            self.read += [int(z) for z in zs]
            out = np.zeros(volume.shape, dtype=np.uint8)
            out[zs] = lesions[zs]
            return out

    whole, subset = BaselineWithNetworkVeto(KnowsTheLesions()), BaselineWithNetworkVeto(ReadsSlices())
    expected = whole(phantom.volume, phantom.lungs)
    np.testing.assert_array_equal(subset(phantom.volume, phantom.lungs), expected)
    assert len(subset.network.read) == len(set(subset.network.read))  # no slice is read twice
    assert len(subset.network.read) < phantom.lungs.any(axis=(1, 2)).sum()
    baseline = subset.baseline(phantom.volume, phantom.lungs)
    assert (baseline > 0).sum() > (expected > 0).sum()  # vessel pieces the truth does not confirm went
    assert (expected[lesions] > 0).mean() == pytest.approx((baseline[lesions] > 0).mean())  # no lesion did


def test_the_run_says_infection_is_an_hu_band_estimate_unless_a_network_segments_it():
    from analysis.pipeline.run import run_pipeline

    phantom = make_phantom(
        random_spec(9100, Severity.MODERATE), slice_thickness_mm=10.0, pixel_spacing_mm=1.4, matrix=256
    )

    class KnowsTheLesions:
        info = ModelInfo(stage="infection", name="truth", version="1.0", sha256="ef" * 32)

        def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
            return phantom.infection

    def warned(segmenter) -> bool:
        result = run_pipeline(phantom.volume, infection_segmenter=segmenter)
        return any("HU-band rule" in w for w in result.warnings)

    assert warned(None)  # the baseline alone
    assert warned(BaselineWithNetworkVeto(KnowsTheLesions()))  # the network only removes pieces
    assert not warned(NetworkWithDenseCores(KnowsTheLesions()))


@pytest.mark.parametrize("side", [RIGHT, LEFT])
def test_recovery_without_that_lung_in_the_classical_mask_adds_nothing(side):
    volume, classical = _chest()
    classical[classical == RIGHT] = 0 if side == RIGHT else RIGHT
    guide = np.zeros_like(classical)
    guide[4:16, 25:55, 130:150] = side
    labels = recover_dense_lung(volume, classical, guide)
    if side == RIGHT:
        assert not labels.any()
    else:
        assert not (labels == LEFT).any()


def test_infection_at_the_lungs_craniocaudal_edge_stays_only_where_it_continues_into_the_lung():
    lungs = np.zeros((6, 20, 20), dtype=bool)
    lungs[1:5, 2:18, 2:18] = True
    labels = np.zeros(lungs.shape, dtype=np.uint8)
    labels[1, 3:6, 3:6] = GGO  # the base, over aerated lung: the dome's partial volume
    labels[1:3, 10:14, 10:14] = CONSOLIDATION  # resting on the diaphragm and reaching up: an opacity
    labels[4, 15:17, 15:17] = GGO  # the apex, under aerated lung
    labels[2:4, 5:8, 12:15] = GGO  # inside the lung: never touched

    out = drop_craniocaudal_partial_volume(labels, lungs)

    assert not out[1, 3:6, 3:6].any()
    assert not out[4, 15:17, 15:17].any()
    assert (out[1:3, 10:14, 10:14] == CONSOLIDATION).all()
    assert (out[2:4, 5:8, 12:15] == GGO).all()


def _lung_with_gas_below() -> tuple[CTVolume, np.ndarray, np.ndarray]:
    """A right lung (z 4..39) with an air body under its base, as 10 mm slabs join them: (volume, air labels, guide)."""
    hu = np.full((40, 80, 120), 40, dtype=np.int16)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    hu[4:40, 20:60, 10:60] = -850
    labels[4:40, 20:60, 10:60] = RIGHT
    guide = labels.copy()  # the network sees the lung ...
    hu[0:10, 30:50, 70:95] = -1000  # ... and not the colon gas under the dome,
    hu[8:10, 30:50, 60:70] = -650  # which the diaphragm's partial volume joins to the lung in two slabs
    labels[0:10, 30:50, 70:95] = RIGHT
    labels[8:10, 30:50, 60:70] = RIGHT
    return CTVolume(hu=hu, spacing=(5.0, 1.0, 1.0)), labels, guide


def test_gas_under_the_lung_that_the_network_does_not_call_lung_is_dropped():
    volume, labels, guide = _lung_with_gas_below()
    out, warning = drop_abdominal_gas(volume, labels, guide)
    assert warning == ""
    assert not out[0:8, :, 60:].any()  # the gas body below the slabs that join it to the lung
    np.testing.assert_array_equal(out[4:40, 20:60, 10:60], RIGHT)  # the lung is untouched
    # Where lung and gas form one piece in a slab, the piece stays: the network's coarse edge cannot split it.
    assert (out[8:10, 30:50, 70:95] == RIGHT).all()


def test_aerated_lung_the_network_misses_stays_and_so_does_air_high_in_the_lung():
    volume, labels, guide = _lung_with_gas_below()
    volume.hu[0:10, 30:50, 70:95] = -800  # aerated lung between consolidations, not gas: it has tissue in it
    bulla = (slice(30, 36), slice(65, 75), slice(20, 30))
    volume.hu[bulla] = -1000  # an air cyst in the upper half of the lung
    labels[bulla] = RIGHT
    out, _ = drop_abdominal_gas(volume, labels, guide)
    np.testing.assert_array_equal(out, labels)


def test_a_network_that_does_not_read_the_scan_vetoes_nothing_and_says_so():
    volume, labels, guide = _lung_with_gas_below()
    out, warning = drop_abdominal_gas(volume, labels, np.zeros_like(guide))
    np.testing.assert_array_equal(out, labels)
    assert "does not read" in warning


def test_the_worker_s_default_stages_use_the_shipped_lung_network_to_veto_gas_and_recover_dense_lung(tmp_path):
    import shutil

    from analysis.nets.registry import update_metadata, weight_paths
    from analysis.nets.segmenters import pipeline_stages

    lungs = pipeline_stages(defaults_only=True)["lungs"]
    assert isinstance(lungs, NetworkGuidedLungSegmenter)
    assert lungs.recover_dense  # the shipped weights' metadata says pipeline_default (pipeline 0.6.0)
    assert lungs.info.name == "classical-threshold-hull+lungs-unet2d"
    assert lungs.info.sha256 == lungs.network.metadata.sha256
    # Weights whose metadata does not say so only veto gas, and the run records it.
    for path in weight_paths("lungs-unet2d"):
        shutil.copy(path, tmp_path / path.name)
    update_metadata("lungs-unet2d", tmp_path, pipeline_default=False)
    veto_only = pipeline_stages(tmp_path, defaults_only=True)["lungs"]
    assert not veto_only.recover_dense
    assert veto_only.info.name == "classical-threshold-hull+lungs-unet2d gas veto"


def test_fat_the_network_calls_lung_is_not_recovered_and_consolidation_with_some_fat_is():
    # P001: the network's coarse edge took in 21 mL of the fat over the left dome (median -94 HU).
    volume, classical = _chest()
    guide = classical.copy()
    guide[4:16, 25:55, 130:150] = RIGHT
    volume.hu[4:16, 25:55, 130:150] = -100  # fat
    assert not recover_dense_lung(volume, classical, guide)[4:16, 25:55, 130:150].any()

    volume.hu[4:16, 25:55, 130:150] = 20  # consolidation ...
    volume.hu[4:16, 25:35, 130:150] = -120  # ... a third of it fat-like (partial volume, fat)
    assert (recover_dense_lung(volume, classical, guide)[4:16, 25:55, 130:150] == RIGHT).all()
