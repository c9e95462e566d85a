"""The audit page of a team (team admins only) and its CSV export."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from frontend.downloads import csv_download
from frontend.queries import admin_team

from .choices import AuditAction
from .log import record
from .search import AuditFilterForm, csv_rows, team_events

EVENTS_PER_PAGE = 100


def _filtered(request: HttpRequest, team) -> tuple[AuditFilterForm, object]:
    form = AuditFilterForm(request.GET or None)
    filters = form.cleaned_data if form.is_bound and form.is_valid() else {}
    return form, team_events(team, filters)


@login_required
@require_GET
def audit_log(request: HttpRequest, slug: str) -> HttpResponse:
    team = admin_team(request.user, slug)
    form, events = _filtered(request, team)
    page = Paginator(events.select_related("user"), EVENTS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {"team": team, "form": form, "page": page, "query": query.urlencode()}
    return render(request, "audit/audit_log.html", context)


@login_required
@require_GET
def audit_log_csv(request: HttpRequest, slug: str) -> HttpResponse:
    team = admin_team(request.user, slug)
    _form, events = _filtered(request, team)
    record(request, AuditAction.EXPORT, team=team, summary="audit log as CSV")
    stamp = timezone.now().strftime("%Y%m%d-%H%M")
    return csv_download(csv_rows(events.iterator()), f"audit-{team.slug}-{stamp}.csv")
