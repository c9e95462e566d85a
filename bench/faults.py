"""A real PostgreSQL restart during an ingest, and an upload while it is down; prints a JSON report.

    python bench/faults.py        # as root (the private server runs as the postgres OS user)

The test suite simulates a lost connection (tests/patients/test_ingest_faults.py kills the ingest's
own PostgreSQL connection); this script restarts a real server. It creates a private PostgreSQL
cluster (initdb into a temporary folder, its own loopback port, run as the postgres OS user), so no
shared server is touched, and removes it at the end.

1. Restart mid-ingest: an import of two series; while the first one's rows are being written the
   server is restarted (`pg_ctl restart -m fast`). Expected: that series is refused whole with a
   reason, nothing of it is left (rows or files), the second series and the upload report are
   stored through a fresh connection, and importing again stores the first one.
2. Down during an HTTP upload: the server is stopped, a browser-style upload to gunicorn gets a 503
   that says what happened and leaves no file behind; once the server is back the same upload
   succeeds (201).
"""

from __future__ import annotations

import contextlib
import glob
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.services import LOOPBACK, BenchSite, free_port, machine, wait_for_port


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a loopback port, owned by the postgres OS user."""

    def __init__(self) -> None:
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not binaries:
            raise SystemExit("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
        self.bin = Path(binaries[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="covidsite-pg-"))
        shutil.chown(self.folder, "postgres", "postgres")
        self.data = self.folder / "data"
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"postgres://postgres@{LOOPBACK}:{self.port}/covidsite_bench_faults"

    def _pg(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args], check=True, capture_output=True, timeout=timeout, cwd="/"
        )

    def init(self) -> None:
        self._pg(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", timeout=120)
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses={LOOPBACK}"
        log = str(self.folder / "log")
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        wait_for_port(self.port)

    def stop(self) -> None:
        self._pg(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def media_files(site: BenchSite) -> list[str]:
    media = site.folder / "media"
    return sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file())


def restart_mid_ingest(site: BenchSite, server: PrivatePostgres, team) -> dict:
    from patients.ingest import ingest_paths
    from patients.models import Instance, Series, Upload
    from tests.patients.scans import ct_series

    scans = site.folder / "sources" / "restart"
    ct_series(scans / "a-first", patient_id="FIRST", slices=20, seed=1)
    ct_series(scans / "b-second", patient_id="SECOND", slices=20, seed=2)
    original = Instance.objects.bulk_create
    restarts = []

    def restart_then_write(*args, **kwargs):
        if not restarts:
            started = time.perf_counter()
            server.restart()  # the ingest holds an open transaction on the old server process
            restarts.append(round(time.perf_counter() - started, 2))
        return original(*args, **kwargs)

    Instance.objects.bulk_create = restart_then_write
    try:
        upload = ingest_paths(team, [scans])
    finally:
        del Instance.objects.bulk_create  # back to the manager's own method
    stored = list(Series.objects.values_list("study__patient__identifier", "slice_count"))
    files = media_files(site)
    referenced = sorted(Instance.objects.values_list("file", flat=True))
    retry = ingest_paths(team, [scans])
    checks = {
        "first series refused whole": upload.refused_count == 20 and upload.accepted_count == 20,
        "reason names the lost connection": all(
            "the connection to the database was lost" in r["reason"] for r in upload.report["refused"]
        ),
        "second series stored through a fresh connection": stored == [("SECOND", 20)],
        "upload report stored": Upload.objects.filter(pk=upload.pk).exists(),
        "no file of the refused series left": files == referenced,
        "retry stores the first series": (retry.accepted_count, retry.refused_count) == (40, 0)
        and Series.objects.count() == 2
        and Instance.objects.count() == 40,
    }
    return {
        "restart_seconds": restarts[0] if restarts else None,
        "first_reason": upload.report["refused"][0]["reason"] if upload.report["refused"] else None,
        "checks": checks,
    }


def upload_while_down(site: BenchSite, server: PrivatePostgres, token: str) -> dict:
    import requests
    from django.db import connections

    from patients.models import Series
    from tests.patients.scans import ct_series

    paths = ct_series(site.folder / "sources" / "down", patient_id="OUTAGE", slices=20, seed=3)
    files = [("files", (p.name, p.read_bytes(), "application/dicom")) for p in paths]
    base_url = site.start_gunicorn(workers=1)
    site.warm_up(base_url, workers=1, rounds=1)
    before = media_files(site)
    headers = {"Authorization": f"Token {token}"}
    server.stop()
    try:
        during = requests.post(f"{base_url}/api/uploads/", files=files, headers=headers, timeout=120)
        after_failure = media_files(site)
    finally:
        server.start()
    connections.close_all()  # this script's own connection died with the server, as a request's would
    again = requests.post(f"{base_url}/api/uploads/", files=files, headers=headers, timeout=120)
    detail = during.json().get("detail", "") if during.headers.get("Content-Type") == "application/json" else ""
    checks = {
        "503 while the database is down": during.status_code == 503,
        "the answer says what happened": "the database cannot be reached" in detail,
        "no file left by the failed upload": after_failure == before,
        "the same upload succeeds once it is back": again.status_code == 201
        and again.json().get("accepted_count") == 20
        and Series.objects.filter(study__patient__identifier="OUTAGE").count() == 1,
    }
    return {"status_during": during.status_code, "detail": detail, "status_after": again.status_code, "checks": checks}


def main() -> None:
    server = PrivatePostgres()
    report: dict = {"benchmark": "faults", "machine": machine()}
    try:
        server.init()
        with BenchSite(server.url) as site:
            from django.contrib.auth import get_user_model
            from rest_framework.authtoken.models import Token

            from patients.choices import Role
            from patients.models import Membership, Team

            team = Team.objects.create(name="Faults", slug="faults")
            user = get_user_model().objects.create_user(username="fault-clinician", password="fault-password-9")
            Membership.objects.create(user=user, team=team, role=Role.CLINICIAN)
            token = Token.objects.create(user=user).key
            report["postgresql_restart_mid_ingest"] = restart_mid_ingest(site, server, team)
            report["upload_while_postgresql_down"] = upload_while_down(site, server, token)
    finally:
        server.remove()
    sections = [section for section in report.values() if isinstance(section, dict) and "checks" in section]
    report["all_checks_passed"] = bool(sections) and all(all(s["checks"].values()) for s in sections)
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["all_checks_passed"] else 1)


if __name__ == "__main__":
    main()
