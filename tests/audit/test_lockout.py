"""Login throttling: repeated failures lock the account name and the address for a while, then it lifts."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse

from audit.choices import AuditAction
from audit.models import AuditEvent
from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _three_tries(settings):
    settings.LOGIN_MAX_FAILURES = 3
    settings.LOGIN_LOCKOUT_MINUTES = 15


def _try(client, username: str, password: str, address: str = "192.0.2.10"):
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address)


def test_the_right_password_is_refused_after_too_many_failures_and_the_page_says_why(client, clinician):
    for _ in range(3):
        assert _try(client, clinician.username, "guess").status_code == 200
    response = _try(client, clinician.username, PASSWORD)
    assert response.status_code == 200  # the form again, not a redirect into the site
    assert "Too many failed logins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action=AuditAction.LOGIN_LOCKED, username=clinician.username).exists()


def test_an_address_that_guesses_many_names_is_locked_for_every_name(client, clinician, colleague):
    for name in ("admin", "root", "test"):
        _try(client, name, "guess", address="198.51.100.7")
    refused = _try(client, colleague.username, PASSWORD, address="198.51.100.7")
    assert "Too many failed logins" in refused.content.decode()
    # The same colleague from the ward's own computer is not affected.
    assert _try(client, colleague.username, PASSWORD, address="192.0.2.55").status_code == 302


def test_the_lock_lifts_after_the_window(client, clinician, monkeypatch):
    from django.utils import timezone

    for _ in range(3):
        _try(client, clinician.username, "guess")
    assert "Too many failed logins" in _try(client, clinician.username, PASSWORD).content.decode()
    later = timezone.now() + timedelta(minutes=16)
    monkeypatch.setattr("audit.lockout.timezone.now", lambda: later)
    assert _try(client, clinician.username, PASSWORD).status_code == 302


def test_a_locked_account_cannot_log_in_through_any_password_form(client, clinician):
    for _ in range(3):
        _try(client, clinician.username, "guess")
    # Django's own authenticate() (admin, browsable API) goes through the locking backend too.
    assert client.login(username=clinician.username, password=PASSWORD) is False


def test_failures_below_the_limit_do_not_lock(client, clinician):
    for _ in range(2):
        _try(client, clinician.username, "guess")
    assert _try(client, clinician.username, PASSWORD).status_code == 302
