"""The demo team: users with printed passwords and a cohort of synthetic patients scanned over time.

Each demo patient is a phantom (analysis.phantoms) whose lesions grow then resolve over 2-5 scans,
reconstructed at 5 mm or 10 mm, written as real DICOM series and imported through the normal
ingest, so the demo exercises the same path as a hospital upload (and queues the same analyses).
Each follow-up scan gets a radiology report written from the phantom's true change, and each study a
clinical severity label from its true POI (the upper half of the demo's scans count as severe), so the
agreement and severity pages have something to show once the worker has analysed the scans.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from django.contrib.auth import get_user_model
from django.db import transaction

from analysis.phantoms import make_phantom, patient_course
from analysis.pipeline.volume import write_dicom_series

from .choices import ReportSource, Role
from .ingest import ingest_paths
from .models import Cohort, Membership, Patient, Study, Team
from .radiology import save_report

# Report wording by the true change of the infected volume since the previous scan (ratio of POIs).
FIRST_REPORT = "Patchy peripheral ground-glass opacities in both lungs, typical of viral pneumonia."
REPORTS = {
    "up": "Compared with the prior study the opacities have enlarged, with new consolidation in the lower lobes.",
    "down": "The lesions have decreased in size and density since the prior study.",
    "partly": "The opacities are partially absorbed; no new lesions.",
    "same": "No significant change compared with the prior study.",
}

DEMO_TEAM_SLUG = "demo"
DEMO_USERS = (("demo-admin", Role.ADMIN), ("demo-clinician", Role.CLINICIAN), ("demo-viewer", Role.VIEWER))


@dataclass(frozen=True)
class DemoCredentials:
    username: str
    role: str
    password: str


@transaction.atomic
def create_demo_team() -> tuple[Team, list[DemoCredentials]]:
    """Create (or reuse) the demo team and its three users; every call sets fresh random passwords."""
    team, _ = Team.objects.get_or_create(slug=DEMO_TEAM_SLUG, defaults={"name": "Demo hospital"})
    user_model = get_user_model()
    credentials = []
    for username, role in DEMO_USERS:
        user, _ = user_model.objects.get_or_create(username=username)
        password = secrets.token_urlsafe(9)
        user.set_password(password)
        user.save()
        Membership.objects.update_or_create(user=user, team=team, defaults={"role": role})
        credentials.append(DemoCredentials(username, role, password))
    return team, credentials


def create_demo_patients(
    team: Team, *, patients: int = 8, matrix: int = 256, first_date: date = date(2026, 1, 5)
) -> list[Patient]:
    """Import `patients` synthetic patients with 2-5 scans each; patients already there are kept as they are."""

    created = []
    course: list[tuple[str, float]] = []  # (accession number, true POI) of every imported scan, in order
    for number in range(1, patients + 1):
        identifier = f"DEMO-{number:03d}"
        if Patient.objects.filter(team=team, identifier=identifier).exists():
            continue
        n_scans = 2 + (number * 5) % 4  # 2..5 scans, varied across patients
        thickness = 5.0 if number % 2 else 10.0
        start = first_date + timedelta(days=3 * number)
        with tempfile.TemporaryDirectory(prefix="covidsite-demo-") as tmp:
            for scan, spec in enumerate(patient_course(seed=number, n_scans=n_scans)):
                phantom = make_phantom(
                    spec, slice_thickness_mm=thickness, pixel_spacing_mm=1.4 * 256 / matrix, matrix=matrix
                )
                course.append((f"ACC{number:03d}{scan:02d}", phantom.truth.poi))
                write_dicom_series(
                    phantom.volume,
                    Path(tmp) / f"scan{scan}",
                    patient_id=identifier,
                    study_date=start + timedelta(days=4 * scan + scan * scan),
                    series_description=f"Chest CT {thickness:g} mm",
                    accession_number=f"ACC{number:03d}{scan:02d}",
                    sex="F" if number % 3 == 0 else "M",
                    birth_year=1940 + (number * 7) % 50,
                    slice_thickness=thickness,
                )
            ingest_paths(team, [Path(tmp)], channel="demo")
        created.append(Patient.objects.get(team=team, identifier=identifier))
    cohort, _ = Cohort.objects.get_or_create(
        team=team, name="Demo cohort", defaults={"description": "Synthetic patients whose lesions grow then resolve"}
    )
    cohort.patients.add(*Patient.objects.filter(team=team, identifier__startswith="DEMO-"))
    _add_reports_and_labels(team, cohort, course)
    return created


def _add_reports_and_labels(team: Team, cohort: Cohort, course: list[tuple[str, float]]) -> None:
    """Reports from each scan's true change and severity labels from its true POI (see the module doc)."""
    from analysis.choices import SeverityLabel
    from analysis.cohorts import record_labels

    studies = {
        s.accession_number: s
        for s in Study.objects.filter(patient__team=team, accession_number__in=[a for a, _ in course])
    }
    if not studies:
        return
    median = sorted(poi for _, poi in course)[len(course) // 2]
    labels: dict[int, str] = {}
    previous: tuple[str, float] | None = None
    for accession, poi in course:
        study = studies.get(accession)
        same_patient = previous is not None and previous[0][:6] == accession[:6]
        if study is not None:
            if not same_patient:
                text = FIRST_REPORT
            else:
                ratio = poi / max(previous[1], 1e-6)
                step = "up" if ratio > 1.15 else "same" if ratio >= 0.85 else ("partly" if poi > 0.01 else "down")
                text = REPORTS[step]
            save_report(study, text, source=ReportSource.CSV, report_date=study.study_date)
            labels[study.pk] = SeverityLabel.SEVERE if poi >= median else SeverityLabel.NON_SEVERE
        previous = (accession, poi)
    record_labels(cohort, None, labels)
