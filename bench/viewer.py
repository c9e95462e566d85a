"""Study viewer load time on loopback: first image on screen and the whole series loaded; prints JSON.

    python bench/viewer.py [--slices 64] [--matrix 512] [--repeats 3] [--workers 2] [--threads 4]

Builds a throw-away site (SQLite database, media and collected static files in a temporary folder),
ingests a phantom series of `--slices` slices of `--matrix`^2 pixels with its overlays, serves it with
gunicorn + whitenoise (the production set-up) on 127.0.0.1, and opens the viewer in Debian's chromium
`--repeats` times with a cold browser cache, after one unmeasured opening that warms the freshly
started server (reported as `cold`). Times are milliseconds from the page's navigation start
(performance.now() in the page). Budget: first image <= 1500 ms, 64-slice series loaded <= 3000 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PASSWORD = "bench-viewer-password-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare(folder: Path, slices: int, matrix: int) -> int:
    """Migrate, collect static files and ingest the phantom; returns the series id."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("collectstatic", verbosity=0, interactive=False)
    from django.contrib.auth import get_user_model

    from patients.choices import Role
    from patients.models import Membership, Team
    from tests.frontend.viewer_data import make_viewer_phantom

    team = Team.objects.create(name="Bench", slug="bench")
    user = get_user_model().objects.create_user(username="bench", password=PASSWORD)
    Membership.objects.create(user=user, team=team, role=Role.VIEWER)
    built = make_viewer_phantom(team, folder / "dicom", slices=slices, matrix=matrix, patient_id="BENCH-1")
    return built.series.pk


def _measure(base: str, series_id: int, repeats: int) -> list[dict]:
    sys.path.insert(0, str(ROOT / "tests" / "frontend"))
    from playwright.sync_api import sync_playwright

    from tests.frontend.browser import CHROMIUM, CHROMIUM_ARGS

    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        for _ in range(repeats):
            context = browser.new_context(viewport={"width": 1280, "height": 800})  # a cold cache each time
            page = context.new_page()
            page.goto(f"{base}/login/")
            page.fill('input[name="username"]', "bench")
            page.fill('input[name="password"]', PASSWORD)
            page.click('button[type="submit"]')
            page.wait_for_url(f"{base}/")
            page.goto(f"{base}/series/{series_id}/viewer/")
            page.wait_for_selector('#viewer[data-all-loaded="true"]', timeout=120_000)
            timings = page.evaluate("window.covidViewer.timings")
            # When the image requests ran: separates the network and server from decoding and drawing.
            network = page.evaluate(
                """() => {
                    const all = performance.getEntriesByType('resource');
                    const images = all.filter((e) => e.name.includes('/instances/'));
                    const bundle = all.find((e) => e.name.endsWith('/viewer.js'));
                    return {
                        images_first_request: Math.min(...images.map((e) => e.startTime)),
                        images_last_response: Math.max(...images.map((e) => e.responseEnd)),
                        bundle_loaded: bundle ? bundle.responseEnd : null,
                    };
                }"""
            )
            timings.update(network)
            failed = page.get_attribute("#viewer", "data-failed-images")
            runs.append({**{k: round(v, 1) for k, v in timings.items()}, "failed_images": int(failed or 0)})
            context.close()
        browser.close()
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=64)
    parser.add_argument("--matrix", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="covidsite-bench-viewer-") as temporary:
        folder = Path(temporary)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "covidsite.settings",
            "COVIDSITE_VAR_DIR": str(folder / "var"),
            "MEDIA_ROOT": str(folder / "media"),
            "STATIC_ROOT": str(folder / "static"),
            "DEBUG": "false",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "SECRET_KEY": "bench-viewer-not-secret-" + "x" * 40,
            "CELERY_TASK_ALWAYS_EAGER": "false",
            # Plain HTTP on loopback: no HTTPS redirect, cookies over http.
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
        }
        env.pop("DATABASE_URL", None)
        os.environ.update(env)
        started = time.perf_counter()
        series_id = _prepare(folder, args.slices, args.matrix)
        prepare_s = time.perf_counter() - started

        port = _free_port()
        server = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "gunicorn"),
                "covidsite.wsgi",
                f"--workers={args.workers}",
                f"--threads={args.threads}",
                f"--bind=127.0.0.1:{port}",
                "--log-level=warning",
            ],
            cwd=ROOT,
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            cold, *runs = _measure(base, series_id, args.repeats + 1)
        finally:
            server.terminate()
            server.wait(timeout=10)

    first = statistics.median(r["firstImage"] for r in runs)
    loaded = statistics.median(r["allLoaded"] for r in runs)
    print(
        json.dumps(
            {
                "benchmark": "viewer",
                "slices": args.slices,
                "matrix": args.matrix,
                "server": f"gunicorn {args.workers} workers x {args.threads} threads, whitenoise, loopback",
                "cpu_count": os.cpu_count(),
                "machine": platform.machine(),
                "prepare_s": round(prepare_s, 1),
                "load_average": [round(v, 2) for v in os.getloadavg()],
                "cold": cold,
                "runs": runs,
                "first_image_ms_median": first,
                "all_loaded_ms_median": loaded,
                "budget_ms": {"first_image": 1500, "all_loaded": 3000},
                "within_budget": first <= 1500 and loaded <= 3000,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
