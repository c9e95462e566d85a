"""Personal API tokens: created once and shown once, replaced, revoked; scripts stop at revocation."""

from __future__ import annotations

from django.urls import reverse
from rest_framework.authtoken.models import Token

from audit.choices import AuditAction
from audit.models import AuditEvent


def test_a_clinician_creates_uses_and_revokes_a_token(client, clinician):
    client.force_login(clinician)
    created = client.post(reverse("account-token-create"))
    key = Token.objects.get(user=clinician).key
    assert key in created.content.decode()
    assert created["Cache-Control"] == "no-store"
    assert key not in client.get(reverse("account")).content.decode()  # shown once only

    script = client.__class__()
    assert script.get("/api/patients/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 200

    client.post(reverse("account-token-revoke"))
    assert not Token.objects.filter(user=clinician).exists()
    assert script.get("/api/patients/", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401
    assert [e.summary for e in AuditEvent.objects.filter(action=AuditAction.TOKEN).order_by("id")] == [
        "API token created",
        "API token revoked",
    ]


def test_replacing_a_token_invalidates_the_old_one(client, viewer):
    client.force_login(viewer)
    client.post(reverse("account-token-create"))
    old = Token.objects.get(user=viewer).key
    client.post(reverse("account-token-create"))
    new = Token.objects.get(user=viewer).key
    assert new != old
    script = client.__class__()
    assert script.get("/api/patients/", HTTP_AUTHORIZATION=f"Token {old}").status_code == 401
    assert script.get("/api/patients/", HTTP_AUTHORIZATION=f"Token {new}").status_code == 200


def test_token_actions_need_a_post_and_a_login(client, clinician):
    assert client.post(reverse("account-token-create")).status_code == 302  # to the login page
    client.force_login(clinician)
    assert client.get(reverse("account-token-create")).status_code == 405
    assert not Token.objects.exists()
