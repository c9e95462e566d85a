"""`manage.py import_dicom`: prints what was stored and refused; fails when nothing was accepted."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from patients.models import Series, Upload
from tests.patients.scans import ct_series


def run(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("import_dicom", *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_the_command_imports_a_folder_and_reports_each_refusal(team_a, tmp_path):
    ct_series(tmp_path / "chest", patient_id="CLI-1", slices=6, description="Thorax")
    (tmp_path / "chest" / "readme.txt").write_text("not a scan")

    out, err = run(str(tmp_path / "chest"), "--team", "team-a")

    series = Series.objects.get()
    assert f"series {series.pk} created: patient CLI-1, 2024-03-01, Thorax, 6 slices, ready" in out
    assert f"upload {Upload.objects.get().pk}: 7 files, 6 accepted, 1 refused" in out
    assert "refused chest/readme.txt: not a DICOM file" in err

    again, _ = run(str(tmp_path / "chest"), "--team", "team-a", "--patient", "CLI-2")
    assert "already stored" in again
    assert Series.objects.count() == 1


def test_the_command_fails_when_nothing_is_accepted(team_a, tmp_path):
    ct_series(tmp_path, slices=1)

    with pytest.raises(CommandError, match=r"nothing was imported \(upload \d+: 1 files, 0 accepted, 1 refused\)"):
        run(str(tmp_path), "--team", "team-a")


def test_the_command_names_the_teams_when_the_slug_is_wrong(team_a, tmp_path):
    with pytest.raises(CommandError, match=r"no team with slug 'nope' \(teams: team-a\)"):
        run(str(tmp_path), "--team", "nope")
