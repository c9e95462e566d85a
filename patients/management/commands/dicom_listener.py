"""`manage.py dicom_listener --team SLUG [--port 11112] [--ae-title COVIDSITE] [--quiet-seconds N]`.

Runs the DICOM listener (C-ECHO, C-STORE of CT images) until stopped; received series are ingested
for the team once quiet for the quiet period, and analysed like uploads.
"""

from __future__ import annotations

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from patients.dicom_listener import DicomListener
from patients.models import Team


class Command(BaseCommand):
    help = "Receive CT series pushed by a scanner or PACS (C-STORE) and ingest them into a team."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--team", required=True, help="slug of the team that receives the images")
        parser.add_argument("--port", type=int, default=settings.DICOM_LISTENER_PORT, help="TCP port to listen on")
        parser.add_argument("--host", default="0.0.0.0", help="address to listen on")
        parser.add_argument("--ae-title", default=settings.DICOM_LISTENER_AE_TITLE, help="this listener's AE title")
        parser.add_argument(
            "--quiet-seconds",
            type=float,
            default=settings.DICOM_LISTENER_QUIET_SECONDS,
            help="a series is ingested once no image of it arrived for this long",
        )

    def handle(self, *args, team: str, port: int, host: str, ae_title: str, quiet_seconds: float, **options) -> None:
        try:
            owner = Team.objects.get(slug=team)
        except Team.DoesNotExist:
            known = ", ".join(Team.objects.values_list("slug", flat=True)) or "none"
            raise CommandError(f"no team with slug {team!r} (teams: {known})") from None
        if not 0 < port < 65536:
            raise CommandError(f"--port must be 1..65535, got {port}")
        try:
            listener = DicomListener(owner, port=port, host=host, ae_title=ae_title, quiet_seconds=quiet_seconds)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"listening as {ae_title} on {host}:{port} for team {owner.slug}; series are ingested after "
            f"{quiet_seconds:g} s without new images (Ctrl-C stops)"
        )
        listener.serve_forever()
