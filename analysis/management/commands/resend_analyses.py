"""`manage.py resend_analyses`: send the analyses queued while the task queue was unreachable.

Workers do this by themselves whenever they (re)connect to the broker, and every successful send
does it too; this command is for a deployment that wants it on a schedule (cron) or by hand.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analysis.runs import RESEND_BATCH, resend_unsent, unsent_runs


class Command(BaseCommand):
    help = "Send the analysis runs that were queued while the task queue (broker) could not be reached."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--limit", type=int, default=RESEND_BATCH, help="at most this many runs per call")

    def handle(self, *args, limit: int, **options) -> None:
        if limit < 1:
            raise CommandError(f"--limit must be at least 1, got {limit}")
        sent = resend_unsent(limit=limit)
        waiting = unsent_runs().count()
        self.stdout.write(f"{sent} analysis run(s) sent, {waiting} still waiting for the task queue")
        if waiting and not sent:
            raise CommandError("the task queue is still unreachable: nothing was sent")
