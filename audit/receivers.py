"""Audit events for logins, logouts and failed logins (Django's auth signals)."""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.dispatch import receiver

from .choices import AuditAction
from .log import record


@receiver(user_logged_in)
def _logged_in(sender, request, user, **kwargs) -> None:
    record(request, AuditAction.LOGIN, user=user)


@receiver(user_logged_out)
def _logged_out(sender, request, user, **kwargs) -> None:
    if user is not None:
        record(request, AuditAction.LOGOUT, user=user)


@receiver(user_login_failed)
def _login_failed(sender, credentials, request=None, **kwargs) -> None:
    username = str(credentials.get("username", ""))[:150]
    if getattr(request, "covidsite_login_locked", False):
        record(request, AuditAction.LOGIN_LOCKED, username=username, summary="login refused: locked out")
    else:
        record(request, AuditAction.LOGIN_FAILED, username=username, summary="wrong user name or password")
