"""Cohorts on the Django side: members picked by identifier, clinical severity labels (form or CSV), CSV export.

Callers pass a cohort or team already scoped to the user (see `frontend.cohort_queries`); every lookup here
stays inside that team. Bad input is reported row by row and nothing that matched is lost.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date

from django.db import transaction

from patients.models import Cohort, Patient, Study, Team

from .choices import SeverityLabel
from .models import ClinicalSeverity
from .severity import Scan

# Header cells that name the identifier column of a pasted list or CSV (not an identifier themselves).
IDENTIFIER_HEADERS = {"identifier", "patient", "patient_id", "patientid", "patient identifier"}
LABEL_SPELLINGS: dict[str, str] = {
    "severe": SeverityLabel.SEVERE,
    "non-severe": SeverityLabel.NON_SEVERE,
    "non_severe": SeverityLabel.NON_SEVERE,
    "non severe": SeverityLabel.NON_SEVERE,
    "nonsevere": SeverityLabel.NON_SEVERE,
    "unknown": SeverityLabel.UNKNOWN,
    "": SeverityLabel.UNKNOWN,
}


def parse_identifiers(text: str, *, first_column: bool = False) -> list[str]:
    """Identifiers from a pasted list (one per line or separated by commas, semicolons or tabs) or, with
    `first_column`, from a CSV file's first column (its other columns are ignored). Header cells are skipped."""
    found: list[str] = []
    for line in text.splitlines():
        cells = re.split(r"[,;\t]", line)
        for cell in cells[:1] if first_column else cells:
            cell = cell.strip().strip('"').strip()
            if cell and cell.lower() not in IDENTIFIER_HEADERS and cell not in found:
                found.append(cell)
    return found


def resolve_identifiers(team: Team, identifiers: Iterable[str]) -> tuple[list[Patient], list[tuple[str, str]]]:
    """(patients found in the team, [(identifier, reason)] for those not found)."""
    wanted = list(identifiers)
    known = {p.identifier: p for p in Patient.objects.for_team(team).filter(identifier__in=wanted)}
    found = [known[i] for i in wanted if i in known]
    missing = [(i, f"no patient with this identifier in {team.name}") for i in wanted if i not in known]
    return found, missing


def patients_matching(team: Team, contains: str) -> list[Patient]:
    """The team's patients whose identifier contains `contains` (empty: none)."""
    contains = contains.strip()
    if not contains:
        return []
    return list(Patient.objects.for_team(team).filter(identifier__icontains=contains))


def create_cohort(team: Team, name: str, description: str, patients: Iterable[Patient]) -> Cohort:
    """A new cohort of the team's patients (patients of other teams are refused)."""
    members = {p.pk: p for p in patients}
    if any(p.team_id != team.pk for p in members.values()):
        raise ValueError("a cohort holds only its own team's patients")
    with transaction.atomic():
        cohort = Cohort.objects.create(team=team, name=name, description=description)
        cohort.patients.add(*members.values())
    return cohort


def add_members(cohort: Cohort, text: str) -> int:
    """Add the listed identifiers' patients (the cohort's team only); returns how many were new.

    ValueError naming every identifier not found, and nothing is added, when any is unknown.
    """
    identifiers = parse_identifiers(text)
    if not identifiers:
        raise ValueError("list at least one patient identifier")
    found, missing = resolve_identifiers(cohort.team, identifiers)
    if missing:
        raise ValueError("; ".join(f"{identifier}: {reason}" for identifier, reason in missing))
    present = set(cohort.patients.values_list("pk", flat=True))
    new = [p for p in found if p.pk not in present]
    cohort.patients.add(*new)
    return len(new)


def record_labels(cohort: Cohort, user, labels: Mapping[int, str]) -> int:
    """Store {study id: label} for studies of the cohort's patients; returns how many labels changed.

    ValueError (nothing stored) when a label is not a SeverityLabel or a study is not in the cohort.
    """
    bad = sorted({label for label in labels.values() if label not in SeverityLabel.values})
    if bad:
        raise ValueError(f"unknown severity label(s): {', '.join(bad)}; use severe, non_severe or unknown")
    members = set(
        Study.objects.filter(patient__cohorts=cohort, patient__team_id=cohort.team_id, pk__in=list(labels)).values_list(
            "pk", flat=True
        )
    )
    outside = sorted(set(labels) - members)
    if outside:
        raise ValueError(f"studies {', '.join(map(str, outside))} are not in this cohort")
    current = dict(ClinicalSeverity.objects.filter(study_id__in=list(labels)).values_list("study_id", "label"))
    changed = 0
    with transaction.atomic():
        for study_id, label in labels.items():
            # A study without a row reads as unknown: saving "unknown" for it changes nothing.
            if current.get(study_id, SeverityLabel.UNKNOWN) == label:
                continue
            ClinicalSeverity.objects.update_or_create(study_id=study_id, defaults={"label": label, "recorded_by": user})
            changed += 1
    return changed


@dataclass
class ImportReport:
    """What a severity CSV import did: rows stored and rows left out with the reason (line numbers from 1)."""

    stored: int = 0
    unchanged: int = 0
    unmatched: list[tuple[int, str, str]] = field(default_factory=list)  # (line, row as read, reason)


def _column(header: list[str], *names: str) -> int | None:
    for index, cell in enumerate(header):
        if cell.strip().lower().replace(" ", "_") in names:
            return index
    return None


def import_labels(cohort: Cohort, user, text: str) -> ImportReport:
    """Clinical severity from CSV: a header with `patient` (or `identifier`), `accession` and/or `study_date`
    (YYYY-MM-DD) and `severity`; each row names one study of a cohort member. Unmatched rows are reported."""
    report = ImportReport()
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        report.unmatched.append((1, "", "the file is empty"))
        return report
    header = rows[0]
    patient_col = _column(header, "patient", "identifier", "patient_id", "patient_identifier")
    accession_col = _column(header, "accession", "accession_number")
    date_col = _column(header, "study_date", "date")
    severity_col = _column(header, "severity", "label", "clinical_severity")
    if patient_col is None or severity_col is None or (accession_col is None and date_col is None):
        report.unmatched.append(
            (1, ",".join(header), "the header needs patient, severity and accession or study_date columns")
        )
        return report
    studies = list(
        Study.objects.filter(patient__cohorts=cohort, patient__team_id=cohort.team_id).select_related("patient")
    )
    labels: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        shown = ",".join(row)
        if not any(cell.strip() for cell in row):
            continue

        def cell(col: int | None, row: list[str] = row) -> str:
            return row[col].strip() if col is not None and col < len(row) else ""

        label = LABEL_SPELLINGS.get(cell(severity_col).lower())
        if label is None:
            report.unmatched.append(
                (line, shown, f"severity {cell(severity_col)!r} is not severe, non-severe or unknown")
            )
            continue
        identifier, accession, when = cell(patient_col), cell(accession_col), cell(date_col)
        candidates = [s for s in studies if s.patient.identifier == identifier]
        if not candidates:
            report.unmatched.append((line, shown, f"patient {identifier!r} is not in this cohort"))
            continue
        if accession:
            candidates = [s for s in candidates if s.accession_number == accession]
            reason = f"patient {identifier} has no study with accession number {accession}"
        elif when:
            try:
                day = date.fromisoformat(when)
            except ValueError:
                report.unmatched.append((line, shown, f"study date {when!r} is not a date like 2026-03-01"))
                continue
            candidates = [s for s in candidates if s.study_date == day]
            reason = f"patient {identifier} has no study on {when}"
        else:
            report.unmatched.append((line, shown, "give the accession number or the study date"))
            continue
        if len(candidates) != 1:
            many = f"{len(candidates)} studies match; give the accession number"
            report.unmatched.append((line, shown, reason if not candidates else many))
            continue
        labels[candidates[0].pk] = label
    if labels:
        report.stored = record_labels(cohort, user, labels)
        report.unchanged = len(labels) - report.stored
    return report


EXPORT_COLUMNS = [
    "patient",
    "study_date",
    "accession_number",
    "study_instance_uid",
    "series",
    "slice_thickness_mm",
    "pipeline_version",
    "clinical_severity",
    "poi",
    "ihu",
    "ct_severity_score",
    "corona_score_ml",
    "lung_volume_ml",
    "infection_volume_ml",
    "ggo_volume_ml",
    "consolidation_volume_ml",
    "positive_ratio",
]


def _safe(value: object) -> object:
    # A cell starting with = + - @ is run as a formula by spreadsheets; identifiers come from DICOM headers.
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return "" if value is None else value


def export_rows(scans: Iterable[Scan], *, pseudonym_key: str | None = None) -> Iterable[list[object]]:
    """The export's header, then one row per study (blank bio-markers where the study has no analysis).

    With `pseudonym_key` the rows are de-identified: the patient identifier becomes a stable pseudonym, the
    accession number and study UID are left out, and the study date becomes the day since the patient's
    first study in the export (intervals are kept, the calendar date is not).
    """
    from patients.deidentify import pseudonym

    scans = list(scans)
    first_dates: dict[int, object] = {}
    for scan in scans:
        day = scan.study.study_date
        if day is not None and (scan.patient.pk not in first_dates or day < first_dates[scan.patient.pk]):
            first_dates[scan.patient.pk] = day
    yield EXPORT_COLUMNS
    for scan in scans:
        run = scan.run
        series = run.series if run is not None else None
        day = scan.study.study_date
        if pseudonym_key is None:
            identity = [
                _safe(scan.patient.identifier),
                day.isoformat() if day else "",
                _safe(scan.study.accession_number),
                scan.study.study_instance_uid,
            ]
        else:
            since_first = (day - first_dates[scan.patient.pk]).days if day else ""
            identity = [pseudonym(pseudonym_key, scan.patient.identifier), f"day {since_first}" if day else "", "", ""]
        yield [
            *identity,
            _safe(series.description) if series else "",
            _safe(series.slice_thickness) if series else "",
            run.pipeline_version if run else "",
            scan.label,
            *[_safe(getattr(run, name, None)) if run else "" for name in EXPORT_COLUMNS[EXPORT_COLUMNS.index("poi") :]],
        ]
