"""Login throttling: too many failed logins for one user name, or from one address, lock further tries.

The failures are the audit log's LOGIN_FAILED events, so the count is shared by every web process and
survives restarts. A lock lifts by itself `LOGIN_LOCKOUT_MINUTES` after the last counted failure.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from .choices import AuditAction
from .models import AuditEvent


def failures_since(username: str, ip_address: str | None):
    """LOGIN_FAILED events within the lock-out window for this user name or this address."""
    since = timezone.now() - timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)
    who = Q(username__iexact=username) if username else Q(pk__in=[])
    if ip_address:
        who |= Q(ip_address=ip_address)
    return AuditEvent.objects.filter(who, action=AuditAction.LOGIN_FAILED, created__gte=since)


def is_locked(username: str, ip_address: str | None) -> bool:
    """Whether another login try for this user name from this address must be refused now."""
    return failures_since(username, ip_address).count() >= settings.LOGIN_MAX_FAILURES


LOCKED_MESSAGE = (
    "Too many failed logins for this account or from this address. Try again in {minutes} minutes, "
    "or ask your team admin to check the account."
)


def locked_message() -> str:
    return LOCKED_MESSAGE.format(minutes=settings.LOGIN_LOCKOUT_MINUTES)
