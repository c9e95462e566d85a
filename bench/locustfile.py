"""Locust users for bench/api_load.py: a clinician reading patients, results and image frames.

Run by bench/api_load.py (which seeds the site and writes the targets file); not on its own. Each
user works in a logged-in session of its own (created by the seeding: logging in, a password hash
of about a second, happens once a day, not per request, and is not what is measured) and, with a
think time of `BENCH_THINK_SECONDS` (0.5..1.5 s by default) between requests, reads:

* the patient list (REST API, a page of 50),
* a patient page (the HTML page with its figures, built in Python),
* a study's results (REST API: one analysis run with its regions and opacities),
* image frames (the viewer's per-slice DICOM, permission-checked; weighted: a viewer loads many).

Imports no Django: it runs in whatever environment has locust.
"""

from __future__ import annotations

import itertools
import json
import os
import random

from locust import HttpUser, between, task

TARGETS = json.loads(open(os.environ["BENCH_TARGETS"]).read())  # noqa: SIM115 - read once at import
THINK = float(os.environ.get("BENCH_THINK_SECONDS", "1.0"))
_session_numbers = itertools.count()


class Clinician(HttpUser):
    wait_time = between(THINK * 0.5, THINK * 1.5)

    def on_start(self) -> None:
        sessions = TARGETS["sessions"]
        self.client.cookies.set("sessionid", sessions[next(_session_numbers) % len(sessions)])

    def _get(self, path: str, name: str) -> None:
        # Only a 200 is a success: a redirect to the login page would otherwise count as one.
        with self.client.get(path, name=name, allow_redirects=False, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")

    @task(2)
    def patient_list(self) -> None:
        page = random.randint(1, TARGETS["patient_pages"])
        self._get(f"/api/patients/?page={page}", "patient list (API)")

    @task(2)
    def patient_page(self) -> None:
        self._get(f"/patients/{random.choice(TARGETS['patients'])}/", "patient page (HTML)")

    @task(2)
    def study_results(self) -> None:
        self._get(f"/api/analyses/{random.choice(TARGETS['runs'])}/", "study results (API)")

    @task(4)
    def image_frame(self) -> None:
        series, slices = random.choice(TARGETS["frames"])
        self._get(f"/series/{series}/instances/{random.randrange(slices)}/", "image frame")
