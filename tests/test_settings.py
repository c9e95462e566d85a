"""Settings come from the environment, and a bad value stops start-up with a clear message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from covidsite.settings import env_bool, env_int, env_list, env_secret

ROOT = Path(__file__).resolve().parent.parent


def test_booleans_accept_the_usual_spellings_and_refuse_others(monkeypatch):
    monkeypatch.setenv("X_FLAG", "yes")
    assert env_bool("X_FLAG", False) is True
    monkeypatch.setenv("X_FLAG", "0")
    assert env_bool("X_FLAG", True) is False
    monkeypatch.setenv("X_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="X_FLAG must be a boolean"):
        env_bool("X_FLAG", False)


def test_integers_refuse_text(monkeypatch):
    monkeypatch.setenv("X_LIMIT", "12")
    assert env_int("X_LIMIT", 1) == 12
    monkeypatch.setenv("X_LIMIT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_LIMIT must be an integer"):
        env_int("X_LIMIT", 1)


def test_lists_split_on_commas_and_default_when_empty(monkeypatch):
    monkeypatch.setenv("X_HOSTS", " a.org, b.org ,")
    assert env_list("X_HOSTS", []) == ["a.org", "b.org"]
    monkeypatch.setenv("X_HOSTS", "")
    assert env_list("X_HOSTS", ["default"]) == ["default"]


def test_secret_read_from_file_variant(monkeypatch, tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret-from-file\n")
    monkeypatch.setenv("X_SECRET_FILE", str(secret))
    assert env_secret("X_SECRET", None) == "s3cret-from-file"
    monkeypatch.setenv("X_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(ImproperlyConfigured, match="cannot be read"):
        env_secret("X_SECRET", None)


def _settings_in_fresh_process(**env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DATABASE_URL"}}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; from django.conf import settings; settings.DATABASES; print('ok')"],
        cwd=ROOT,
        env={**full_env, "DJANGO_SETTINGS_MODULE": "covidsite.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_without_secret_key_refuses_to_start():
    result = _settings_in_fresh_process(DEBUG="false")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_malformed_database_url_is_reported():
    result = _settings_in_fresh_process(DATABASE_URL="nosuchdb://what")
    assert result.returncode != 0
    assert "DATABASE_URL is not a valid database URL" in result.stderr


def test_every_setting_read_from_the_environment_is_listed_in_env_example():
    import re

    source = (ROOT / "covidsite" / "settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|list|secret)\("([A-Z_]+)"', source))
    listed = set(re.findall(r"^([A-Z_]+)=", (ROOT / ".env.example").read_text(), flags=re.M))
    assert read - listed == set(), f"settings read but not documented in .env.example: {read - listed}"
