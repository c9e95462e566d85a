"""Plotly figures for the pages, built in Python and drawn in the browser by plotly.js.

Views pass the figure's JSON to the template (`json_script`); `figures.js` draws it. No figure is
drawn when the data it needs is absent.
"""

from __future__ import annotations

import json

import plotly.graph_objects as go

from analysis.choices import RunStatus
from analysis.models import AnalysisRun

GGO_COLOUR = "#e0a526"
CONSOLIDATION_COLOUR = "#c2410c"
LUNG_COLOUR = "#64748b"
PROBABILITY_COLOUR = "#7c3aed"


def _usable_slices(slice_metrics: object) -> list[dict]:
    """Per-slice entries that carry a position and the three areas (older or partial runs may not)."""
    needed = ("z_mm", "lung_area_mm2", "ggo_area_mm2", "consolidation_area_mm2")
    if not isinstance(slice_metrics, list):
        return []
    rows = [s for s in slice_metrics if isinstance(s, dict) and all(isinstance(s.get(k), int | float) for k in needed)]
    return sorted(rows, key=lambda s: s["z_mm"])


def slice_profile(run: AnalysisRun) -> dict | None:
    """Lung, GGO and consolidation area per slice along the body axis (cm²), or None without slice data."""
    rows = _usable_slices(run.slice_metrics)
    if len(rows) < 2:
        return None
    z = [s["z_mm"] for s in rows]
    cm2 = 1 / 100  # areas are stored in mm²

    def trace(key: str, name: str, colour: str, **kwargs) -> go.Scatter:
        return go.Scatter(
            x=z,
            y=[s[key] * cm2 for s in rows],
            name=name,
            line={"color": colour, "width": 1.5},
            hovertemplate=f"{name}: %{{y:.1f}} cm²<br>z = %{{x:.1f}} mm<extra></extra>",
            **kwargs,
        )

    traces = [
        trace("ggo_area_mm2", "Ground-glass", GGO_COLOUR, stackgroup="infection"),
        trace("consolidation_area_mm2", "Consolidation", CONSOLIDATION_COLOUR, stackgroup="infection"),
        trace("lung_area_mm2", "Lung", LUNG_COLOUR, mode="lines", line_dash="dot"),
    ]
    classified = [s for s in rows if isinstance(s.get("abnormal_probability"), int | float)]
    if classified:
        # The slice classifier's P(abnormal) on its own 0-1 axis, beside the areas it should follow.
        traces.append(
            go.Scatter(
                x=[s["z_mm"] for s in classified],
                y=[s["abnormal_probability"] for s in classified],
                name="P(abnormal slice)",
                yaxis="y2",
                mode="lines",
                line={"color": PROBABILITY_COLOUR, "width": 1.5},
                hovertemplate="P(abnormal) %{y:.2f}<br>z = %{x:.1f} mm<extra></extra>",
            )
        )
    figure = go.Figure(traces)
    figure.update_layout(
        height=300,
        margin={"l": 60, "r": 60 if classified else 20, "t": 10, "b": 50},
        paper_bgcolor="#ffffff",
        plot_bgcolor="#ffffff",
        font={"family": "system-ui, sans-serif", "size": 12, "color": "#1b2633"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "traceorder": "normal"},
        xaxis={"title": {"text": "Slice position along the body axis (mm, feet → head)"}, "gridcolor": "#e5e9ee"},
        yaxis={"title": {"text": "Area per slice (cm²)"}, "gridcolor": "#e5e9ee", "rangemode": "tozero"},
        yaxis2={
            "title": {"text": "P(abnormal slice)"},
            "overlaying": "y",
            "side": "right",
            "range": [0, 1],
            "tickvals": [0, 0.25, 0.5, 0.75, 1],
            "showgrid": False,
            "visible": bool(classified),
        },
        hovermode="x unified",
        template="plotly_white",
    )
    return json.loads(figure.to_json())  # plain JSON types, ready for json_script


def _study_run(study) -> tuple[AnalysisRun, object] | None:
    """The succeeded run that stands for a study: the one of its thinnest series (the most detailed scan)."""
    best = None
    for series in study.series.all():
        run = getattr(series, "latest_run", None)
        if run is None or run.status != RunStatus.SUCCEEDED or run.poi is None:
            continue
        key = (series.slice_thickness or float("inf"), -series.slice_count)
        if best is None or key < best[0]:
            best = (key, run, series)
    return None if best is None else (best[1], best[2])


def poi_timeline(patient) -> dict | None:
    """POI (%) and iHU per dated study of a patient whose studies/series/runs were prefetched by
    `frontend.queries.patient_detail`; None unless at least two dated studies have a result."""
    points = []
    for study in patient.studies.all():
        chosen = _study_run(study)
        if chosen is not None and study.study_date is not None:
            run, series = chosen
            points.append((study.study_date.isoformat(), run.poi * 100, run.ihu, series.description))
    if len(points) < 2:
        return None  # one point is no course; the study table already shows it
    points.sort()
    dates = [p[0] for p in points]
    figure = go.Figure(
        [
            go.Scatter(
                x=dates,
                y=[p[1] for p in points],
                name="POI (%)",
                mode="lines+markers",
                line={"color": CONSOLIDATION_COLOUR, "width": 2},
                marker={"size": 8},
                customdata=[p[3] for p in points],
                hovertemplate="%{x}<br>POI %{y:.1f} %<br>%{customdata}<extra></extra>",
            ),
            go.Scatter(
                x=dates,
                y=[p[2] for p in points],
                name="iHU",
                mode="lines+markers",
                yaxis="y2",
                line={"color": LUNG_COLOUR, "width": 1.5, "dash": "dot"},
                marker={"size": 6},
                hovertemplate="%{x}<br>iHU %{y:.0f}<extra></extra>",
            ),
        ]
    )
    figure.update_layout(
        height=260,
        margin={"l": 60, "r": 60, "t": 10, "b": 40},
        template="plotly_white",
        font={"family": "system-ui, sans-serif", "size": 12, "color": "#1b2633"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "traceorder": "normal"},
        xaxis={"title": {"text": "Study date"}, "type": "date", "tickformat": "%d %b %Y", "gridcolor": "#e5e9ee"},
        yaxis={"title": {"text": "POI (%)"}, "rangemode": "tozero", "gridcolor": "#e5e9ee"},
        yaxis2={"title": {"text": "iHU"}, "overlaying": "y", "side": "right", "showgrid": False, "tickformat": ".0f"},
        hovermode="closest",
    )
    return json.loads(figure.to_json())
