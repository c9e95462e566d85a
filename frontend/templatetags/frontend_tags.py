"""Template helpers for the pages: the header's teams and roles, and number formats with units."""

from __future__ import annotations

from django import template

from frontend import queries
from frontend.status import stage_label as _stage_label
from patients.choices import WRITE_ROLES

register = template.Library()

DASH = "\u2013"  # en dash: shown where a value is missing


@register.simple_tag(takes_context=True)
def header_info(context) -> dict:
    """The signed-in user's teams and roles, and whether to show the Upload link (one query per page)."""
    request = context.get("request")
    if request is None or not request.user.is_authenticated:
        return {"memberships": [], "can_upload": False}
    memberships = queries.memberships(request.user)
    return {"memberships": memberships, "can_upload": any(m.role in WRITE_ROLES for m in memberships)}


@register.filter
def percent(fraction: float | None, digits: int = 1) -> str:
    """0.1234 -> "12.3 %"; an empty value -> an en dash."""
    if fraction is None or fraction == "":
        return DASH
    return f"{float(fraction) * 100:.{int(digits)}f} %"


@register.filter
def number(value: float | None, digits: int = 1) -> str:
    """A float with fixed decimals; an empty value -> an en dash."""
    if value is None or value == "":
        return DASH
    return f"{float(value):.{int(digits)}f}"


@register.filter
def stage_label(stage: str) -> str:
    return _stage_label(stage)
