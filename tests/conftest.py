"""Shared fixtures: named actors in two teams, and the real CT data when it is present.

Permission tests read like sentences: `clinician` and `colleague` share team A with `team_admin`
and `viewer`; `outsider` is a clinician of team B.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from patients.choices import Role

CTDATA = Path(__file__).resolve().parent.parent.parent / "shared" / "ctdata"
PASSWORD = "correct-horse-battery-9"


def ctdata_path(*parts: str) -> Path:
    """Path inside ../shared/ctdata, skipping the test (with the reason) when it is absent."""
    path = CTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real CT data not available: {path} is missing (../shared/ctdata is not beside the project)")
    return path


@lru_cache(maxsize=12)
def analysed_real_scan(case: str, slices_per_slab: int = 1):
    """(volume, result of the worker's default pipeline) of a COVID-CT-MD scan, optionally in thick slabs.

    Cached for the whole test run: several evidence modules read the same four scans, and each analysis
    of a 2 mm scan takes tens of seconds on two cores.
    """
    from analysis.execute import default_pipeline
    from analysis.pipeline.volume import load_volume, to_thick_slabs

    volume = load_volume(ctdata_path("covid-ct-md", case))
    if slices_per_slab > 1:
        volume = to_thick_slabs(volume, slices_per_slab)
    return volume, default_pipeline(volume)


def make_user(username: str, team, role: str):
    from django.contrib.auth import get_user_model

    from patients.models import Membership

    user = get_user_model().objects.create_user(username=username, password=PASSWORD)
    if team is not None:
        Membership.objects.create(user=user, team=team, role=role)
    return user


@pytest.fixture
def team_a(db):
    from patients.models import Team

    return Team.objects.create(name="Team A", slug="team-a")


@pytest.fixture
def team_b(db):
    from patients.models import Team

    return Team.objects.create(name="Team B", slug="team-b")


@pytest.fixture
def team_admin(team_a):
    return make_user("alice-admin", team_a, Role.ADMIN)


@pytest.fixture
def clinician(team_a):
    return make_user("carl-clinician", team_a, Role.CLINICIAN)


@pytest.fixture
def colleague(team_a):
    return make_user("cora-colleague", team_a, Role.CLINICIAN)


@pytest.fixture
def viewer(team_a):
    return make_user("vera-viewer", team_a, Role.VIEWER)


@pytest.fixture
def outsider(team_b):
    return make_user("oscar-outsider", team_b, Role.CLINICIAN)


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    """Every test stores files in its own folder."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
