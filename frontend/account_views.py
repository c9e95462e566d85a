"""The signed-in user's account page: teams and roles, password change, and the personal API token.

A token is shown once, in the response that creates it, never again (it is not put in a message, which
would travel in a cookie). Creating a new token replaces the old one; revoking deletes it, so scripts
using it stop working at once.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST
from rest_framework.authtoken.models import Token

from audit.choices import AuditAction
from audit.log import record

from . import queries


def _page(request: HttpRequest, *, new_key: str | None = None) -> HttpResponse:
    token = Token.objects.filter(user=request.user).first()
    context = {"memberships": queries.memberships(request.user), "token": token, "new_key": new_key}
    response = render(request, "frontend/account.html", context)
    response["Cache-Control"] = "no-store"
    return response


@login_required
@require_GET
def account(request: HttpRequest) -> HttpResponse:
    return _page(request)


@login_required
@require_POST
def create_token(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        replaced = Token.objects.filter(user=request.user).delete()[0] > 0
        token = Token.objects.create(user=request.user)
    record(request, AuditAction.TOKEN, summary="API token replaced" if replaced else "API token created")
    return _page(request, new_key=token.key)


@login_required
@require_POST
def revoke_token(request: HttpRequest) -> HttpResponse:
    if Token.objects.filter(user=request.user).delete()[0]:
        record(request, AuditAction.TOKEN, summary="API token revoked")
    return redirect("account")
