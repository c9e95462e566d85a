"""Severity models on a cohort in the database: fit, save, activate, P(severe) on new scans, labels, CSV."""

from __future__ import annotations

import csv
import io
from datetime import date

import numpy as np
import pytest
from rest_framework.test import APIClient
from sklearn.metrics import roc_auc_score

from analysis.choices import SeverityLabel
from analysis.cohorts import export_rows, import_labels, record_labels
from analysis.models import ClinicalSeverity, SeverityModel
from analysis.severity import (
    NO_ACTIVE_MODEL,
    activate,
    cohort_scans,
    fit_cohort,
    latest_fit,
    severity_of_run,
    training_scans,
)
from analysis.stats.severity import MIN_PER_CLASS, TooFewScans
from tests.frontend.records import make_patient, make_run, make_series, make_study

from .severity_cohort import build_cohort


@pytest.fixture
def cohort(team_a):
    return build_cohort(team_a)


def test_fitting_a_cohort_saves_one_model_per_feature_set_with_the_expected_auc_ordering(cohort, team_admin):
    outcome = fit_cohort(cohort, team_admin)

    by_name = {m.name.split(": ")[1]: m for m in outcome.models}
    assert set(by_name) == {"POI", "iHU", "POI + iHU"}
    skipped = dict(outcome.skipped)
    assert list(skipped) == ["Corona score", "CT severity score"]
    assert skipped["Corona score"].startswith("only 0 of 24 scans have Corona score: too few scans")
    assert (
        skipped["CT severity score"] == "CT severity score is the same on every scan, so it cannot separate the groups"
    )
    poi, ihu, both = by_name["POI"], by_name["iHU"], by_name["POI + iHU"]
    assert poi.metrics["auc"] > ihu.metrics["auc"]
    assert both.metrics["auc"] >= poi.metrics["auc"] - 0.05
    assert poi.metrics["cutoff_text"].startswith("POI \u2265 ")
    assert (poi.n_severe, poi.n_non_severe, poi.team_id, poi.created_by) == (12, 12, cohort.team_id, team_admin)
    assert len({m.created for m in outcome.models}) == 1
    assert not any(m.is_active for m in outcome.models)
    assert [m.pk for m in latest_fit(cohort)] == [poi.pk, ihu.pk, both.pk]


def test_saved_auc_equals_scikit_learn_on_the_scans(cohort, team_admin):
    fit_cohort(cohort, team_admin)
    poi = SeverityModel.objects.get(cohort=cohort, features=["poi"])
    scans = training_scans(cohort_scans(cohort))
    y = [1 if s.label == SeverityLabel.SEVERE else 0 for s in scans]
    # The POI model is monotone in POI, so its in-sample AUC is that of POI itself; the CV AUC is close.
    assert roc_auc_score(y, [s.run.poi for s in scans]) == pytest.approx(poi.metrics["auc"], abs=0.05)
    low, high = poi.metrics["auc_ci"]
    assert low <= poi.metrics["auc"] <= high
    fpr, tpr = np.array(poi.metrics["roc"]["fpr"]), np.array(poi.metrics["roc"]["tpr"])
    best = int(np.argmax(tpr - fpr))
    assert poi.metrics["sensitivity"] == pytest.approx(tpr[best])
    assert poi.metrics["specificity"] == pytest.approx(1 - fpr[best])


def test_a_cohort_with_too_few_severe_scans_is_refused(team_a, team_admin):
    cohort = build_cohort(team_a, n_per_class=MIN_PER_CLASS)
    severe = ClinicalSeverity.objects.filter(study__patient__cohorts=cohort, label=SeverityLabel.SEVERE).first()
    severe.label = SeverityLabel.UNKNOWN
    severe.save()
    with pytest.raises(TooFewScans, match=f"4 severe and 5 non-severe; at least {MIN_PER_CLASS} of each"):
        fit_cohort(cohort, team_admin)
    assert not SeverityModel.objects.exists()


def test_one_active_model_per_team_scores_new_analyses(cohort, team_a, team_admin):
    outcome = fit_cohort(cohort, team_admin)
    poi, both = outcome.models[0], outcome.models[2]
    new_scan = make_run(make_series(make_study(make_patient(team_a, "NEW-1"), date(2026, 5, 1))), poi=0.45, ihu=-480)

    assert severity_of_run(new_scan).detail == NO_ACTIVE_MODEL
    activate(poi)
    activate(both)
    assert list(SeverityModel.objects.filter(is_active=True)) == [both]
    prediction = severity_of_run(new_scan)
    assert prediction.model == both
    assert prediction.probability > 0.9
    mild = make_run(make_series(make_study(make_patient(team_a, "NEW-2"), date(2026, 5, 2))), poi=0.01, ihu=-620)
    assert severity_of_run(mild).probability < 0.1


def test_the_api_shows_p_severe_and_the_model_or_says_there_is_none(
    cohort, team_a, team_b, team_admin, viewer, outsider
):
    run = make_run(make_series(make_study(make_patient(team_a, "NEW-3"), date(2026, 5, 3))), poi=0.4, ihu=-500)
    client = APIClient()
    client.force_authenticate(viewer)
    body = client.get(f"/api/analyses/{run.pk}/").json()
    assert body["severity"] == {"probability": None, "model": None, "detail": NO_ACTIVE_MODEL}

    model = fit_cohort(cohort, team_admin).models[0]
    activate(model)
    body = client.get(f"/api/analyses/{run.pk}/").json()
    assert body["severity"]["model"]["id"] == model.pk
    assert body["severity"]["model"]["name"] == "ICU 2026: POI"
    assert body["severity"]["probability"] > 0.5
    # Team B's runs are not scored by team A's model.
    other = make_run(make_series(make_study(make_patient(team_b, "B-9"), date(2026, 5, 3))), poi=0.4)
    client.force_authenticate(outsider)
    assert client.get(f"/api/analyses/{other.pk}/").json()["severity"]["detail"] == NO_ACTIVE_MODEL


def test_labels_are_checked_before_anything_is_stored(cohort, team_a, clinician):
    first, second = cohort_scans(cohort)[:2]
    outsider_study = make_study(make_patient(team_a, "NOT-IN"), date(2026, 1, 1))
    with pytest.raises(ValueError, match="unknown severity label"):
        record_labels(cohort, clinician, {first.study.pk: "critical"})
    with pytest.raises(ValueError, match=f"studies {outsider_study.pk} are not in this cohort"):
        record_labels(cohort, clinician, {first.study.pk: SeverityLabel.UNKNOWN, outsider_study.pk: "severe"})
    assert ClinicalSeverity.objects.get(study=first.study).label == first.label
    assert record_labels(cohort, clinician, {first.study.pk: SeverityLabel.UNKNOWN, second.study.pk: second.label}) == 1
    saved = ClinicalSeverity.objects.get(study=first.study)
    assert (saved.label, saved.recorded_by) == (SeverityLabel.UNKNOWN, clinician)


def test_severity_csv_import_stores_matching_rows_and_lists_the_others(cohort, clinician):
    text = (
        "patient,accession,study_date,severity\n"
        "S-001,ACC-S-001,,non-severe\n"  # was severe
        "S-002,,2026-01-03,Severe\n"  # unchanged
        "S-003,ACC-NOPE,,severe\n"
        "X-999,,2026-01-01,severe\n"
        "S-004,,2026-13-01,severe\n"
        "S-005,ACC-S-005,,critical\n"
    )
    report = import_labels(cohort, clinician, text)
    assert (report.stored, report.unchanged) == (1, 1)
    assert [(line, reason) for line, _, reason in report.unmatched] == [
        (4, "patient S-003 has no study with accession number ACC-NOPE"),
        (5, "patient 'X-999' is not in this cohort"),
        (6, "study date '2026-13-01' is not a date like 2026-03-01"),
        (7, "severity 'critical' is not severe, non-severe or unknown"),
    ]
    assert ClinicalSeverity.objects.get(study__accession_number="ACC-S-001").label == SeverityLabel.NON_SEVERE
    bad = import_labels(cohort, clinician, "who,what\nS-001,severe\n")
    assert bad.stored == 0
    assert "header needs patient, severity and accession or study_date" in bad.unmatched[0][2]


def test_export_has_one_row_per_study_with_its_bio_markers(cohort, team_a):
    lonely = make_patient(team_a, "=HYPERLINK(1)")
    make_study(lonely, None)
    cohort.patients.add(lonely)
    rows = list(
        csv.reader(io.StringIO("".join(",".join(map(str, r)) + "\n" for r in export_rows(cohort_scans(cohort)))))
    )
    header, body = rows[0], rows[1:]
    assert header[:3] == ["patient", "study_date", "accession_number"]
    assert len(body) == 25
    first = dict(zip(header, body[1], strict=True))
    assert first["patient"] == "S-001"
    assert first["clinical_severity"] == "severe"
    assert float(first["poi"]) > 0
    unanalysed = dict(zip(header, body[0], strict=True))
    assert unanalysed["patient"] == "'=HYPERLINK(1)"  # no formula reaches a spreadsheet
    assert unanalysed["poi"] == ""
