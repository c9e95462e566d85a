"""Builders for the clinical rows the page tests need: patients, studies, series and analysis runs.

They write rows directly (no ingest, no pipeline), so page tests stay fast and exact.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta

from analysis.choices import OpacityKind, Region, RunStatus
from analysis.models import AnalysisRun, Opacity, RegionMeasurement
from patients.choices import SeriesStatus, Sex
from patients.models import Patient, Series, Study, Team

_uid = itertools.count(1)


def make_patient(team: Team, identifier: str, *, sex: str = Sex.FEMALE, birth_year: int | None = 1961) -> Patient:
    return Patient.objects.create(team=team, identifier=identifier, sex=sex, birth_year=birth_year)


def make_study(
    patient: Patient, study_date: date | None, *, accession: str = "", description: str = "CT chest"
) -> Study:
    return Study.objects.create(
        patient=patient,
        study_instance_uid=f"1.2.826.0.1.{next(_uid)}",
        study_date=study_date,
        accession_number=accession,
        description=description,
    )


def make_series(
    study: Study,
    *,
    description: str = "Chest 5 mm",
    status: str = SeriesStatus.READY,
    status_message: str = "",
    slices: int = 60,
    thickness: float = 5.0,
) -> Series:
    return Series.objects.create(
        study=study,
        series_instance_uid=f"1.2.826.0.2.{next(_uid)}",
        description=description,
        series_number=2,
        rows=512,
        columns=512,
        slice_count=slices,
        pixel_spacing_row=0.742,
        pixel_spacing_col=0.742,
        slice_spacing=thickness,
        slice_thickness=thickness,
        orientation=[1, 0, 0, 0, 1, 0],
        origin=[-190.0, -190.0, -320.0],
        status=status,
        status_message=status_message,
    )


def make_run(
    series: Series,
    status: str = RunStatus.SUCCEEDED,
    *,
    poi: float = 0.125,
    ihu: float = -512.0,
    stage: str = "",
    progress: int = 100,
    error: str = "",
    version: str = "test-1",
) -> AnalysisRun:
    finished = datetime(2026, 3, 1, 10, 0, tzinfo=UTC) + timedelta(minutes=next(_uid))
    succeeded = status == RunStatus.SUCCEEDED
    return AnalysisRun.objects.create(
        series=series,
        pipeline_version=version,
        status=status,
        stage=stage,
        progress=progress,
        error=error,
        finished=finished if status in (RunStatus.SUCCEEDED, RunStatus.FAILED) else None,
        poi=poi if succeeded else None,
        ihu=ihu if succeeded else None,
        lung_volume_ml=4000.0 if succeeded else None,
        infection_volume_ml=4000.0 * poi if succeeded else None,
        ct_severity_score=9 if succeeded else None,
        models_used=[
            {"stage": "lungs", "name": "lungs-unet", "version": "1.0", "sha256": "ab" * 32, "kind": "network"},
            {"stage": "infection", "name": "hu-threshold", "version": "0.3", "sha256": "", "kind": "classical"},
        ]
        if succeeded
        else [],
        timings={"lungs": 3.25, "infection": 5.5} if succeeded else {},
        slice_metrics=slice_metrics(12) if succeeded else [],
    )


def slice_metrics(count: int) -> list[dict]:
    """Per-slice areas shaped like the pipeline's SliceResult: infection peaks in the middle slices."""
    rows = []
    for index in range(count):
        middle = 1 - abs(index - count / 2) / (count / 2)
        rows.append(
            {
                "index": index,
                "sop_instance_uid": None,
                "z_mm": -320.0 + 5 * index,
                "lung_area_mm2": 20000.0 * (0.3 + middle),
                "infection_area_mm2": 3000.0 * middle,
                "ggo_area_mm2": 2200.0 * middle,
                "consolidation_area_mm2": 800.0 * middle,
            }
        )
    return rows


def add_results(run: AnalysisRun) -> None:
    """Nine region measurements and two opacities with recognisable values."""
    for number, region in enumerate(Region.values):
        RegionMeasurement.objects.create(
            run=run,
            region=region,
            lung_volume_ml=1000.0 + number,
            infection_volume_ml=100.0 + number,
            ggo_volume_ml=80.0,
            consolidation_volume_ml=20.0 + number,
            poi=0.1 + number / 100,
            ihu=-600.0 + number,
            severity_score=number % 6,
        )
    Opacity.objects.create(
        run=run,
        index=1,
        kind=OpacityKind.CONSOLIDATION,
        volume_ml=12.34,
        longest_diameter_mm=41.5,
        longest_axial_diameter_mm=33.0,
        mean_hu=-150.0,
        centroid_voxel=[10, 200, 150],
        centroid_mm=[-40, 10, -250],
        slice_first=8,
        slice_last=14,
        zone=Region.RIGHT_LOWER,
    )
    Opacity.objects.create(
        run=run,
        index=2,
        kind=OpacityKind.GGO,
        volume_ml=3.21,
        longest_diameter_mm=18.0,
        longest_axial_diameter_mm=15.0,
        mean_hu=-620.0,
        centroid_voxel=[30, 210, 350],
        centroid_mm=[60, 20, -150],
        slice_first=29,
        slice_last=31,
        zone=Region.LEFT_UPPER,
    )
