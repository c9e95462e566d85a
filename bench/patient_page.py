"""CPU time of one patient page (HTML, with its plotly figures), in-process; prints JSON.

    python bench/patient_page.py [--studies 5] [--requests 20]

Seeds a private SQLite database (temporary folder, removed afterwards) with one patient of
`--studies` dated CT studies, each with a finished analysis (per-slice areas and P(abnormal),
region measurements, opacities, a corona score) and a labelled radiology report, so the page draws
its course-over-time figure with report markers. Then, with Django's test client and a logged-in
clinician, times the import of the URL modules (what a gunicorn worker does while it boots), the
first request of this fresh process after it (first use of what the page needs), one more warm-up
request, and the median of `--requests` requests after it; then the same for the series page. No
network, no web server: the figures are the view's own cost (queries, figures, template).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.services import BenchSite, machine


def seed(studies: int):
    """A clinician and one patient with `studies` analysed and reported studies; returns (user, patient)."""
    from datetime import date, timedelta

    from django.contrib.auth import get_user_model

    from patients.choices import ReportLabel, Role
    from patients.models import Membership, RadiologyReport, Team
    from tests.frontend.records import add_results, make_patient, make_run, make_series, make_study

    team = Team.objects.create(name="Bench ward", slug="bench")
    user = get_user_model().objects.create_user(username="bench-clinician", password="bench-password-9")
    Membership.objects.create(user=user, team=team, role=Role.CLINICIAN)
    patient = make_patient(team, "BENCH-PAGE-1")
    labels = [ReportLabel.PROGRESSION, ReportLabel.STABLE, ReportLabel.REGRESSION, ReportLabel.PARTIAL]
    for number in range(studies):
        study = make_study(patient, date(2026, 1, 5) + timedelta(days=7 * number))
        run = make_run(make_series(study, slices=120, thickness=2.5), poi=0.05 + 0.04 * number)
        # A realistic per-slice curve: 120 slices with the classifier's probability.
        run.slice_metrics = [
            {**row, "abnormal_probability": round(min(1.0, row["infection_area_mm2"] / 3000), 3)}
            for row in _slices(120)
        ]
        run.corona_score_ml = 40.0 + 15 * number
        run.save(update_fields=["slice_metrics", "corona_score_ml"])
        add_results(run)
        RadiologyReport.objects.create(
            study=study,
            text=f"Report {number}: ground-glass opacities.",
            label=labels[number % len(labels)],
            phrase="opacities have increased",
            content_hash=f"bench-{number}",
        )
    return user, patient, run.series


def _slices(count: int) -> list[dict]:
    from tests.frontend.records import slice_metrics

    return slice_metrics(count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with BenchSite(None):
        from django.test import Client

        user, patient, series = seed(args.studies)
        client = Client(HTTP_HOST="127.0.0.1")  # the only allowed host of the bench site
        client.force_login(user)

        def timed(url: str) -> float:
            start = time.perf_counter()
            response = client.get(url)
            elapsed = time.perf_counter() - start
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered {response.status_code}")
            return elapsed * 1000

        from importlib import import_module

        from django.conf import settings

        # What a gunicorn worker does while it boots (covidsite/wsgi.py): import every view.
        start = time.perf_counter()
        import_module(settings.ROOT_URLCONF)
        boot_ms = (time.perf_counter() - start) * 1000
        pages = {}
        # The patient page first: its first request is this fresh process's first use of the figures.
        for name, url in (("patient page", f"/patients/{patient.pk}/"), ("series page", f"/series/{series.pk}/")):
            first = timed(url)
            timed(url)  # warm-up
            times = [timed(url) for _ in range(args.requests)]
            pages[name] = {
                "first_request_ms": round(first, 1),
                "median_ms": round(statistics.median(times), 1),
                "min_ms": round(min(times), 1),
                "max_ms": round(max(times), 1),
            }
        print(
            json.dumps(
                {
                    "machine": machine(),
                    "studies": args.studies,
                    "requests": args.requests,
                    "url_import_ms": round(boot_ms, 1),
                    "pages": pages,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
