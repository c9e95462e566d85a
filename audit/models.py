"""The audit log: who viewed, exported, uploaded, changed or deleted which patient data, when and from where.

Rows are append-only for everybody using the application: `save` refuses to change a stored event and
`delete` refuses to remove one (the admin shows them read-only). Events keep copies of the user name and
the patient identifier, so they stay readable after a user or a record is gone.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from patients.models import Patient, Team, TeamScopedQuerySet

from .choices import AuditAction


class AppendOnlyError(RuntimeError):
    """An audit event was about to be changed or deleted."""


class AuditEventQuerySet(TeamScopedQuerySet):
    team_path = "team"

    def delete(self):  # bulk deletes would bypass Model.delete
        raise AppendOnlyError("audit events cannot be deleted")

    def update(self, **kwargs):
        raise AppendOnlyError("audit events cannot be changed")


class AuditEvent(models.Model):
    """One audited action. `team` is None for events that belong to no team (e.g. a failed login)."""

    created = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=16, choices=AuditAction.choices, db_index=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    username = models.CharField(max_length=150, blank=True, db_index=True)
    team = models.ForeignKey(Team, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    patient = models.ForeignKey(Patient, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    patient_identifier = models.CharField(max_length=64, blank=True)
    object_type = models.CharField(max_length=40, blank=True, help_text="e.g. series, study, upload, report")
    object_id = models.CharField(max_length=64, blank=True)
    summary = models.CharField(max_length=300, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True, db_index=True)
    method = models.CharField(max_length=8, blank=True)
    path = models.CharField(max_length=300, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-created", "-id"]
        indexes = [models.Index(fields=["team", "-created"], name="audit_team_created")]

    def __str__(self) -> str:
        return f"{self.created:%Y-%m-%d %H:%M} {self.username or '-'} {self.action} {self.object_type} {self.object_id}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise AppendOnlyError("audit events cannot be changed")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AppendOnlyError("audit events cannot be deleted")
