"""Plotly figures as the plain JSON that plotly.js draws, built without `plotly.graph_objects`.

A `go.Figure` validates every property of every trace on each request and builds its validators on
first use in a process (seconds); the pages' figures have fixed shapes, so they are written as the
JSON itself. `figure` gives the same JSON `json.loads(go.Figure(...).to_json())` gave: the named
template embedded from plotly's own template file, numpy numbers as plain ones, NaN and ±inf as null.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.util import find_spec
from pathlib import Path

import numpy as np

# What go.Figure embeds when a figure names no template.
DEFAULT_TEMPLATE = "plotly"


@cache
def template(name: str) -> dict:
    """Plotly's template `name` as JSON, read once per process (shared: do not change it)."""
    # find_spec locates the plotly package without importing it.
    folder = Path(find_spec("plotly").origin).parent / "package_data" / "templates"
    return json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))


def trace(kind: str, **properties: object) -> dict:
    """One trace of type `kind` (scatter, box, mesh3d, ...) with plotly's own property names."""
    return {"type": kind, **properties}


def scatter(x: list, y: list, **properties: object) -> dict:
    return trace("scatter", x=x, y=y, **properties)


def line(colour: str, width: float, dash: str | None = None) -> dict:
    """A trace's line: colour, width and, when given, its dash pattern ("dot", "dash", ...)."""
    return {"color": colour, "width": width} | ({"dash": dash} if dash else {})


def axis_title(text: str, **properties: object) -> dict:
    """An axis with a title (and any other axis properties)."""
    return {"title": {"text": text}, **properties}


def figure(traces: list[dict], *, template_name: str = DEFAULT_TEMPLATE, **layout: object) -> dict:
    """The figure's JSON: traces and layout as JSON types, with the template embedded."""
    body = json.loads(json.dumps({"data": traces, "layout": layout}, default=_json_value), parse_constant=_null)
    body["layout"]["template"] = template(template_name)
    return body


def _json_value(value: object) -> object:
    # numpy scalars and arrays from the statistics and the meshes, as plotly's encoder writes them.
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable in a figure")


def _null(_constant: str) -> None:
    return None  # NaN, Infinity and -Infinity: plotly.js draws a gap
