"""Radiology reports on the database side: a team's lexicon, storing a report with its extracted label,
and re-reading a team's reports when its lexicon changes. The text analysis is `patients.reports`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

from django.db import IntegrityError, transaction

from . import reports
from .choices import PhraseLabel, ReportSource
from .models import RadiologyReport, ReportPhrase, Study, Team

LANGUAGE_MAX = 8


def content_hash(text: str) -> str:
    """SHA-256 of the report text with its white space collapsed (re-imports with other line ends match)."""
    return hashlib.sha256(" ".join(text.split()).encode("utf-8")).hexdigest()


def team_lexicon(team: Team, language: str = reports.DEFAULT_LANGUAGE) -> reports.Lexicon:
    """The built-in phrases of `language` with the team's own phrases of that language on top."""
    entries = ReportPhrase.objects.filter(team=team, language=language).values_list("phrase", "label")
    return reports.lexicon(language, list(entries))


class LexiconCache:
    """Team lexicons built once per import or re-extraction, not once per report."""

    def __init__(self) -> None:
        self._cache: dict[tuple[int, str], reports.Lexicon] = {}

    def get(self, team: Team, language: str) -> reports.Lexicon:
        key = (team.pk, language)
        if key not in self._cache:
            self._cache[key] = team_lexicon(team, language)
        return self._cache[key]


def apply_extraction(report: RadiologyReport, extraction: reports.Extraction) -> None:
    report.label = extraction.label
    report.phrase = extraction.phrase[:200]
    report.span_start = extraction.start
    report.span_end = extraction.end


@dataclass(frozen=True)
class SavedReport:
    report: RadiologyReport
    created: bool  # False: the same text was already stored for this study


def build_report(
    study: Study,
    text: str,
    lexicon: reports.Lexicon,
    *,
    source: str = ReportSource.MANUAL,
    user=None,
    report_date: date | None = None,
    language: str = reports.DEFAULT_LANGUAGE,
) -> RadiologyReport:
    """An unsaved report of a study with its text hashed and its label read with `lexicon`."""
    text = text.strip()
    if not text:
        raise ValueError("the report text is empty")
    report = RadiologyReport(
        study=study,
        text=text,
        language=language,
        report_date=report_date,
        source=source,
        created_by=user if user is not None and user.is_authenticated else None,
        content_hash=content_hash(text),
    )
    apply_extraction(report, reports.extract(text, lexicon))
    return report


def save_report(
    study: Study,
    text: str,
    *,
    source: str = ReportSource.MANUAL,
    user=None,
    report_date: date | None = None,
    language: str = reports.DEFAULT_LANGUAGE,
    lexicons: LexiconCache | None = None,
) -> SavedReport:
    """Store a report of a study (the caller has checked the user may write to its team) with its label.

    The same text stored again for the same study returns the existing report, created=False.
    """
    lexicon = (lexicons or LexiconCache()).get(study.patient.team, language)
    report = build_report(study, text, lexicon, source=source, user=user, report_date=report_date, language=language)
    existing = RadiologyReport.objects.filter(study=study, content_hash=report.content_hash).first()
    if existing is not None:
        return SavedReport(existing, created=False)
    try:
        with transaction.atomic():
            report.save()
    except IntegrityError:  # the same text saved by a concurrent request
        return SavedReport(RadiologyReport.objects.get(study=study, content_hash=report.content_hash), created=False)
    return SavedReport(report, created=True)


def reextract_team_reports(team: Team) -> int:
    """Read every report of the team again with its current lexicon; returns how many changed label or span."""
    lexicons = LexiconCache()
    changed = []
    for report in RadiologyReport.objects.filter(study__patient__team=team).only(
        "id", "text", "language", "label", "phrase", "span_start", "span_end"
    ):
        before = (report.label, report.phrase, report.span_start, report.span_end)
        apply_extraction(report, reports.extract(report.text, lexicons.get(team, report.language)))
        if (report.label, report.phrase, report.span_start, report.span_end) != before:
            changed.append(report)
    RadiologyReport.objects.bulk_update(changed, ["label", "phrase", "span_start", "span_end"], batch_size=500)
    return len(changed)


class LexiconError(ValueError):
    """A lexicon entry that cannot be stored, with the reason."""


def add_phrase(
    team: Team, phrase: str, label: str, language: str = reports.DEFAULT_LANGUAGE, user=None
) -> ReportPhrase:
    """Add (or relabel) a phrase of the team's lexicon and re-read the team's reports."""
    text = reports.normalise_phrase(phrase)
    language = (language or "").strip().lower()
    if not text:
        raise LexiconError("the phrase is empty")
    if not language or len(language) > LANGUAGE_MAX or not language.replace("-", "").isalpha():
        raise LexiconError(f"the language must be a short code such as 'en' or 'de', got {language!r}")
    if label not in PhraseLabel.values:
        raise LexiconError(f"unknown label {label!r}; use one of {', '.join(PhraseLabel.values)}")
    if len(text) > 200:
        raise LexiconError("the phrase is longer than 200 characters")
    with transaction.atomic():
        entry, _ = ReportPhrase.objects.update_or_create(
            team=team, language=language, phrase=text, defaults={"label": label, "created_by": user}
        )
        reextract_team_reports(team)
    return entry


def remove_phrase(entry: ReportPhrase) -> None:
    """Remove a team phrase (a built-in one it overrode applies again) and re-read the team's reports."""
    with transaction.atomic():
        team = entry.team
        entry.delete()
        reextract_team_reports(team)


def lexicon_rows(team: Team, language: str = reports.DEFAULT_LANGUAGE) -> list[dict]:
    """Every phrase in force for the team and language, built-in and own, sorted by label then phrase."""
    own = {p.phrase: p for p in ReportPhrase.objects.filter(team=team, language=language)}
    rows = []
    for phrase in team_lexicon(team, language).phrases:
        entry = own.get(phrase.text)
        rows.append({"phrase": phrase.text, "label": phrase.label, "entry": entry, "builtin": entry is None})
    order = {label: i for i, label in enumerate(PhraseLabel.values)}
    return sorted(rows, key=lambda r: (order.get(r["label"], 99), r["phrase"]))


def team_languages(team: Team) -> list[str]:
    """Languages the team has phrases or reports in."""
    phrases = set(ReportPhrase.objects.filter(team=team).values_list("language", flat=True))
    used = set(RadiologyReport.objects.filter(study__patient__team=team).values_list("language", flat=True))
    return sorted(phrases | used)
