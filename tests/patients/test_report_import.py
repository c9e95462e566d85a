"""Report CSV import: encodings, delimiters, header synonyms, matching rows to studies, duplicates, API."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from rest_framework.test import APIClient

from patients.choices import ImportRowStatus, ReportLabel, ReportSource
from patients.models import RadiologyReport
from patients.radiology import add_phrase, save_report
from patients.report_csv import CsvError, parse, parse_date
from patients.report_import import import_reports, preview
from tests.frontend.records import make_patient, make_study

CSV = (
    "patient_id,accession,study_date,report\n"
    "A-0001,ACC-2,,Lesions increased in extent.\n"
    'A-0001,,2026-01-24,"Lesions partially absorbed,\nno new lesions."\n'
    "A-0001,,01.02.2026,Opacities decreased.\n"
    "Z-9999,,2026-01-24,Stable.\n"
    "A-0001,,2026-03-01,Stable.\n"
    "A-0001,,31/02/2026,Stable.\n"
    "\n"
    "A-0001,ACC-1,,\n"
)


@pytest.fixture
def anna(team_a):
    patient = make_patient(team_a, "A-0001")
    studies = {
        "first": make_study(patient, date(2026, 1, 10), accession="ACC-1"),
        "second": make_study(patient, date(2026, 1, 17), accession="ACC-2"),
        "third": make_study(patient, date(2026, 1, 24), accession="ACC-3"),
        "fourth": make_study(patient, date(2026, 2, 1), accession=""),
    }
    return patient, studies


def test_parse_reads_header_synonyms_and_dates_and_keeps_row_problems():
    parsed = parse(CSV.encode())
    assert (parsed.encoding, parsed.delimiter) == ("utf-8", ",")
    assert parsed.columns == {
        "patient": ["patient_id"],
        "accession": ["accession"],
        "study_date": ["study_date"],
        "text": ["report"],
    }
    lines = [(r.line, r.problem) for r in parsed.rows]
    assert lines == [
        (2, ""),
        (3, ""),  # a quoted text over two lines is one row ...
        (5, ""),  # ... so the next row starts on line 5
        (6, ""),
        (7, ""),
        (8, "date '31/02/2026' not understood; write it as YYYY-MM-DD or DD.MM.YYYY"),
        (10, "the report text is empty"),
    ]
    assert parsed.rows[2].study_date == date(2026, 2, 1)


@pytest.mark.parametrize(
    ("data", "encoding", "delimiter"),
    [
        ("Patient;Date;Findings\nA-0001;24.01.2026;Läsionen rückläufig\n".encode("cp1252"), "cp1252", ";"),
        ("\ufeffidentifier\tdate\ttext\nA-0001\t2026-01-24\tStable\n".encode(), "utf-8-sig", "\t"),
        ("patient|date|impression\nA-0001|2026-01-24|Stable\n".encode("utf-16"), "utf-16", "|"),
    ],
)
def test_parse_detects_encoding_and_delimiter(data, encoding, delimiter):
    parsed = parse(data)
    assert (parsed.encoding, parsed.delimiter) == (encoding, delimiter)
    assert parsed.delimiter_name in ("semicolons", "tabs", "vertical bars")
    assert parsed.rows[0].patient == "A-0001"
    assert parsed.rows[0].study_date == date(2026, 1, 24)


def test_findings_and_impression_columns_are_joined():
    parsed = parse(b"patient,date,findings,impression\nA-0001,2026-01-24,GGO in both lungs.,Progression.\n")
    assert parsed.rows[0].text == "GGO in both lungs.\n\nProgression."


def test_a_file_without_the_needed_columns_names_them():
    with pytest.raises(CsvError) as info:
        parse(b"name,when,comment\nA,2026-01-01,x\n")
    message = str(info.value)
    assert "patient identifier (patient_id, patient, identifier)" in message
    assert "report text" in message
    assert "accession number or study date" in message
    assert "'name', 'when', 'comment'" in message


@pytest.mark.parametrize(
    ("data", "message"),
    [(b"", "the file is empty"), (b"patient,date,report\n", "no report rows"), (b"a\x00b", "not a text file")],
)
def test_unreadable_files_say_why(data, message):
    with pytest.raises(CsvError, match=message):
        parse(data)


def test_parse_date_formats():
    assert parse_date("2026-03-14") == parse_date("20260314") == parse_date("14.03.2026") == parse_date("14/03/2026")
    assert parse_date("2026-03-14 10:22") == date(2026, 3, 14)


def test_preview_matches_rows_and_lists_the_reasons_without_saving(anna, team_a):
    _patient, studies = anna
    outcome = preview(team_a, CSV.encode())
    got = [(r.row.line, r.status, r.study and r.study.pk, r.extraction and r.extraction.label) for r in outcome.rows]
    assert got == [
        (2, ImportRowStatus.NEW, studies["second"].pk, ReportLabel.PROGRESSION),
        (3, ImportRowStatus.NEW, studies["third"].pk, ReportLabel.PARTIAL),
        (5, ImportRowStatus.NEW, studies["fourth"].pk, ReportLabel.REGRESSION),
        (6, ImportRowStatus.UNMATCHED, None, None),
        (7, ImportRowStatus.UNMATCHED, None, None),
        (8, ImportRowStatus.INVALID, None, None),
        (10, ImportRowStatus.INVALID, None, None),
    ]
    reasons = [r.reason for r in outcome.rows]
    assert reasons[3] == "no patient 'Z-9999' in Team A"
    assert (
        reasons[4] == "A-0001 has no study on 2026-03-01 (study dates: 2026-01-10, 2026-01-17, 2026-01-24, 2026-02-01)"
    )
    assert outcome.counts == {"new": 3, "saved": 0, "duplicate": 0, "unmatched": 2, "invalid": 2}
    assert RadiologyReport.objects.count() == 0


def test_import_saves_new_rows_once_and_reimport_does_not_duplicate(anna, team_a, clinician):
    _patient, studies = anna
    first = import_reports(team_a, CSV.encode(), user=clinician)
    assert first.counts["saved"] == 3
    saved_ids = [r.report_id for r in first.rows if r.status == ImportRowStatus.SAVED]
    assert sorted(saved_ids) == sorted(RadiologyReport.objects.values_list("id", flat=True))
    report = RadiologyReport.objects.get(study=studies["third"])
    assert (report.label, report.phrase, report.source, report.created_by) == (
        ReportLabel.PARTIAL,
        "partially absorbed",
        ReportSource.CSV,
        clinician,
    )
    assert report.text[report.span_start : report.span_end] == "partially absorbed"
    # The same file again, with other line ends: nothing new, every matched row is a duplicate.
    again = import_reports(team_a, CSV.replace("\n", "\r\n").encode(), user=clinician)
    assert again.counts == {"new": 0, "saved": 0, "duplicate": 3, "unmatched": 2, "invalid": 2}
    assert RadiologyReport.objects.count() == 3


def test_the_same_text_twice_in_one_file_is_saved_once(anna, team_a):
    data = b"patient,accession,report\nA-0001,ACC-1,Stable.\nA-0001,ACC-1,Stable.\n"
    outcome = import_reports(team_a, data)
    assert [r.status for r in outcome.rows] == [ImportRowStatus.SAVED, ImportRowStatus.DUPLICATE]
    assert outcome.rows[1].reason == "same text as line 2"


def test_an_accession_of_no_study_falls_back_to_the_date_and_ambiguous_dates_are_refused(anna, team_a):
    patient, studies = anna
    make_study(patient, date(2026, 1, 24), accession="ACC-3b")  # a second study on the 24th
    data = b"patient,accession,date,report\nA-0001,NOPE,2026-01-17,Stable.\nA-0001,,2026-01-24,Stable.\n"
    rows = preview(team_a, data).rows
    assert (rows[0].status, rows[0].study) == (ImportRowStatus.NEW, studies["second"])
    assert rows[1].status == ImportRowStatus.UNMATCHED
    assert rows[1].reason == "A-0001 has 2 studies on 2026-01-24; give the accession number"


def test_another_teams_patients_are_not_matched(anna, team_b):
    rows = preview(team_b, b"patient,accession,report\nA-0001,ACC-1,Stable.\n").rows
    assert (rows[0].status, rows[0].reason) == (ImportRowStatus.UNMATCHED, "no patient 'A-0001' in Team B")


def test_changing_the_lexicon_reads_the_teams_reports_again(anna, team_a, team_admin):
    _patient, studies = anna
    report = save_report(studies["first"], "Lesions regrediert.").report
    assert report.label == ReportLabel.NONE
    add_phrase(team_a, "Regrediert", "regression", "en", user=team_admin)
    report.refresh_from_db()
    assert (report.label, report.phrase, report.span_start) == (ReportLabel.REGRESSION, "regrediert", 8)


# The API


@pytest.fixture
def api():
    return APIClient()


def _csv_file(content: bytes = CSV.encode()) -> SimpleUploadedFile:
    return SimpleUploadedFile("reports.csv", content, content_type="text/csv")


def test_api_import_dry_run_previews_then_imports(api, anna, clinician):
    api.force_authenticate(clinician)
    dry = api.post("/api/reports/import/", {"file": _csv_file(), "dry_run": "true"}, format="multipart")
    assert dry.status_code == 200
    assert dry.json()["counts"]["new"] == 3
    assert RadiologyReport.objects.count() == 0
    done = api.post("/api/reports/import/", {"file": _csv_file()}, format="multipart")
    assert done.status_code == 201
    body = done.json()
    assert body["counts"]["saved"] == 3
    unmatched = [r for r in body["rows"] if r["status"] == "unmatched"]
    assert [r["line"] for r in unmatched] == [6, 7]
    assert unmatched[0]["reason"] == "no patient 'Z-9999' in Team A"
    assert RadiologyReport.objects.count() == 3


def test_api_import_refuses_viewers_and_bad_files(api, anna, viewer, clinician):
    api.force_authenticate(viewer)
    assert api.post("/api/reports/import/", {"file": _csv_file()}, format="multipart").status_code == 403
    api.force_authenticate(clinician)
    bad = api.post("/api/reports/import/", {"file": _csv_file(b"a,b\n1,2\n")}, format="multipart")
    assert bad.status_code == 400
    assert "missing column(s)" in bad.json()["file"][0]


def test_api_reports_are_scoped_and_created_per_study(api, anna, clinician, viewer, outsider):
    _patient, studies = anna
    api.force_authenticate(clinician)
    created = api.post(
        "/api/reports/", {"study": studies["first"].pk, "text": "No new lesions; stable."}, format="json"
    )
    assert created.status_code == 201
    assert (created.json()["label"], created.json()["phrase"], created.json()["source"]) == ("stable", "stable", "api")
    again = api.post("/api/reports/", {"study": studies["first"].pk, "text": "No new lesions;  stable."}, format="json")
    assert again.status_code == 200
    assert again.json()["id"] == created.json()["id"]
    listed = api.get(f"/api/reports/?study={studies['first'].pk}").json()["results"]
    assert [(r["id"], r["span_start"], r["span_end"]) for r in listed] == [(created.json()["id"], 16, 22)]
    api.force_authenticate(viewer)
    assert api.post("/api/reports/", {"study": studies["first"].pk, "text": "x"}, format="json").status_code == 403
    api.force_authenticate(outsider)
    assert api.post("/api/reports/", {"study": studies["first"].pk, "text": "x"}, format="json").status_code == 404
    assert api.post("/api/reports/", {"study": 999999, "text": "x"}, format="json").status_code == 404
    assert api.get("/api/reports/").json()["results"] == []
    assert api.get(f"/api/reports/{created.json()['id']}/").status_code == 404


def test_preview_queries_do_not_grow_with_the_rows(team_a, django_assert_max_num_queries):
    patients = [make_patient(team_a, f"M-{number:03d}") for number in range(40)]
    for patient in patients:
        make_study(patient, date(2026, 4, 1), accession=f"{patient.identifier}-1")
    rows = "".join(f"{p.identifier.lower()},{p.identifier}-1,Lesions enlarged.\n" for p in patients)
    # patients by identifier, patients differing in case, their studies, stored reports, the team's lexicon.
    with django_assert_max_num_queries(5):
        outcome = preview(team_a, ("patient,accession,report\n" + rows).encode())
    assert outcome.counts["new"] == 40  # matched although the file writes the identifiers in lower case


def test_a_text_stored_meanwhile_by_someone_else_comes_back_as_a_duplicate(anna, team_a, monkeypatch):
    _patient, studies = anna
    from patients import report_import

    real_rows = report_import._rows

    def rows_then_concurrent_save(*args):
        rows = real_rows(*args)  # the file is matched, then another request stores one of its texts
        save_report(studies["first"], "Stable.")
        return rows

    monkeypatch.setattr(report_import, "_rows", rows_then_concurrent_save)
    outcome = import_reports(team_a, b"patient,accession,report\nA-0001,ACC-1,Stable.\nA-0001,ACC-2,Stable.\n")
    assert [r.status for r in outcome.rows] == [ImportRowStatus.DUPLICATE, ImportRowStatus.SAVED]
    assert RadiologyReport.objects.count() == 2
