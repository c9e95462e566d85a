"""`manage.py import_dicom PATH [PATH ...] --team SLUG [--patient ID]`: import scans from disk."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from patients.ingest import ingest_paths
from patients.models import Team


class Command(BaseCommand):
    help = (
        "Import DICOM files, folders (recursively), .zip archives and NIfTI volumes into a team. "
        "Prints each series stored and each file refused; fails when nothing was accepted."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("paths", nargs="+", type=Path, help="files, folders or .zip archives")
        parser.add_argument("--team", required=True, help="slug of the team that owns the patients")
        parser.add_argument(
            "--patient", default=None, help="patient identifier to file everything under (required for NIfTI)"
        )

    def handle(self, *args, paths: list[Path], team: str, patient: str | None, **options) -> None:
        try:
            owner = Team.objects.get(slug=team)
        except Team.DoesNotExist:
            known = ", ".join(Team.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no team with slug {team!r} (teams: {known})") from None
        try:
            upload = ingest_paths(owner, paths, channel="cli", patient_identifier=patient)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        report = upload.report
        for entry in report.get("series", []):
            if entry["created"]:
                verb = "created"
            elif entry["added_instances"]:
                verb = f"extended by {entry['added_instances']} slices"
            else:
                verb = "already stored"
            self.stdout.write(
                f"series {entry['id']} {verb}: patient {entry['patient']}, {entry['study_date'] or 'no date'}, "
                f"{entry['description'] or entry['series_instance_uid']}, {entry['slices']} slices, {entry['status']}"
            )
        for refusal in report.get("refused", []):
            self.stderr.write(f"refused {refusal['file']}: {refusal['reason']}")
        for note in report.get("notes", []):
            self.stdout.write(f"note: {note}")
        summary = (
            f"upload {upload.pk}: {upload.file_count} files, {upload.accepted_count} accepted, "
            f"{upload.refused_count} refused"
        )
        if upload.accepted_count == 0:
            raise CommandError(f"nothing was imported ({summary})")
        self.stdout.write(self.style.SUCCESS(summary))
