"""Write audit events. Views call `record` once per audited action; nothing here raises into the view.

The client address is the socket's peer unless the deployment says how many reverse proxies stand in
front of the application (`AUDIT_TRUSTED_PROXIES`); only then is X-Forwarded-For believed, counting from
its right end, so that a client cannot forge its address by sending the header itself.
"""

from __future__ import annotations

import ipaddress
import logging

from django.conf import settings
from django.db import models
from django.http import HttpRequest

from patients.models import Patient, Team

from .choices import AuditAction
from .models import AuditEvent

logger = logging.getLogger(__name__)


def client_address(request: HttpRequest | None) -> str | None:
    """The client's IP address as far as this deployment can know it; None when there is none."""
    if request is None:
        return None
    candidate = request.META.get("REMOTE_ADDR", "")
    proxies = settings.AUDIT_TRUSTED_PROXIES
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if proxies > 0 and len(forwarded) >= proxies:
        candidate = forwarded[-proxies]
    try:
        return str(ipaddress.ip_address(candidate))
    except ValueError:
        return None


def _patient_of(obj: models.Model | None) -> Patient | None:
    """The patient a record belongs to (patient, study, series, run, report ... anything with a path to one)."""
    if obj is None:
        return None
    if isinstance(obj, Patient):
        return obj
    for path in ("patient", "study.patient", "series.study.patient", "run.series.study.patient"):
        current: object = obj
        for part in path.split("."):
            current = getattr(current, part, None)
            if current is None:
                break
        if isinstance(current, Patient):
            return current
    return None


def record(
    request: HttpRequest | None,
    action: AuditAction | str,
    obj: models.Model | None = None,
    *,
    team: Team | None = None,
    summary: str = "",
    user=None,
    username: str = "",
) -> AuditEvent | None:
    """Append one event: who (the request's user unless given), what, on which record, from where.

    The team and patient are found from `obj` when not given. A failure to write is logged, never raised:
    the audited action has already happened and must not be reported as failed.
    """
    try:
        if user is None and request is not None and getattr(request, "user", None) is not None:
            user = request.user if request.user.is_authenticated else None
        patient = _patient_of(obj)
        if team is None:
            team = patient.team if patient is not None else getattr(obj, "team", None)
        return AuditEvent.objects.create(
            action=action,
            user=user,
            username=(user.get_username() if user is not None else username)[:150],
            team=team if isinstance(team, Team) else None,
            patient=patient,
            patient_identifier=patient.identifier if patient is not None else "",
            object_type=obj._meta.model_name if obj is not None else "",
            object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
            summary=summary[:300],
            ip_address=client_address(request),
            method=(request.method or "")[:8] if request is not None else "",
            path=request.path[:300] if request is not None else "",
        )
    except Exception:
        logger.exception("could not write an audit event (%s)", action)
        return None
