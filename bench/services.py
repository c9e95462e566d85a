"""What a benchmark starts for itself: its own database and media folder, and gunicorn on loopback.

`BenchSite` points this process's Django (and any server it starts) at a private folder and, for
PostgreSQL, a database of its own that it creates and drops, so a benchmark never touches a real
site's data. Every wait has a deadline, servers listen on 127.0.0.1 only, and `close()` stops what
was started. Used by bench/ingest.py and bench/api_load.py.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/covidsite_bench"
START_TIMEOUT = 60.0


def reachable(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen | None = None, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode} before listening on port {port}")
        if reachable(LOOPBACK, port, timeout=0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listened on {LOOPBACK}:{port} within {timeout:.0f} s")


def machine() -> dict:
    """What the figures were taken on."""
    import platform

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gb = round(pages / 1024**3, 1)
    except (ValueError, OSError):
        pass
    return {
        "cpu_count": os.cpu_count(),
        "cpu": model or platform.processor() or platform.machine(),
        "memory_gb": memory_gb,
        "python": platform.python_version(),
        "note": "other processes may have shared these CPUs while the figures were taken",
    }


class BenchSite:
    """A private site: temporary folder (media, SQLite or the filesystem broker), own database, optional gunicorn."""

    def __init__(self, database_url: str | None, *, broker_url: str | None = None, keep: bool = False) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="covidsite-bench-"))
        self.database_url = database_url
        self.keep = keep
        self.gunicorn: subprocess.Popen | None = None
        self.processes: list[subprocess.Popen] = []
        self.port: int | None = None
        self._created_database = False
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "covidsite.settings",
            "COVIDSITE_VAR_DIR": str(self.folder),
            "MEDIA_ROOT": str(self.folder / "media"),
            "DEBUG": "false",
            "SECRET_KEY": secrets.token_hex(32),
            "ALLOWED_HOSTS": LOOPBACK,
            # Plain HTTP on loopback: no redirect to HTTPS, cookies without the secure flag.
            "SECURE_SSL_REDIRECT": "false",
            "SESSION_COOKIE_SECURE": "false",
            "CSRF_COOKIE_SECURE": "false",
            "LOGIN_MAX_FAILURES": "1000",
        }
        if database_url:
            self.env["DATABASE_URL"] = database_url
        else:
            self.env.pop("DATABASE_URL", None)
        if broker_url:
            self.env["CELERY_BROKER_URL"] = broker_url
        else:
            self.env.pop("CELERY_BROKER_URL", None)

    def __enter__(self) -> BenchSite:
        try:
            if self.database_url:
                self._create_database()
            os.environ.clear()
            os.environ.update(self.env)
            sys.path.insert(0, str(ROOT))
            import django
            from django.core.management import call_command

            django.setup()
            call_command("migrate", verbosity=0)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- database --

    def _admin_url(self) -> tuple[str, str]:
        parts = urlsplit(self.database_url)
        name = parts.path.lstrip("/")
        if not name.startswith("covidsite_bench"):
            raise ValueError(f"the benchmark drops and recreates its database: name it covidsite_bench*, not {name!r}")
        return urlunsplit(parts._replace(scheme="postgresql", path="/postgres")), name

    def _create_database(self) -> None:
        import psycopg

        admin, name = self._admin_url()
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            connection.execute(f'CREATE DATABASE "{name}"')
        self._created_database = True

    def _drop_database(self) -> None:
        import psycopg
        from django.db import connections

        connections.close_all()
        admin, name = self._admin_url()
        with psycopg.connect(admin, autocommit=True, connect_timeout=10) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # -- web server --

    def spawn(self, command: list[str], name: str) -> subprocess.Popen:
        """Start a server process with the site's environment; its output goes to <folder>/<name>.log."""
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - kept open for the process's life
        # A process group of its own: close() stops it and its children (gunicorn's workers) together.
        process = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.processes.append(process)
        return process

    def start_gunicorn(self, *, workers: int, threads: int = 1) -> str:
        """Start gunicorn on a free loopback port; returns its base URL."""
        self.port = free_port()
        command = [
            str(Path(sys.executable).parent / "gunicorn"),
            "covidsite.wsgi:application",
            "--bind",
            f"{LOOPBACK}:{self.port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--timeout",
            "60",
            "--log-level",
            "warning",
        ]
        self.gunicorn = self.spawn(command, "gunicorn")
        wait_for_port(self.port, self.gunicorn)
        return f"http://{LOOPBACK}:{self.port}"

    def warm_up(self, base_url: str, *, workers: int, rounds: int = 3) -> None:
        """Make every gunicorn worker import the whole site (its first request loads the URL modules: seconds)."""
        from concurrent.futures import ThreadPoolExecutor

        import requests

        def probe(_: int) -> int:
            return requests.get(f"{base_url}/health/", timeout=60).status_code

        with ThreadPoolExecutor(max_workers=workers * 2) as pool:
            for _ in range(rounds):
                codes = set(pool.map(probe, range(workers * 4)))
                if codes != {200}:
                    raise RuntimeError(f"the warm-up requests answered {sorted(codes)}: {self.log('gunicorn')}")

    def log(self, name: str) -> str:
        """The end of a spawned process's output (for error messages)."""
        path = self.folder / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def close(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=10)
        self.processes.clear()
        self.gunicorn = None
        if self._created_database and not self.keep:
            self._drop_database()
            self._created_database = False
        if not self.keep:
            shutil.rmtree(self.folder, ignore_errors=True)
