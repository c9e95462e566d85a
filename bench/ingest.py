"""Ingest throughput (instances/s) for a 150-slice CT series: local import and HTTP upload; prints JSON.

    python bench/ingest.py [--repeats 3] [--slices 150] [--database-url postgres://postgres@127.0.0.1:5432/covidsite_bench]
    python bench/ingest.py --associations 3  # the listener fed over 3 associations at once
    python bench/ingest.py --sqlite            # the laptop default instead of PostgreSQL

The series is a synthetic chest CT (analysis.phantoms, 512 x 512, 2 mm slices, uncompressed DICOM,
~0.5 MB a file) written once per repeat under a new patient, so each ingest stores everything anew.
Timed per repeat:

* `ingest_paths` (what `manage.py import_dicom` and the demo call): read and check every header,
  order the slices, copy the files into the store, write the rows in one transaction, queue the analysis;
* an HTTP upload of the same files (`POST /api/uploads/`, token authentication, multipart) to
  gunicorn on loopback, timed at the client from the first byte sent to the report received
  (after warm-up requests: a gunicorn worker's first request imports the whole site, seconds).

Everything runs against a private database (created and dropped) and a temporary media folder;
the analysis queue is the filesystem broker in that folder (no worker: analyses are queued, not run).
Goal: >= 200 instances/s.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.services import DEFAULT_DATABASE_URL, LOOPBACK, ROOT, BenchSite, free_port, machine, wait_for_port

GOAL_INSTANCES_PER_SECOND = 200


def write_series(folder: Path, slices: int, patient_id: str) -> list[Path]:
    from datetime import date

    from analysis.phantoms import Severity, make_phantom, random_spec
    from analysis.pipeline.volume import write_dicom_series

    spacing = 2.0
    phantom = make_phantom(
        random_spec(3, Severity.MODERATE),
        slice_thickness_mm=spacing,
        pixel_spacing_mm=0.75,
        matrix=512,
        scan_length_mm=slices * spacing,
    )
    return write_dicom_series(
        phantom.volume, folder, patient_id=patient_id, study_date=date(2026, 1, 5), series_description="Chest 2 mm"
    )


def time_ingest_paths(team, folder: Path) -> dict:
    from patients.ingest import ingest_paths

    started = time.perf_counter()
    upload = ingest_paths(team, [folder])
    seconds = time.perf_counter() - started
    if upload.refused_count:
        raise RuntimeError(f"the benchmark series was refused: {upload.report['refused'][:3]}")
    return {"seconds": seconds, "instances": upload.accepted_count}


def time_http_upload(base_url: str, token: str, paths: list[Path]) -> dict:
    import requests

    files = [("files", (path.name, path.read_bytes(), "application/dicom")) for path in paths]
    started = time.perf_counter()
    response = requests.post(
        f"{base_url}/api/uploads/", files=files, headers={"Authorization": f"Token {token}"}, timeout=300
    )
    seconds = time.perf_counter() - started
    if response.status_code != 201:
        raise RuntimeError(f"the upload answered {response.status_code}: {response.text[:500]}")
    body = response.json()
    if body["refused_count"]:
        raise RuntimeError(f"the uploaded series was refused: {body['report']['refused'][:3]}")
    return {"seconds": seconds, "instances": body["accepted_count"]}


def start_listener(site: BenchSite, team_slug: str, quiet_seconds: float) -> int:
    """`manage.py dicom_listener` in its own process on a free loopback port; returns the port."""
    port = free_port()
    command = [sys.executable, "manage.py", "dicom_listener", "--team", team_slug, "--host", LOOPBACK]
    command += ["--port", str(port), "--quiet-seconds", str(quiet_seconds)]
    wait_for_port(port, site.spawn(command, "dicom-listener"))
    return port


def time_dicom_listener(
    site: BenchSite, port: int, paths: list[Path], quiet_seconds: float, associations: int = 1
) -> dict:
    """C-STORE the series into the listener over one association (or several at once, as some PACS do).

    Two figures: until the last image is acknowledged (what the sender waits for), and until the
    series is ingested, less the quiet period the listener waits for before it ingests.
    """
    from pydicom import dcmread
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage

    from patients.models import Upload

    logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # one line per image otherwise
    datasets = [dcmread(path) for path in paths]  # read before the clock starts, as a PACS holds them
    before = set(Upload.objects.filter(channel="dicom").values_list("pk", flat=True))
    sender = AE(ae_title="BENCH")
    sender.add_requested_context(CTImageStorage, str(datasets[0].file_meta.TransferSyntaxUID))

    def push(part: list) -> None:
        association = sender.associate(LOOPBACK, port, ae_title="COVIDSITE")
        if not association.is_established:
            raise RuntimeError(f"the DICOM listener refused the association: {site.log('dicom-listener')}")
        try:
            for dataset in part:
                status = association.send_c_store(dataset)
                if not status or status.Status != 0:
                    raise RuntimeError(f"C-STORE answered {status}: {site.log('dicom-listener')}")
        finally:
            association.release()

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=associations) as pool:
        # Every image is sent once; list() re-raises a failed push.
        list(pool.map(push, [datasets[n::associations] for n in range(associations)]))
    acknowledged = time.perf_counter() - started
    deadline = time.monotonic() + quiet_seconds + 120
    while time.monotonic() < deadline:
        upload = Upload.objects.filter(channel="dicom").exclude(pk__in=before).first()
        if upload is not None:
            break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"the received series was not ingested within 120 s: {site.log('dicom-listener')}")
    ingested = time.perf_counter() - started - quiet_seconds
    if upload.accepted_count != len(paths):
        raise RuntimeError(f"the listener's ingest accepted {upload.accepted_count} of {len(paths)}: {upload.report}")
    return {"seconds": acknowledged, "instances": len(paths), "seconds_to_ingested": ingested}


def summary(samples: list[dict], megabytes: float) -> dict:
    seconds = [s["seconds"] for s in samples]
    instances = samples[0]["instances"]
    median = statistics.median(seconds)
    return {
        "instances": instances,
        "seconds_median": round(median, 3),
        "seconds_all": [round(s, 3) for s in seconds],
        "instances_per_second": round(instances / median, 1),
        "megabytes_per_second": round(megabytes / median, 1),
        "meets_goal": instances / median >= GOAL_INSTANCES_PER_SECOND,
    } | _ingested(samples, instances)


def _ingested(samples: list[dict], instances: int) -> dict:
    if "seconds_to_ingested" not in samples[0]:
        return {}
    median = statistics.median(s["seconds_to_ingested"] for s in samples)
    return {
        "seconds_to_ingested_median": round(median, 3),
        "instances_per_second_ingested": round(instances / median, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--slices", type=int, default=150)
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="a covidsite_bench* database to create")
    parser.add_argument("--sqlite", action="store_true", help="use a SQLite file in the temporary folder instead")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers for the HTTP upload")
    parser.add_argument("--quiet-seconds", type=float, default=1.0, help="the DICOM listener's quiet period")
    parser.add_argument("--associations", type=int, default=1, help="DICOM associations that push the series at once")
    args = parser.parse_args()
    if not 1 <= args.repeats <= 20 or not 20 <= args.slices <= 1000 or not 1 <= args.associations <= 8:
        parser.error("--repeats must be 1..20, --slices 20..1000 and --associations 1..8")

    database = None if args.sqlite else args.database_url
    with BenchSite(database) as site:
        from django.contrib.auth import get_user_model
        from rest_framework.authtoken.models import Token

        from patients.choices import Role
        from patients.models import Membership, Team

        team = Team.objects.create(name="Bench", slug="bench")
        user = get_user_model().objects.create_user(username="bench-clinician", password="bench-password-9")
        Membership.objects.create(user=user, team=team, role=Role.CLINICIAN)
        token = Token.objects.create(user=user).key

        sources = site.folder / "sources"
        local, http, pushed = [], [], []
        listener_port = 0
        listener_exists = (ROOT / "patients" / "management" / "commands" / "dicom_listener.py").exists()
        megabytes = 0.0
        base_url = site.start_gunicorn(workers=args.workers)
        site.warm_up(base_url, workers=args.workers)
        for repeat in range(args.repeats):
            paths = write_series(sources / f"local-{repeat}", args.slices, f"BENCH-LOCAL-{repeat}")
            megabytes = sum(p.stat().st_size for p in paths) / 1024**2
            local.append(time_ingest_paths(team, sources / f"local-{repeat}"))
            paths = write_series(sources / f"http-{repeat}", args.slices, f"BENCH-HTTP-{repeat}")
            http.append(time_http_upload(base_url, token, paths))
            if listener_exists:
                paths = write_series(sources / f"dicom-{repeat}", args.slices, f"BENCH-DICOM-{repeat}")
                listener_port = listener_port or start_listener(site, team.slug, args.quiet_seconds)
                pushed.append(time_dicom_listener(site, listener_port, paths, args.quiet_seconds, args.associations))

        result = {
            "benchmark": "ingest",
            "machine": machine(),
            "database": "postgresql" if database else "sqlite",
            "series": {
                "slices": args.slices,
                "matrix": [512, 512],
                "slice_mm": 2.0,
                "megabytes": round(megabytes, 1),
            },
            "repeats": args.repeats,
            "ingest_paths": summary(local, megabytes),
            "http_upload": summary(http, megabytes) | {"gunicorn_workers": args.workers},
            "dicom_listener": (
                summary(pushed, megabytes) | {"quiet_seconds": args.quiet_seconds, "associations": args.associations}
                if pushed
                else "not timed: the project has no DICOM listener"
            ),
            "goal_instances_per_second": GOAL_INSTANCES_PER_SECOND,
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
