"""End to end: a phantom patient whose lesions grow then shrink, analysed by the real pipeline, three
report rows imported by CSV, and the agreement between the software and the reports."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from analysis import progression
from analysis.choices import RunStatus
from analysis.execute import execute_run
from analysis.models import AnalysisRun
from analysis.phantoms import make_phantom, patient_course
from analysis.pipeline.volume import write_dicom_series
from analysis.runs import queue_analysis
from patients.ingest import ingest_paths
from patients.models import Patient, Series
from patients.report_import import import_reports

FIRST_SCAN = date(2026, 3, 2)
SEED = 11


@pytest.fixture
def course_series(team_a, tmp_path):
    """Four weekly scans of PH-COURSE (the lesions grow to the second scan, then resolve), analysed."""
    for number, spec in enumerate(patient_course(SEED, 4)):
        phantom = make_phantom(spec, slice_thickness_mm=10.0, pixel_spacing_mm=2.8, matrix=128)
        folder = tmp_path / f"scan-{number + 1}"
        write_dicom_series(
            phantom.volume,
            folder,
            patient_id="PH-COURSE",
            study_date=FIRST_SCAN + timedelta(days=7 * number),
            accession_number=f"PHC-{number + 1}",
            series_description="Chest 10 mm",
        )
        upload = ingest_paths(team_a, [folder])
        assert upload.refused_count == 0, upload.report["refused"]
        series = Series.objects.get(pk=upload.report["series"][0]["id"])
        execute_run(queue_analysis(series).pk)
    runs = AnalysisRun.objects.filter(series__study__patient__identifier="PH-COURSE")
    assert list(runs.values_list("status", flat=True)) == [RunStatus.SUCCEEDED] * 4
    return Patient.objects.get(identifier="PH-COURSE")


REPORTS = (
    "patient_id,accession,study_date,report\n"
    "PH-COURSE,PHC-2,,New ground-glass opacities; the known lesions have enlarged.\n"
    "PH-COURSE,,16.03.2026,Lesions largely absorbed. No new lesions.\n"
    "PH-COURSE,,2026-03-23,Residual opacities; no significant change.\n"
)


def test_lesions_that_grow_then_shrink_agree_with_three_imported_reports(course_series, team_a, clinician):
    outcome = import_reports(team_a, REPORTS.encode(), user=clinician)
    assert outcome.counts["saved"] == 3

    items = progression.changes(Patient.objects.filter(pk=course_series.pk))
    assert [c.report_label for c in items] == ["progression", "regression", "stable"]
    # POI rises by about 3 pp, falls by about 3 pp, then moves less than the 1 pp tolerance.
    assert [c.poi_label for c in items] == ["increase", "decrease", "stable"]
    poi, ihu, corona = progression.agreements(items)
    assert poi.table.as_dict() == {
        "progression": {"increase": 1, "decrease": 0, "stable": 0},
        "regression": {"increase": 0, "decrease": 1, "stable": 0},
        "stable": {"increase": 0, "decrease": 0, "stable": 1},
        "partial": {"increase": 0, "decrease": 0, "stable": 0},
    }
    assert (poi.binary.kappa, poi.binary.n, poi.three_class.kappa, poi.three_class.n) == (1.0, 2, 1.0, 3)
    # iHU follows the growth and the first regression, but on the last, nearly resolved scan the few
    # remaining (mostly false-positive) voxels are denser than before: the software says increase.
    assert ihu.table.as_dict() == {
        "progression": {"increase": 1, "decrease": 0, "stable": 0},
        "regression": {"increase": 0, "decrease": 1, "stable": 0},
        "stable": {"increase": 1, "decrease": 0, "stable": 0},
        "partial": {"increase": 0, "decrease": 0, "stable": 0},
    }
    assert (ihu.binary.kappa, ihu.binary.n) == (1.0, 2)
    assert ihu.three_class.kappa == pytest.approx(0.5)  # po = 2/3, pe = 1/3
    assert ihu.three_class.n == 3
    # The corona score follows the lesions too. On the last pair the phantom's true infection falls from
    # 48 to 1 mL: POI moves by under its 1-point tolerance (stable, as the report says), while the corona
    # score, whose slab weights now read the lesion areas, falls by 43 % (818 -> 468 mL): decrease.
    assert [c.corona_label for c in items] == ["increase", "decrease", "decrease"]
    assert (corona.binary.kappa, corona.binary.n, corona.three_class.n) == (1.0, 2, 3)
    assert corona.three_class.kappa == pytest.approx(0.5)  # po = 2/3, pe = 1/3
