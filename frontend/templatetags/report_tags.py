"""Template helpers of the report pages: the matched phrase highlighted in its report."""

from __future__ import annotations

from django import template
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString

register = template.Library()


@register.simple_tag
def highlight(text: str, start: int | None, end: int | None) -> SafeString:
    """The report text, escaped, with the span [start, end) in a <mark>; the plain text without a valid span."""
    text = text or ""
    if start is None or end is None or not 0 <= start < end <= len(text):
        return escape(text)
    return format_html("{}<mark>{}</mark>{}", text[:start], text[start:end], text[end:])


@register.filter
def signed_percent(value: float | None, digits: int = 0) -> str:
    """0.25 -> "+25 %"; infinity (a rise from zero) -> "new"; None -> an en dash."""
    if value is None:
        return "\u2013"
    if value in (float("inf"), float("-inf")):
        return "new" if value > 0 else "gone"
    return f"{value * 100:+.{int(digits)}f} %"


@register.filter
def signed(value: float | None, digits: int = 1) -> str:
    """A change with its sign: +1.5, -12.0; None -> an en dash."""
    if value is None:
        return "\u2013"
    return f"{float(value):+.{int(digits)}f}"


@register.filter
def cell(table, key: str) -> int:
    """table.as_dict()-style lookup in templates: {{ row|cell:"increase" }}."""
    return table.get(key, 0) if isinstance(table, dict) else 0


@register.simple_tag
def sparkline(values: list[float] | None, width: int = 90, height: int = 22) -> SafeString:
    """A small inline SVG line of a POI course (oldest first), the last point marked; empty under two points."""
    points = [v for v in values or [] if v is not None]
    if len(points) < 2:
        return format_html("")
    top = max(points) or 1.0
    step = (width - 4) / (len(points) - 1)
    xy = [(2 + i * step, height - 2 - (v / top) * (height - 4)) for i, v in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
    label = "POI course: " + ", ".join(f"{v * 100:.1f} %" for v in points)
    return format_html(
        '<svg class="sparkline" width="{}" height="{}" viewBox="0 0 {} {}" role="img" aria-label="{}">'
        '<polyline points="{}" fill="none" stroke="#c2410c" stroke-width="1.5"/>'
        '<circle cx="{}" cy="{}" r="2.2" fill="#c2410c"/></svg>',
        width,
        height,
        width,
        height,
        label,
        line,
        f"{xy[-1][0]:.1f}",
        f"{xy[-1][1]:.1f}",
    )
