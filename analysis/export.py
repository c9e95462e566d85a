"""Exports of one analysis for other systems: DICOM SEG, DICOM SR (TID 1500), CSV and NIfTI label maps.

Pure functions: label maps, the volume's geometry and the source images' headers in, datasets or
text out; no Django, so they are tested on their own and the web side (`analysis.run_exports`)
only gathers the inputs.

Label maps live on the canonical (z, y, x) grid of `analysis.pipeline.volume`. The SEG is written on
the *stored* images: each canonical slice z goes to the source image whose SOPInstanceUID the loader
recorded for it (`CTVolume.slice_uids`) and is turned back into that image's rows and columns
(`CTVolume.to_stored_plane`), so a viewer overlays every frame on exactly the slice it was computed
from, whatever the order or orientation of the stored series. Empty frames are kept: one frame per
source image and segment, so no viewer can slide an overlay onto a neighbouring slice.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from analysis.pipeline.infection import CONSOLIDATION, GGO
from analysis.pipeline.volume import CTVolume

MANUFACTURER = "covidsite"
MODEL_NAME = "covidsite chest CT infection quantification"
SEG_SERIES_NUMBER = 901
SR_SERIES_NUMBER = 902
# Concepts no public terminology names precisely enough (POI, iHU, per-kind infection volumes) are coded
# in this private scheme; its meanings say what they are, so a reader needs no look-up table.
PRIVATE_SCHEME = "99COVIDSITE"

LUNGS, GGO_SEGMENT, CONSOLIDATION_SEGMENT = 1, 2, 3


class ExportError(ValueError):
    """The run cannot be exported (missing label maps, images that do not match them); the message says why."""


def _private(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator=PRIVATE_SCHEME, meaning=meaning)


def _ucum(value: str, meaning: str) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=value, scheme_designator="UCUM", meaning=meaning)


# Segment number -> (label, category, property type).
SEGMENTS: dict[int, tuple[str, hd.sr.CodedConcept | object, hd.sr.CodedConcept | object]] = {
    LUNGS: ("Lungs", codes.SCT.AnatomicalStructure, codes.SCT.Lung),
    GGO_SEGMENT: (
        "Ground-glass opacity",
        codes.SCT.MorphologicallyAbnormalStructure,
        _private("GGO", "Ground-glass opacity"),
    ),
    CONSOLIDATION_SEGMENT: (
        "Consolidation",
        codes.SCT.MorphologicallyAbnormalStructure,
        _private("CONSOLIDATION", "Consolidation"),
    ),
}

# SR measurement key -> (concept, unit). The keys are AnalysisRun field names.
MEASUREMENTS: dict[str, tuple[hd.sr.CodedConcept, hd.sr.CodedConcept]] = {
    "lung_volume_ml": (_private("LUNGVOL", "Lung volume"), _ucum("ml", "milliliter")),
    "infection_volume_ml": (_private("INFVOL", "Infection volume"), _ucum("ml", "milliliter")),
    "ggo_volume_ml": (_private("GGOVOL", "Ground-glass opacity volume"), _ucum("ml", "milliliter")),
    "consolidation_volume_ml": (_private("CONSVOL", "Consolidation volume"), _ucum("ml", "milliliter")),
    "poi": (_private("POI", "Portion of infection (infection volume / lung volume)"), _ucum("1", "no units")),
    "ihu": (_private("IHU", "Mean attenuation of the infection"), _ucum("[hnsf'U]", "Hounsfield unit")),
    "ct_severity_score": (_private("CTSS", "CT severity score (0-30)"), _ucum("{score}", "score")),
}
CT_OF_CHEST = hd.sr.CodedConcept(value="169069000", scheme_designator="SCT", meaning="CT of chest")

CSV_COLUMNS = (
    "region",
    "lung_volume_ml",
    "infection_volume_ml",
    "ggo_volume_ml",
    "consolidation_volume_ml",
    "poi",
    "ihu",
    "severity_score",
)


@dataclass(frozen=True)
class Producer:
    """What made the results, written into every exported object."""

    pipeline_version: str
    run_id: int


# Type 2 attributes of the patient and study modules that SEG and SR must carry (empty when unknown);
# anonymised exports often drop them altogether.
EMPTY_WHEN_MISSING = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def completed_headers(sources: Sequence[Dataset], identity: Mapping[str, str] | None = None) -> list[Dataset]:
    """Copies of the source headers with what a derived object needs filled in; the stored files are not touched.

    `identity` gives values (e.g. the UIDs and patient identifier ingest filed the series under, which
    it derives when an export blanked them) used where a header lacks the attribute or leaves it empty.
    A missing FrameOfReferenceUID is derived from the series UID, so SEG frames can still be placed.
    """
    identity = dict(identity or {})
    completed = []
    for source in sources:
        ds = copy.deepcopy(source)
        for keyword, value in identity.items():
            if not str(ds.get(keyword, "") or "").strip():
                setattr(ds, keyword, value)
        for keyword in EMPTY_WHEN_MISSING:
            if keyword not in ds:
                setattr(ds, keyword, "")
        if not str(ds.get("FrameOfReferenceUID", "") or "").strip():
            ds.FrameOfReferenceUID = "2.25." + str(
                int(hashlib.sha256(str(ds.get("SeriesInstanceUID", "")).encode()).hexdigest()[:32], 16)
            )
        completed.append(ds)
    return completed


def ordered_sources(volume: CTVolume, sources: Sequence[Dataset]) -> list[Dataset]:
    """The source headers in canonical z order (index z is the image canonical slice z came from)."""
    if volume.slice_uids is None:
        raise ExportError("the volume does not record which stored image each slice came from")
    by_uid = {str(ds.SOPInstanceUID): ds for ds in sources}
    missing = [uid for uid in volume.slice_uids if uid not in by_uid]
    if missing:
        raise ExportError(f"{len(missing)} slice(s) of the analysed volume have no stored image (first: {missing[0]})")
    return [by_uid[uid] for uid in volume.slice_uids]


def stored_segments(volume: CTVolume, lungs: np.ndarray, infection: np.ndarray) -> np.ndarray:
    """Binary segments on the stored images: (slice in canonical z order, row, column, segment) booleans."""
    if lungs.shape != volume.shape or infection.shape != volume.shape:
        raise ExportError(
            f"label maps of shape {lungs.shape}/{infection.shape} do not match the volume of shape {volume.shape}"
        )
    canonical = (lungs > 0, infection == GGO, infection == CONSOLIDATION)
    first = volume.to_stored_plane(canonical[0][0])
    out = np.zeros((volume.shape[0], *first.shape, len(canonical)), dtype=bool)
    for z in range(volume.shape[0]):
        for s, mask in enumerate(canonical):
            out[z, :, :, s] = volume.to_stored_plane(mask[z])
    return out


def build_seg(
    volume: CTVolume,
    sources: Sequence[Dataset],
    lungs: np.ndarray,
    infection: np.ndarray,
    producer: Producer,
    identity: Mapping[str, str] | None = None,
) -> hd.seg.Segmentation:
    """A binary DICOM SEG of lungs, GGO and consolidation on the source images, every frame kept."""
    images = ordered_sources(volume, completed_headers(sources, identity))
    pixels = stored_segments(volume, lungs, infection)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="covidsite", version=producer.pipeline_version, family=codes.cid7162.ArtificialIntelligence
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label,
            segmented_property_category=category,
            segmented_property_type=kind,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=generate_uid(),
            tracking_id=f"run {producer.run_id} {label.lower()}",
        )
        for number, (label, category, kind) in SEGMENTS.items()
    ]
    return hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=MODEL_NAME,
        software_versions=producer.pipeline_version,
        device_serial_number=str(producer.run_id),
        series_description="covidsite lungs and infection",
        content_label="INFECTION",
        content_description=f"lungs, ground-glass opacity and consolidation of analysis {producer.run_id}",
        omit_empty_frames=False,
    )


def build_sr(
    sources: Sequence[Dataset],
    values: Mapping[str, float | int | None],
    producer: Producer,
    identity: Mapping[str, str] | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A TID 1500 measurement report of the whole-scan values (the keys of MEASUREMENTS; None is left out)."""
    if not sources:
        raise ExportError("a report needs the images it was measured on")
    sources = completed_headers(sources, identity)
    algorithm = hd.sr.AlgorithmIdentification(name="covidsite", version=producer.pipeline_version)
    measurements = [
        hd.sr.Measurement(name=concept, value=float(values[key]), unit=unit, algorithm_id=algorithm)
        for key, (concept, unit) in MEASUREMENTS.items()
        if values.get(key) is not None
    ]
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"analysis {producer.run_id}"),
        algorithm_id=algorithm,
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Lung)],
        measurements=measurements,
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name=MANUFACTURER, model_name=MODEL_NAME
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=CT_OF_CHEST,
        imaging_measurements=[group],
    )
    return hd.sr.Comprehensive3DSR(
        evidence=list(sources),
        content=report,
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="covidsite measurements",
    )


def read_sr_measurements(report: Dataset) -> dict[str, float]:
    """The values of a report written by `build_sr`, by MEASUREMENTS key (for checks and round trips)."""
    keys = {concept.value: key for key, (concept, _) in MEASUREMENTS.items()}
    found: dict[str, float] = {}

    def walk(items) -> None:
        for item in items:
            name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
            if (
                item.get("ValueType") == "NUM"
                and name is not None
                and name.CodingSchemeDesignator == PRIVATE_SCHEME
                and name.CodeValue in keys
            ):
                found[keys[name.CodeValue]] = float(item.MeasuredValueSequence[0].NumericValue)
            if "ContentSequence" in item:
                walk(item.ContentSequence)

    walk(report.ContentSequence)
    return found


def measurements_csv(regions: Sequence[Mapping[str, object]]) -> str:
    """One row per region (both lungs, each lung, six zones) with the CSV_COLUMNS, as text."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for region in regions:
        writer.writerow({key: "" if region.get(key) is None else region.get(key) for key in CSV_COLUMNS})
    return out.getvalue()
