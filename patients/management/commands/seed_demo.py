"""`python manage.py seed_demo`: the demo team, its users (passwords printed) and synthetic patients."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from patients.demo import create_demo_patients, create_demo_team


class Command(BaseCommand):
    help = "Create the demo team with an admin, a clinician and a viewer, and import synthetic patients."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--patients", type=int, default=8, help="number of synthetic patients (default 8)")
        parser.add_argument("--matrix", type=int, default=256, help="in-plane matrix of the phantoms (default 256)")

    def handle(self, *args, patients: int, matrix: int, **options) -> None:
        team, credentials = create_demo_team()
        self.stdout.write(f"Generating and importing {patients} synthetic patients (2-5 scans each)...")
        created = create_demo_patients(team, patients=patients, matrix=matrix)
        self.stdout.write(f"Imported {len(created)} new patients into team '{team.name}' (slug {team.slug}).")
        self.stdout.write(self.style.SUCCESS("Demo users (passwords are new on every start):"))
        for cred in credentials:
            self.stdout.write(f"  {cred.username:16s} {cred.password:14s} ({cred.role})")
