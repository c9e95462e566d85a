"""Report pages: CSV import with preview and confirmation, one report per study, the lexicon, the
agreement page with its CSV, the patient page's changes; who may do what; and an end-to-end course."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from patients.choices import ReportLabel
from patients.models import Cohort, RadiologyReport, ReportPhrase
from tests.conftest import PASSWORD

from .records import make_patient, make_run, make_series, make_study

GROW_THEN_SHRINK = (
    (date(2026, 3, 2), 0.05, -650.0),
    (date(2026, 3, 9), 0.12, -560.0),
    (date(2026, 3, 16), 0.07, -600.0),
)


@pytest.fixture
def as_user(client):
    def login(user):
        assert client.login(username=user.username, password=PASSWORD)
        return client

    return login


def course(team, identifier: str, points=GROW_THEN_SHRINK, corona=(40.0, 90.0, 50.0)):
    """A patient with one analysed study per point (date, POI, iHU); returns (patient, studies)."""
    patient = make_patient(team, identifier)
    studies = []
    for number, ((day, poi, ihu), score) in enumerate(zip(points, corona, strict=True)):
        study = make_study(patient, day, accession=f"{identifier}-{number + 1}")
        run = make_run(make_series(study), poi=poi, ihu=ihu)
        run.corona_score_ml = score
        run.save(update_fields=["corona_score_ml"])
        studies.append(study)
    return patient, studies


def csv_file(text: str, name: str = "reports.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode(), content_type="text/csv")


REPORTS_CSV = (
    "patient_id;accession;study_date;impression\n"
    "P-1;P-1-2;;Bilateral opacities increased in extent.\n"
    "P-1;;16.03.2026;Lesions partially absorbed, no new lesions.\n"
    "P-9;;2026-03-16;Stable.\n"
)


def test_import_previews_then_saves_and_lists_unmatched_rows(as_user, clinician, team_a):
    course(team_a, "P-1")
    client = as_user(clinician)
    url = reverse("report-import")
    preview = client.post(url, {"team": team_a.pk, "language": "en", "file": csv_file(REPORTS_CSV)})
    assert preview.status_code == 200
    content = preview.content.decode()
    assert "Check the reports before saving" in content
    assert "<mark>increased</mark>" in content
    assert "<mark>partially absorbed</mark>" in content
    assert "no patient &#x27;P-9&#x27; in Team A" in content
    assert RadiologyReport.objects.count() == 0  # nothing saved before the confirmation
    payload = preview.context["payload"]
    saved = client.post(url, {"payload": payload})
    assert saved.status_code == 200
    assert saved.context["outcome"].counts["saved"] == 2
    assert sorted(RadiologyReport.objects.values_list("label", flat=True)) == ["partial", "progression"]
    # Confirming the same preview again stores nothing twice.
    again = client.post(url, {"payload": payload})
    assert again.context["outcome"].counts == {"new": 0, "saved": 0, "duplicate": 2, "unmatched": 1, "invalid": 0}
    assert RadiologyReport.objects.count() == 2


def test_import_refuses_a_tampered_preview_and_says_what_is_wrong_with_a_file(as_user, clinician, team_a):
    client = as_user(clinician)
    url = reverse("report-import")
    assert client.post(url, {"payload": "not-a-signed-value"}).status_code == 400
    bad = client.post(url, {"team": team_a.pk, "language": "en", "file": csv_file("name,comment\nx,y\n", "x.csv")})
    assert bad.status_code == 400
    assert "x.csv: missing column(s): patient identifier" in bad.content.decode()


def test_viewers_cannot_import_and_outsiders_cannot_import_into_another_team(as_user, viewer, outsider, team_a):
    assert as_user(viewer).get(reverse("report-import")).status_code == 403
    client = as_user(outsider)
    refused = client.post(
        reverse("report-import"), {"team": team_a.pk, "language": "en", "file": csv_file(REPORTS_CSV)}
    )
    assert refused.status_code == 400
    assert "Choose one of your teams" in refused.content.decode()


def test_a_clinician_adds_a_report_on_the_patient_page_and_sees_its_phrase_marked(as_user, clinician, team_a):
    patient, studies = course(team_a, "P-1")
    client = as_user(clinician)
    response = client.post(reverse("study-report-add", args=[studies[1].pk]), {"text": "New lesions; GGO enlarged."})
    assert response.status_code == 302
    assert response.url.endswith(f"#study-{studies[1].pk}")
    page = client.get(reverse("patient-detail", args=[patient.pk]))
    content = page.content.decode()
    assert "<mark>New lesions</mark>; GGO enlarged." in content
    # The changes table: POI +7.0 pp then -5.0 pp, the second study's report says progression.
    changes = page.context["changes"]
    assert [(c.poi_label, c.ihu_label, c.corona_label, c.report_label) for c in changes] == [
        ("increase", "increase", "increase", "progression"),
        ("decrease", "decrease", "decrease", None),
    ]
    assert [round(c.delta_poi_pp, 6) for c in changes] == [7.0, -5.0]
    # The timeline has POI, iHU, corona score, relative corona score and the report marker.
    figure = page.context["timeline"]
    names = [trace["name"] for trace in figure["data"]]
    assert names == ["POI (%)", "iHU", "Corona score (mL)", "Relative corona score", "Report phrase"]
    assert figure["data"][3]["y"] == pytest.approx([1.0, 2.25, 1.25])
    assert figure["data"][4]["x"] == ["2026-03-09"]
    assert figure["layout"]["annotations"][0]["text"] == "Progression: “New lesions”"


def test_viewers_cannot_add_reports_and_outsiders_get_not_found(as_user, viewer, outsider, team_a):
    patient, studies = course(team_a, "P-1")
    url = reverse("study-report-add", args=[studies[0].pk])
    assert as_user(viewer).post(url, {"text": "Stable."}).status_code == 403
    assert as_user(outsider).post(url, {"text": "Stable."}).status_code == 404
    assert RadiologyReport.objects.count() == 0
    page = as_user(viewer).get(reverse("patient-detail", args=[patient.pk])).content.decode()
    assert reverse("study-report-add", args=[studies[0].pk]) not in page


def test_team_admin_edits_the_lexicon_and_reports_are_read_again(as_user, team_admin, clinician, outsider, team_a):
    _patient, studies = course(team_a, "P-1")
    as_user(clinician).post(reverse("study-report-add", args=[studies[1].pk]), {"text": "Herde größenprogredient."})
    report = RadiologyReport.objects.get()
    assert report.label == ReportLabel.NONE
    url = reverse("report-lexicon", args=[team_a.slug])
    client = as_user(team_admin)
    assert "no evidence of" in client.get(url).content.decode()  # the built-in phrases are listed
    added = client.post(url, {"phrase": "größenprogredient", "label": "progression", "language": "en"})
    assert added.status_code == 302
    report.refresh_from_db()
    assert (report.label, report.phrase) == (ReportLabel.PROGRESSION, "größenprogredient")
    refused = client.post(url, {"phrase": "x", "label": "progression", "language": "e n"})
    assert refused.status_code == 400
    assert "short code" in refused.content.decode()
    entry = ReportPhrase.objects.get()
    client.post(url, {"delete": entry.pk})
    report.refresh_from_db()
    assert report.label == ReportLabel.NONE
    client.logout()
    assert as_user(clinician).get(url).status_code == 403
    client.logout()
    assert as_user(outsider).get(url).status_code == 404


def test_team_admin_sets_the_tolerances_that_label_the_changes(as_user, team_admin, team_a):
    patient, _ = course(team_a, "P-1")
    client = as_user(team_admin)
    settings_url = reverse("team-settings", args=[team_a.slug])
    values = {
        "suspected_ratio_threshold": "0.27",
        "poi_tolerance_pp": "6",
        "ihu_tolerance_hu": "10",
        "corona_tolerance": "0.1",
    }
    assert client.post(settings_url, values).status_code == 302
    team_a.refresh_from_db()
    assert team_a.poi_tolerance_pp == 6.0
    changes = client.get(reverse("patient-detail", args=[patient.pk])).context["changes"]
    assert [c.poi_label for c in changes] == ["increase", "stable"]  # +7 pp passes 6, -5 pp does not
    bad = client.post(settings_url, {**values, "ihu_tolerance_hu": "-3"})
    assert bad.status_code == 200
    assert "greater than or equal to 0" in bad.content.decode()


def test_agreement_page_shows_tables_kappa_and_downloads_csv_scoped_to_team_and_cohort(
    as_user, clinician, outsider, team_a, team_b
):
    _one, studies_one = course(team_a, "P-1")
    two, studies_two = course(team_a, "P-2", corona=(10.0, 10.0, 10.0))
    course(team_b, "B-1")
    client = as_user(clinician)
    for study, text in (
        (studies_one[1], "Progression."),
        (studies_one[2], "Lesions absorbed."),
        (studies_two[1], "Lesions absorbed."),
        (studies_two[2], "No significant change."),
    ):
        client.post(reverse("study-report-add", args=[study.pk]), {"text": text})
    response = client.get(reverse("agreement"), {"team": team_a.slug})
    assert response.status_code == 200
    poi = response.context["results"][0]
    assert poi.measure == "POI"
    assert poi.table.as_dict() == {
        "progression": {"increase": 1, "decrease": 0, "stable": 0},
        "regression": {"increase": 1, "decrease": 1, "stable": 0},
        "stable": {"increase": 0, "decrease": 1, "stable": 0},
        "partial": {"increase": 0, "decrease": 0, "stable": 0},
    }
    assert poi.binary.n == 3
    assert poi.binary.kappa == pytest.approx(0.4)
    content = response.content.decode()
    assert 'id="kappa-data"' in content
    assert "B-1" not in content
    download = client.get(reverse("agreement"), {"team": team_a.slug, "format": "csv"})
    assert download["Content-Type"].startswith("text/csv")
    lines = download.content.decode().splitlines()
    assert lines[0] == "measure,report label,increase,decrease,stable,total"
    assert "POI,regression,1,1,0,2" in lines
    assert "POI,binary,0.4000" in "\n".join(lines)
    pairs = client.get(reverse("agreement"), {"format": "pairs"}).content.decode().splitlines()
    assert len(pairs) == 1 + 4
    assert pairs[1].startswith("P-1,2026-03-02,2026-03-09,7.00,90.0,1.250,increase,increase,increase,progression")
    cohort = Cohort.objects.create(team=team_a, name="Ward 3")
    cohort.patients.add(two)
    in_cohort = client.get(reverse("agreement"), {"cohort": cohort.pk}).context["changes"]
    assert {c.patient.identifier for c in in_cohort} == {"P-2"}
    assert client.get(reverse("agreement"), {"cohort": "x"}).status_code == 400
    client.logout()
    assert as_user(outsider).get(reverse("agreement"), {"team": team_a.slug}).status_code == 404
    assert as_user(outsider).get(reverse("agreement"), {"cohort": cohort.pk}).status_code == 404


def test_patient_list_filters_by_cohort_and_shows_severity_suspected_and_a_sparkline(
    as_user, clinician, outsider, team_a, django_assert_max_num_queries
):
    one, _ = course(team_a, "P-1")
    course(team_a, "P-2")
    latest = one.studies.order_by("-study_date").first().series.get().analysis_runs.get()
    latest.positive_ratio, latest.ct_severity_score = 0.6, 14
    latest.save(update_fields=["positive_ratio", "ct_severity_score"])
    cohort = Cohort.objects.create(team=team_a, name="Ward 3")
    cohort.patients.add(one)
    for number in range(60):  # a second page's worth, without analyses
        make_patient(team_a, f"Q-{number:03d}")
    client = as_user(clinician)
    # session, user, cohorts for the filter, count, page rows (annotated), the page's runs, header memberships.
    with django_assert_max_num_queries(7):
        response = client.get(reverse("patient-list"))
    rows = {p.identifier: p for p in response.context["page"]}
    assert (rows["P-1"].latest_severity, rows["P-1"].suspected) == (14, True)
    assert rows["P-2"].suspected is None
    assert rows["P-1"].poi_course == pytest.approx([0.05, 0.12, 0.07])
    content = response.content.decode()
    assert content.count('class="sparkline"') == 2
    assert 'aria-label="POI course: 5.0 %, 12.0 %, 7.0 %"' in content
    filtered = client.get(reverse("patient-list"), {"cohort": cohort.pk})
    assert [p.identifier for p in filtered.context["page"]] == ["P-1"]
    assert "in cohort Ward 3" in filtered.content.decode()
    client.logout()
    assert as_user(outsider).get(reverse("patient-list"), {"cohort": cohort.pk}).status_code == 404
