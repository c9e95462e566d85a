"""The demo set-up: team, users with working passwords, synthetic patients imported through ingest."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from analysis.receivers import analyse_ready_series
from patients.choices import Role, SeriesStatus
from patients.demo import create_demo_patients, create_demo_team
from patients.models import Cohort, Membership, Patient, Series
from patients.signals import series_ready


@pytest.fixture
def no_analysis_queueing():
    # The demo's analyses are the worker's business; here only the import is under test.
    series_ready.disconnect(analyse_ready_series)
    yield
    series_ready.connect(analyse_ready_series)


def test_demo_team_has_one_user_per_role_and_the_printed_passwords_work(client, db):
    team, credentials = create_demo_team()
    assert {c.role for c in credentials} == {Role.ADMIN, Role.CLINICIAN, Role.VIEWER}
    for cred in credentials:
        assert Membership.objects.get(user__username=cred.username, team=team).role == cred.role
        assert client.login(username=cred.username, password=cred.password)
    # A second start keeps one team and one membership per user, with new passwords.
    team_again, again = create_demo_team()
    assert team_again == team
    assert Membership.objects.filter(team=team).count() == 3
    assert {c.password for c in again}.isdisjoint({c.password for c in credentials})


def test_demo_patients_have_several_ready_scans_over_time(db, no_analysis_queueing):
    team, _ = create_demo_team()
    created = create_demo_patients(team, patients=2, matrix=96)
    assert [p.identifier for p in created] == ["DEMO-001", "DEMO-002"]
    for patient in created:
        studies = list(patient.studies.order_by("study_date"))
        assert len(studies) >= 2
        assert len({s.study_date for s in studies}) == len(studies), "each scan is a different day"
        series = Series.objects.filter(study__patient=patient)
        assert all(s.status == SeriesStatus.READY for s in series)
        assert all(s.slice_count >= 15 for s in series)
    assert {s.slice_thickness for s in Series.objects.filter(study__patient__team=team)} == {5.0, 10.0}
    assert set(Cohort.objects.get(team=team).patients.all()) == set(created)
    # Running it again imports nothing twice.
    assert create_demo_patients(team, patients=2, matrix=96) == []
    assert Patient.objects.filter(team=team).count() == 2


def test_seed_demo_command_prints_every_password(db, capsys, no_analysis_queueing):
    call_command("seed_demo", patients=1, matrix=96)
    out = capsys.readouterr().out
    for username in ("demo-admin", "demo-clinician", "demo-viewer"):
        assert username in out
    assert "Imported 1 new patients" in out


def test_demo_follow_ups_have_reports_that_follow_the_true_course_and_studies_have_severity(db, no_analysis_queueing):
    from analysis.choices import SeverityLabel
    from analysis.models import ClinicalSeverity
    from patients.choices import ReportLabel
    from patients.models import RadiologyReport

    team, _ = create_demo_team()
    create_demo_patients(team, patients=2, matrix=96)
    for patient in Patient.objects.filter(team=team):
        reports = list(RadiologyReport.objects.filter(study__patient=patient).order_by("study__study_date"))
        assert len(reports) == patient.studies.count()
        # The lesions grow first: the first follow-up's report says so, and a later one reads as a decrease.
        assert reports[1].label == ReportLabel.PROGRESSION
        if len(reports) > 2:
            assert reports[-1].label in (ReportLabel.REGRESSION, ReportLabel.PARTIAL, ReportLabel.STABLE)
    labels = set(ClinicalSeverity.objects.filter(study__patient__team=team).values_list("label", flat=True))
    assert labels == {SeverityLabel.SEVERE, SeverityLabel.NON_SEVERE}
    # A second run adds no report twice.
    count = RadiologyReport.objects.count()
    create_demo_patients(team, patients=2, matrix=96)
    assert RadiologyReport.objects.count() == count
