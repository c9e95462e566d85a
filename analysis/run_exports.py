"""Exports of a stored analysis run: gathers the run's label maps, volume and source headers for `analysis.export`.

`export_run(run, kind)` returns the file's bytes, name and media type. The label maps are read back
on the grid the worker produced them on, by loading the series the way the worker did
(`analysis.execute.load_series_volume`), so the SEG's frame-to-image mapping is the analysis' own.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import pydicom
from django.conf import settings
from django.db import models

from patients.choices import SeriesSource

from . import export
from .choices import Region, RunStatus
from .execute import load_series_volume
from .models import AnalysisRun
from .pipeline.volume import CTVolume, VolumeError, write_label_nifti
from .storage import LabelMapError, load_label_map


class ExportKind(models.TextChoices):
    SEG = "seg", "DICOM SEG (lungs, GGO, consolidation)"
    SR = "sr", "DICOM SR measurement report"
    CSV = "csv", "CSV measurements"
    NIFTI_LUNGS = "nifti-lungs", "NIfTI lung label map"
    NIFTI_INFECTION = "nifti-infection", "NIfTI infection label map"


@dataclass(frozen=True)
class ExportFile:
    """One exported file, ready to send."""

    content: bytes
    filename: str
    content_type: str


def scoped_run(user, run_id: int) -> AnalysisRun | None:
    """The run if it belongs to one of `user`'s teams, else None."""
    return AnalysisRun.objects.for_user(user).select_related("series__study__patient").filter(pk=run_id).first()


def export_run(run: AnalysisRun, kind: str) -> ExportFile:
    """Build the `kind` export of a succeeded run. Raises export.ExportError with a readable reason."""
    if kind not in ExportKind.values:
        raise export.ExportError(f"unknown export {kind!r}; choose one of {', '.join(ExportKind.values)}")
    check_exportable(run)
    stem = f"analysis-{run.pk}"
    if kind == ExportKind.CSV:
        return ExportFile(export.measurements_csv(region_rows(run)).encode(), f"{stem}.csv", "text/csv")
    if kind == ExportKind.SR:
        return _dicom_file(sr_dataset(run), f"{stem}-sr.dcm")
    if kind == ExportKind.SEG:
        return _dicom_file(seg_dataset(run), f"{stem}-seg.dcm")
    volume = _volume(run)
    name = "lungs" if kind == ExportKind.NIFTI_LUNGS else "infection"
    labels = _label_maps(run)[0 if name == "lungs" else 1]
    with tempfile.TemporaryDirectory(dir=_scratch()) as folder:
        path = write_label_nifti(labels, volume, Path(folder) / f"{stem}-{name}.nii.gz")
        return ExportFile(path.read_bytes(), path.name, "application/gzip")


def check_exportable(run: AnalysisRun) -> None:
    """Raise export.ExportError unless the run has finished with results."""
    if run.status != RunStatus.SUCCEEDED:
        raise export.ExportError(
            f"analysis {run.pk} is {RunStatus(run.status).label.lower()}: only a finished analysis can be exported"
        )


def seg_dataset(run: AnalysisRun) -> pydicom.Dataset:
    """The DICOM SEG of a run's lungs, GGO and consolidation on its source images."""
    lungs, infection = _label_maps(run)
    return export.build_seg(_volume(run), source_headers(run), lungs, infection, _producer(run), identity(run))


def sr_dataset(run: AnalysisRun) -> pydicom.Dataset:
    """The TID 1500 measurement report of a run's whole-scan values."""
    values = {key: getattr(run, key) for key in export.MEASUREMENTS}
    return export.build_sr(source_headers(run), values, _producer(run), identity(run))


def _producer(run: AnalysisRun) -> export.Producer:
    return export.Producer(pipeline_version=run.pipeline_version, run_id=run.pk)


def region_rows(run: AnalysisRun) -> list[dict]:
    """The run's region measurements in the order of `Region` (both lungs first)."""
    order = {value: i for i, value in enumerate(Region.values)}
    rows = list(run.regions.values(*export.CSV_COLUMNS))
    if not rows:  # a run stored before regions existed: the whole-scan values are all there is
        rows = [
            {
                "region": Region.BOTH,
                **{key: getattr(run, key) for key in export.CSV_COLUMNS[1:-1]},
                "severity_score": run.ct_severity_score,
            }
        ]
    return sorted(rows, key=lambda row: order.get(row["region"], len(order)))


def identity(run: AnalysisRun) -> dict[str, str]:
    """The UIDs and patient identifier the series is filed under (ingest derives them when files lack them)."""
    series = run.series
    return {
        "PatientID": series.study.patient.identifier,
        "StudyInstanceUID": series.study.study_instance_uid,
        "SeriesInstanceUID": series.series_instance_uid,
    }


def source_headers(run: AnalysisRun) -> list[pydicom.Dataset]:
    """Headers (no pixels) of the series' stored images, in index order."""
    series = run.series
    if series.source == SeriesSource.NIFTI:
        raise export.ExportError(
            "this series was uploaded as NIfTI: there are no DICOM images to reference; export CSV or NIfTI instead"
        )
    root = Path(settings.MEDIA_ROOT)
    headers = []
    for relative in series.instances.order_by("index").values_list("file", flat=True):
        try:
            headers.append(pydicom.dcmread(root / relative, stop_before_pixels=True))
        except (OSError, pydicom.errors.InvalidDicomError) as exc:
            raise export.ExportError(f"the stored image {relative} cannot be read ({exc})") from exc
    if not headers:
        raise export.ExportError("the series has no stored images")
    return headers


def _volume(run: AnalysisRun) -> CTVolume:
    try:
        return load_series_volume(run.series)
    except VolumeError as exc:
        raise export.ExportError(f"the analysed images cannot be loaded: {exc}") from exc


def _label_maps(run: AnalysisRun):
    try:
        return load_label_map(run.lungs_file), load_label_map(run.infection_file)
    except LabelMapError as exc:
        raise export.ExportError(str(exc)) from exc


def _dicom_file(dataset: pydicom.Dataset, filename: str) -> ExportFile:
    out = BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return ExportFile(out.getvalue(), filename, "application/dicom")


def _scratch() -> Path:
    folder = Path(settings.MEDIA_ROOT) / "incoming"
    folder.mkdir(parents=True, exist_ok=True)
    return folder
