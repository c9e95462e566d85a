"""Deployment files parse, and the health endpoint answers."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_docker_compose_file_is_valid_and_has_the_whole_stack():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian package docker-compose) is not installed: cannot parse the file")
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config", "--services"],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "compose-config-check"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) >= {"postgres", "redis", "web", "worker", "migrate"}


def test_docker_compose_refuses_to_start_without_a_secret_key():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose (Debian package docker-compose) is not installed: cannot parse the file")
    env = {k: v for k, v in os.environ.items() if k != "SECRET_KEY"}
    result = subprocess.run(
        ["docker-compose", "-f", "docker-compose.yml", "config"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    assert "set SECRET_KEY" in result.stderr


def test_health_endpoint_reports_database_ok(client, db):
    response = client.get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ci_script_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./dev test" in readme
    assert ci.rstrip().endswith("exec ./dev test")


def test_the_image_copies_every_app_the_settings_install():
    from django.conf import settings

    dockerfile = (ROOT / "Dockerfile").read_text()
    ours = [app for app in settings.INSTALLED_APPS if (ROOT / app).is_dir()]
    missing = [app for app in ours if f"COPY {app} {app}" not in dockerfile]
    assert ours, "no project apps found"
    assert missing == [], f"the Dockerfile does not copy {missing}: the image would fail to start"
