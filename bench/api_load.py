"""The site under load: p50/p95/p99 and errors per endpoint at 10 and 50 concurrent users; prints JSON.

    pip install -e .[bench]        # locust, into the environment that runs it (or --locust PATH)
    python bench/api_load.py [--users 10 50] [--seconds 30] [--patients 300] [--workers 5 --threads 2]

Starts its own set-up and stops it at the end: a PostgreSQL database it creates (covidsite_bench on
127.0.0.1:5432, user postgres; dropped afterwards), Redis on 127.0.0.1:6379 as the broker (a private
queue, deleted afterwards), gunicorn on a free loopback port (sync workers, as docker-compose runs
it). Seeds one team with a few hundred
patients (a CT study each, a finished analysis with its region measurements and opacities) and a few
series stored through ingest so image frames are real files. Then runs locust headless against
loopback only, for a bounded time per user count (bench/locustfile.py says what a user does), and
reports locust's percentiles per endpoint. Goal: p95 <= 200 ms at 50 users with 0 errors.
"""

from __future__ import annotations

import argparse
import csv
import json
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.services import DEFAULT_DATABASE_URL, LOOPBACK, ROOT, BenchSite, machine, reachable

REDIS = (LOOPBACK, 6379)
REDIS_DB = 12
GOAL_P95_MS = 200
PASSWORD = "bench-password-9"
FRAME_SERIES = 4
FRAME_SLICES = 32


def seed(site: BenchSite, patients: int, sessions: int) -> dict:
    """Rows for the load: patients with two scans and their analyses, a few series with files, logged-in sessions."""
    import itertools
    from datetime import date, timedelta

    from django.contrib.auth import get_user_model

    from analysis.phantoms import Severity, make_phantom, random_spec
    from analysis.pipeline.volume import write_dicom_series
    from patients.choices import Role
    from patients.ingest import ingest_paths
    from patients.models import Membership, Series, Team
    from tests.frontend.records import add_results, make_patient, make_run, make_series, make_study

    team = Team.objects.create(name="Bench ward", slug="bench")
    user = get_user_model().objects.create_user(username="bench-clinician", password=PASSWORD)
    Membership.objects.create(user=user, team=team, role=Role.CLINICIAN)
    runs, patient_ids = [], []
    poi = itertools.cycle([0.02, 0.08, 0.15, 0.3, 0.45])
    for number in range(patients):
        patient = make_patient(team, f"BENCH-{number:05d}")
        patient_ids.append(patient.pk)
        # Two scans a patient: the page draws their course over time.
        for visit in range(2):
            study = make_study(patient, date(2026, 1, 5) + timedelta(days=7 * visit + number % 5))
            run = make_run(make_series(study), poi=next(poi))
            add_results(run)
            runs.append(run.pk)
    frames = []
    phantom = make_phantom(random_spec(2, Severity.MODERATE), slice_thickness_mm=10.0, matrix=256)
    for number in range(FRAME_SERIES):
        folder = site.folder / "sources" / f"frames-{number}"
        write_dicom_series(phantom.volume, folder, patient_id=f"BENCH-IMG-{number}", series_description="Chest 10 mm")
        upload = ingest_paths(team, [folder])
        series = Series.objects.get(pk=upload.report["series"][0]["id"])
        frames.append([series.pk, series.slice_count])
    return {
        "sessions": [login_session(user) for _ in range(sessions)],
        "patients": patient_ids,
        "patient_pages": max(1, (patients + FRAME_SERIES + 49) // 50),
        "runs": runs,
        "frames": frames,
    }


def login_session(user) -> str:
    """A logged-in session key, as the login page would create (a clinician logs in once, then works)."""
    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def warm_up(base_url: str, targets: dict, workers: int) -> None:
    """Each gunicorn worker's first requests are slower (templates compiled, connections opened): not measured."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    series, _ = targets["frames"][0]
    paths = [
        f"/patients/{targets['patients'][0]}/",
        "/api/patients/",
        f"/api/analyses/{targets['runs'][0]}/",
        f"/series/{series}/instances/0/",
    ]

    def visit(number: int) -> set[int]:
        cookies = {"sessionid": targets["sessions"][number % len(targets["sessions"])]}
        return {requests.get(base_url + path, cookies=cookies, timeout=120).status_code for path in paths}

    with ThreadPoolExecutor(max_workers=workers * 2) as pool:
        for _ in range(3):
            codes = set().union(*pool.map(visit, range(workers * 4)))
            if codes != {200}:
                raise RuntimeError(f"warm-up requests answered {sorted(codes)}")


def locust_command(args: argparse.Namespace) -> str:
    found = args.locust or shutil.which("locust") or str(Path(sys.executable).parent / "locust")
    if not Path(found).exists() and not shutil.which(found):
        raise SystemExit("locust is not installed: pip install -e .[bench] (or give its path with --locust)")
    return found


def run_locust(locust: str, base_url: str, users: int, seconds: int, targets: Path, folder: Path, think: float) -> dict:
    prefix = folder / f"locust-{users}"
    command = [
        locust,
        "-f",
        str(ROOT / "bench" / "locustfile.py"),
        "--headless",
        "--host",
        base_url,
        "--users",
        str(users),
        "--spawn-rate",
        str(max(1, users // 2)),
        "--run-time",
        f"{seconds}s",
        "--stop-timeout",
        "5",
        "--reset-stats",
        "--csv",
        str(prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    env = {"BENCH_TARGETS": str(targets), "BENCH_THINK_SECONDS": str(think), "PATH": "/usr/bin:/bin"}
    # Bounded: locust stops itself after --run-time; the timeout only catches a hung run.
    subprocess.run(command, env=env, timeout=seconds + 120, check=False, capture_output=True)
    return read_stats(prefix.with_name(prefix.name + "_stats.csv"), prefix.with_name(prefix.name + "_failures.csv"))


def read_stats(stats: Path, failures: Path) -> dict:
    if not stats.exists():
        raise RuntimeError(f"locust wrote no statistics ({stats} is missing)")
    endpoints = {}
    for row in csv.DictReader(stats.open()):
        endpoints[row["Name"]] = {
            "requests": int(row["Request Count"]),
            "errors": int(row["Failure Count"]),
            "p50_ms": _number(row["50%"]),
            "p95_ms": _number(row["95%"]),
            "p99_ms": _number(row["99%"]),
            "max_ms": _number(row["Max Response Time"]),
            "requests_per_second": round(float(row["Requests/s"]), 1),
        }
    errors = []
    if failures.exists():
        errors = [f"{row['Name']}: {row['Error']} (x{row['Occurrences']})" for row in csv.DictReader(failures.open())]
    return {"endpoints": endpoints, "error_messages": errors[:10]}


def _number(text: str) -> float | None:
    try:
        return round(float(text), 1)
    except ValueError:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--seconds", type=int, default=30, help="locust run time per user count")
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--workers", type=int, default=5, help="gunicorn worker processes (2 x cores + 1)")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads per gunicorn worker (1: sync workers, as docker-compose runs)"
    )
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds a user waits between requests")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="a covidsite_bench* database to create")
    parser.add_argument("--locust", help="path of the locust executable")
    args = parser.parse_args()
    if not all(1 <= u <= 200 for u in args.users) or not 5 <= args.seconds <= 600 or not 1 <= args.patients <= 5000:
        parser.error("--users must be 1..200, --seconds 5..600 and --patients 1..5000")
    locust = locust_command(args)

    queue = f"bench-{secrets.token_hex(4)}"
    broker = f"redis://{REDIS[0]}:{REDIS[1]}/{REDIS_DB}" if reachable(*REDIS) else None
    site = BenchSite(args.database_url, broker_url=broker)
    site.env["CELERY_ANALYSIS_QUEUE"] = queue
    notes = [] if broker else ["Redis was not reachable: the filesystem broker was used (API reads do not use it)"]
    try:
        with site:
            targets = site.folder / "targets.json"
            seeded = seed(site, args.patients, sessions=max(args.users))
            targets.write_text(json.dumps(seeded))
            base_url = site.start_gunicorn(workers=args.workers, threads=args.threads)
            warm_up(base_url, seeded, args.workers)
            runs = {}
            for users in args.users:
                runs[str(users)] = run_locust(locust, base_url, users, args.seconds, targets, site.folder, args.think)
            at_goal = runs.get("50", {}).get("endpoints", {})
            checked = {name: stats for name, stats in at_goal.items() if name != "Aggregated"}
            result = {
                "benchmark": "api_load",
                "machine": machine(),
                "set_up": {
                    "database": "postgresql",
                    "broker": "redis" if broker else "filesystem",
                    "gunicorn": {"workers": args.workers, "threads": args.threads},
                    "patients": args.patients,
                    "analyses": 2 * args.patients,
                    "image_series": FRAME_SERIES,
                    "locust_seconds_per_run": args.seconds,
                    "think_seconds": args.think,
                    "load_generator": "locust on the same machine",
                },
                "runs_by_users": runs,
                "goal": {
                    "p95_ms_at_50_users": GOAL_P95_MS,
                    "met": bool(checked)
                    and all((s["p95_ms"] or 0) <= GOAL_P95_MS and s["errors"] == 0 for s in checked.values()),
                },
                "notes": notes,
            }
            if any(run["error_messages"] for run in runs.values()):
                result["server_log_tail"] = site.log("gunicorn")[-2000:]
    finally:
        if broker:
            import redis

            redis.Redis(host=REDIS[0], port=REDIS[1], db=REDIS_DB).delete(queue)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
