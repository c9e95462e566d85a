"""`manage.py analyse`: the worker's pipeline from the command line, without a database."""

from __future__ import annotations

import io
import json

import nibabel as nib
import numpy as np
import pytest
from django.core.management import CommandError, call_command

from analysis.pipeline.volume import load_volume, write_dicom_series

from .conftest import no_lung_volume, small_phantom


def test_json_has_every_measurement_and_slice_areas_keyed_by_sop_instance_uid(tmp_path):
    phantom = small_phantom()
    folder = tmp_path / "series"
    write_dicom_series(phantom.volume, folder, patient_id="CLI-1")
    out = io.StringIO()
    call_command("analyse", str(folder), "--json", "--out", str(tmp_path / "labels"), stdout=out)
    data = json.loads(out.getvalue())

    regions = {r["region"]: r for r in data["regions"]}
    assert {"both", "right", "left"} <= set(regions)
    # Zones, not lobes, and the output says so.
    assert (data["region_scheme"]["kind"], data["region_scheme"]["lobes"]) == ("zones", False)
    # The command prints what the worker's pipeline measures on the same series ...
    from analysis.execute import default_pipeline

    direct = default_pipeline(load_volume(folder)).region("both")
    assert regions["both"]["poi"] == pytest.approx(direct.poi, abs=1e-9)
    assert regions["both"]["lung_volume_ml"] == pytest.approx(direct.lung_volume_ml, rel=1e-9)
    # ... and near the truth on this coarse phantom (2.8 mm pixels, 10 mm slices; accuracy targets are
    # checked on finer phantoms in test_pipeline_evidence).
    assert abs(regions["both"]["poi"] - phantom.truth.poi) < 0.03
    assert data["pipeline_version"]
    assert data["models"]
    assert set(data["timings"]) >= {"lungs", "infection"}
    assert data["opacities"]
    assert {"volume_ml", "longest_diameter_mm", "zone", "kind"} <= set(data["opacities"][0])

    uids = load_volume(folder).slice_uids
    assert set(data["slices_by_sop_instance_uid"]) == set(uids)
    infected = sum(v["infection_area_mm2"] for v in data["slices_by_sop_instance_uid"].values())
    assert infected == pytest.approx(sum(s["infection_area_mm2"] for s in data["slices"]))

    # --out: label maps on the input's grid, the same voxels the measurements counted.
    lungs = nib.load(tmp_path / "labels" / "lungs.nii.gz")
    infection = nib.load(tmp_path / "labels" / "infection.nii.gz")
    assert lungs.shape == infection.shape
    assert sorted(lungs.shape) == sorted(phantom.volume.shape)
    assert set(np.unique(np.asarray(lungs.dataobj))) == {0, 1, 2}
    voxel_ml = float(np.prod(lungs.header.get_zooms())) / 1000
    lung_ml = float((np.asarray(lungs.dataobj) > 0).sum()) * voxel_ml
    assert lung_ml == pytest.approx(regions["both"]["lung_volume_ml"], rel=1e-6)

    # The slice classifier's read-outs and its heat map, zero outside the lungs, with the result's score.
    corona = data["corona"]
    assert corona["slices_with_lung"] == sum(1 for s in data["slices"] if s["lung_area_mm2"] > 0)
    assert corona["positive_ratio"] == pytest.approx(corona["positive_slices"] / corona["slices_with_lung"])
    heat = np.asarray(nib.load(tmp_path / "labels" / "heatmap.nii.gz").dataobj).astype(float) / 255
    assert not heat[np.asarray(lungs.dataobj) == 0].any()
    assert heat.sum() * voxel_ml == pytest.approx(corona["corona_score_ml"], rel=0.01, abs=0.05)


def test_summary_and_a_clear_refusal_for_a_scan_without_lungs(tmp_path):
    folder = tmp_path / "nolungs"
    write_dicom_series(no_lung_volume(), folder, patient_id="CLI-2")
    with pytest.raises(CommandError, match="no lungs"):
        call_command("analyse", str(folder), stdout=io.StringIO(), stderr=io.StringIO())
    with pytest.raises(CommandError, match="does not exist"):
        call_command("analyse", str(tmp_path / "missing"), stdout=io.StringIO())

    ok = tmp_path / "phantom"
    write_dicom_series(small_phantom().volume, ok, patient_id="CLI-3")
    out = io.StringIO()
    call_command("analyse", str(ok), stdout=out, stderr=io.StringIO())
    assert "POI" in out.getvalue()
    assert "CT severity score" in out.getvalue()
