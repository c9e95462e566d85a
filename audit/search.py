"""Reading the audit log: a team's events filtered by user, action, patient and dates, and their CSV."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime, time

from django import forms
from django.db.models import QuerySet
from django.utils import timezone

from patients.models import Team

from .choices import AuditAction
from .models import AuditEvent

CSV_COLUMNS = ("time", "user", "action", "patient", "object", "object_id", "summary", "ip_address", "method", "path")


class AuditFilterForm(forms.Form):
    """The filters of the audit page and its CSV export (all optional)."""

    user = forms.CharField(required=False, max_length=150, label="User")
    action = forms.ChoiceField(required=False, choices=[("", "Any action"), *AuditAction.choices])
    patient = forms.CharField(required=False, max_length=64, label="Patient identifier")
    since = forms.DateField(required=False, label="From", widget=forms.DateInput(attrs={"type": "date"}))
    until = forms.DateField(required=False, label="Until", widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        data = super().clean()
        since, until = data.get("since"), data.get("until")
        if since and until and since > until:
            raise forms.ValidationError("“From” must not be after “Until”.")
        return data


def _start_of(day: date) -> datetime:
    return timezone.make_aware(datetime.combine(day, time.min))


def team_events(team: Team, filters: dict | None = None) -> QuerySet[AuditEvent]:
    """The team's events, newest first, narrowed by the cleaned filters of `AuditFilterForm`."""
    events = AuditEvent.objects.for_team(team).order_by("-created", "-id")
    filters = filters or {}
    if filters.get("user"):
        events = events.filter(username__icontains=filters["user"])
    if filters.get("action"):
        events = events.filter(action=filters["action"])
    if filters.get("patient"):
        events = events.filter(patient_identifier__icontains=filters["patient"])
    if filters.get("since"):
        events = events.filter(created__gte=_start_of(filters["since"]))
    if filters.get("until"):
        events = events.filter(created__lt=_start_of(filters["until"]) + timezone.timedelta(days=1))
    return events


def csv_rows(events: Iterable[AuditEvent]) -> Iterator[list[object]]:
    """The header, then one row per event (for a streaming download of a long log)."""
    yield list(CSV_COLUMNS)
    for event in events:
        yield [
            event.created.isoformat(),
            event.username,
            event.action,
            event.patient_identifier,
            event.object_type,
            event.object_id,
            event.summary,
            event.ip_address or "",
            event.method,
            event.path,
        ]
