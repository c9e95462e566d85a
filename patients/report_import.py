"""Importing radiology reports from a CSV file: parse, match each row to a study, preview, then save.

`preview` reads the file and says, row by row, which study it matches, what label the team's lexicon
reads from it, and whether it is new, already stored, unmatched (with the reason) or unreadable.
`import_reports` does the same and stores the new rows in one transaction. Nothing is dropped
silently: every non-blank row of the file comes back with its status. Matching uses a fixed number
of queries however long the file is.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field, replace

from django.db import IntegrityError, transaction

from . import reports
from .choices import ImportRowStatus, ReportSource
from .models import Patient, RadiologyReport, Study, Team
from .radiology import LexiconCache, build_report, content_hash, save_report
from .report_csv import CsvError, CsvRow, ParsedCsv, parse

__all__ = ["CsvError", "ImportOutcome", "ImportRow", "import_reports", "preview"]


@dataclass(frozen=True)
class ImportRow:
    row: CsvRow
    status: str
    reason: str = ""
    study: Study | None = None
    extraction: reports.Extraction | None = None
    report_id: int | None = None


@dataclass
class ImportOutcome:
    parsed: ParsedCsv
    rows: list[ImportRow]
    saved: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.counts = {status: sum(r.status == status for r in self.rows) for status in ImportRowStatus.values}


def _dates(studies: list[Study]) -> str:
    shown = sorted({s.study_date.isoformat() for s in studies if s.study_date})
    return ", ".join(shown) if shown else "none dated"


def _match_study(row: CsvRow, patient: Patient, studies: list[Study]) -> tuple[Study | None, str]:
    """The row's study among the patient's: by accession number, else by study date; else the reason."""
    reasons = []
    if row.accession:
        by_accession = [s for s in studies if s.accession_number and s.accession_number == row.accession]
        if len(by_accession) == 1:
            return by_accession[0], ""
        if len(by_accession) > 1:
            return None, f"{len(by_accession)} studies of {patient.identifier} have accession {row.accession}"
        reasons.append(f"no study of {patient.identifier} has accession number {row.accession}")
    if row.study_date is not None:
        on_date = [s for s in studies if s.study_date == row.study_date]
        if len(on_date) == 1:
            return on_date[0], ""
        if len(on_date) > 1:
            return None, (
                f"{patient.identifier} has {len(on_date)} studies on {row.study_date.isoformat()}; "
                "give the accession number"
            )
        reasons.append(
            f"{patient.identifier} has no study on {row.study_date.isoformat()} (study dates: {_dates(studies)})"
        )
    return None, "; ".join(reasons)


def _rows(team: Team, parsed: ParsedCsv, language: str) -> list[ImportRow]:
    identifiers = {r.patient for r in parsed.rows if r.patient}
    team_patients = Patient.objects.filter(team=team)
    exact = {p.identifier: p for p in team_patients.filter(identifier__in=identifiers)}
    folded: dict[str, list[Patient]] = defaultdict(list)
    unknown = {i for i in identifiers if i not in exact}
    if unknown:  # identifiers differing only in case ("a-0001" for "A-0001") still match when unambiguous
        lowered = {i.lower() for i in unknown}
        for patient in team_patients.only("id", "identifier", "team_id"):
            if patient.identifier.lower() in lowered:
                folded[patient.identifier.lower()].append(patient)
    patients = dict(exact)
    for identifier in unknown:
        candidates = folded.get(identifier.lower(), [])
        if len(candidates) == 1:
            patients[identifier] = candidates[0]
    studies: dict[int, list[Study]] = defaultdict(list)
    for study in Study.objects.filter(patient__in=list(patients.values())).select_related("patient__team"):
        studies[study.patient_id].append(study)
    stored = set(
        RadiologyReport.objects.filter(study__patient__in=list(patients.values())).values_list(
            "study_id", "content_hash"
        )
    )
    lexicon = LexiconCache().get(team, language)
    seen: dict[tuple[int, str], int] = {}
    result = []
    for row in parsed.rows:
        if row.problem:
            result.append(ImportRow(row, ImportRowStatus.INVALID, row.problem))
            continue
        patient = patients.get(row.patient)
        if patient is None:
            reason = f"no patient {row.patient!r} in {team.name}"
            result.append(ImportRow(row, ImportRowStatus.UNMATCHED, reason))
            continue
        study, reason = _match_study(row, patient, studies[patient.pk])
        if study is None:
            result.append(ImportRow(row, ImportRowStatus.UNMATCHED, reason))
            continue
        extraction = reports.extract(row.text, lexicon)
        key = (study.pk, content_hash(row.text))
        if key in stored:
            result.append(ImportRow(row, ImportRowStatus.DUPLICATE, "this text is already stored", study, extraction))
        elif key in seen:
            reason = f"same text as line {seen[key]}"
            result.append(ImportRow(row, ImportRowStatus.DUPLICATE, reason, study, extraction))
        else:
            seen[key] = row.line
            result.append(ImportRow(row, ImportRowStatus.NEW, "", study, extraction))
    return result


def preview(team: Team, data: bytes, language: str = reports.DEFAULT_LANGUAGE) -> ImportOutcome:
    """What importing this file into the team would do; raises CsvError for an unreadable file."""
    parsed = parse(data)
    return ImportOutcome(parsed, _rows(team, parsed, language))


def import_reports(
    team: Team,
    data: bytes,
    *,
    user=None,
    source: str = ReportSource.CSV,
    language: str = reports.DEFAULT_LANGUAGE,
) -> ImportOutcome:
    """Store the file's new reports (the caller has checked the user may write to the team).

    Re-importing a file stores nothing twice: rows whose text is already stored for their study come
    back as duplicates.
    """
    parsed = parse(data)
    lexicon = LexiconCache().get(team, language)
    with transaction.atomic():
        rows = _rows(team, parsed, language)
        new = [i for i, item in enumerate(rows) if item.status == ImportRowStatus.NEW]
        built = [
            build_report(rows[i].study, rows[i].row.text, lexicon, source=source, user=user, language=language)
            for i in new
        ]
        try:
            with transaction.atomic():
                RadiologyReport.objects.bulk_create(built, batch_size=500)
            saved = [(report, True) for report in built]
        except IntegrityError:
            # Another import stored some of these texts meanwhile: store them one by one instead.
            saved = []
            for i in new:
                one = save_report(rows[i].study, rows[i].row.text, source=source, user=user, language=language)
                saved.append((one.report, one.created))
        for i, (report, created) in zip(new, saved, strict=True):
            status = ImportRowStatus.SAVED if created else ImportRowStatus.DUPLICATE
            rows[i] = replace(rows[i], status=status, report_id=report.pk)
    return ImportOutcome(parsed, rows, saved=True)
