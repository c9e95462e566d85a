"""Plotly figures of the agreement page, written as plain JSON (`frontend.plotly_json`) and drawn by figures.js."""

from __future__ import annotations

import math

from analysis.progression import Change
from analysis.stats.agreement import Agreement

from .plotly_json import axis_title, figure, scatter

REPORT_COLOURS = {
    "progression": "#c2410c",
    "regression": "#1d7a46",
    "stable": "#64748b",
    "partial": "#7c3aed",
    None: "#b8c2cc",
}
REPORT_NAMES = {
    "progression": "Report: progression",
    "regression": "Report: regression",
    "stable": "Report: stable",
    "partial": "Report: partial",
    None: "No report label",
}
LAYOUT = {
    "template_name": "plotly_white",
    "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#1b2633"},
    "paper_bgcolor": "#ffffff",
    "plot_bgcolor": "#ffffff",
}


def kappa_forest(results: list[Agreement]) -> dict | None:
    """Kappa with its 95 % CI per measure, binary and three-class side by side; None when none is defined."""
    traces = []
    for variant, colour, offset in (("binary", "#1f6fb2", -0.12), ("three_class", "#e0a526", 0.12)):
        rows = [
            (i, r.measure, getattr(r, variant)) for i, r in enumerate(results) if getattr(r, variant).kappa is not None
        ]
        if not rows:
            continue
        traces.append(
            scatter(
                [k.kappa for _, _, k in rows],
                [i + offset for i, _, _ in rows],
                mode="markers",
                name="Binary (increase vs decrease)" if variant == "binary" else "Three-class",
                marker={"color": colour, "size": 10},
                error_x={
                    "type": "data",
                    "symmetric": False,
                    # No bar where the interval is not estimable (one side used a single label).
                    "array": [0 if k.high is None else k.high - k.kappa for _, _, k in rows],
                    "arrayminus": [0 if k.low is None else k.kappa - k.low for _, _, k in rows],
                    "color": colour,
                },
                customdata=[[m, k.n, k.low, k.high] for _, m, k in rows],
                hovertemplate="%{customdata[0]}: κ = %{x:.2f} (95 % CI %{customdata[2]:.2f} to %{customdata[3]:.2f})"
                "<br>%{customdata[1]} pairs<extra></extra>",
            )
        )
    if not traces:
        return None
    return figure(
        traces,
        **LAYOUT,
        height=90 + 60 * len(results),
        margin={"l": 110, "r": 20, "t": 10, "b": 45},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        xaxis=axis_title("Cohen's kappa with 95 % CI", range=[-1.05, 1.05], zeroline=True),
        yaxis={
            "tickvals": list(range(len(results))),
            "ticktext": [r.measure for r in results],
            "autorange": "reversed",
            "showgrid": False,
        },
    )


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def change_scatter(items: list[Change]) -> dict | None:
    """ΔPOI against ΔiHU of every consecutive pair, coloured by the report's label; None without pairs."""
    if not items:
        return None
    traces = []
    for label, colour in REPORT_COLOURS.items():
        chosen = [
            c for c in items if c.report_label == label or (label is None and c.report_label not in REPORT_COLOURS)
        ]
        if not chosen:
            continue
        traces.append(
            scatter(
                [c.delta_poi_pp for c in chosen],
                [_finite(c.delta_ihu) for c in chosen],
                mode="markers",
                name=REPORT_NAMES[label],
                marker={"color": colour, "size": 9, "line": {"width": 1, "color": "#ffffff"}},
                customdata=[
                    [c.patient.identifier, c.earlier.study_date.isoformat(), c.later.study_date.isoformat()]
                    for c in chosen
                ],
                hovertemplate="%{customdata[0]}: %{customdata[1]} → %{customdata[2]}"
                "<br>ΔPOI %{x:+.1f} pp, ΔiHU %{y:+.0f} HU<extra></extra>",
            )
        )
    return figure(
        traces,
        **LAYOUT,
        height=340,
        margin={"l": 60, "r": 20, "t": 10, "b": 50},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        xaxis=axis_title("ΔPOI between consecutive scans (percentage points)", zeroline=True),
        yaxis=axis_title("ΔiHU (HU)", zeroline=True),
    )
