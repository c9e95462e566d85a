"""Plotly figures of the cohort page: cross-validated ROC curves (Table 2's models) and box plots by group.

Written as plain JSON like `frontend.figures`, drawn by `figures.js`; None when there is nothing to draw.
"""

from __future__ import annotations

from analysis.models import SeverityModel
from analysis.severity import GroupValues
from analysis.stats.severity import FEATURES

from .plotly_json import axis_title, figure, line, scatter, trace

CURVE_COLOURS = ["#c2410c", "#1f6fb2", "#7c3aed", "#1d7a46", "#8a5a00"]
SEVERE_COLOUR = "#b3261e"
NON_SEVERE_COLOUR = "#1f6fb2"
_LAYOUT = {
    "template_name": "plotly_white",
    "font": {"family": "system-ui, sans-serif", "size": 12, "color": "#1b2633"},
    "paper_bgcolor": "#ffffff",
    "plot_bgcolor": "#ffffff",
}


def roc_curves(models: list[SeverityModel]) -> dict | None:
    """One cross-validated ROC curve per model, with the chance diagonal and each Youden point."""
    if not models:
        return None
    traces = [scatter([0, 1], [0, 1], mode="lines", name="Chance", line=line("#94a3b8", 1, "dot"))]
    for colour, model in zip(CURVE_COLOURS * 2, models, strict=False):
        roc = model.metrics.get("roc", {})
        auc = model.metrics.get("auc")
        label = model.name.split(": ", 1)[-1]
        traces.append(
            scatter(
                roc.get("fpr", []),
                roc.get("tpr", []),
                mode="lines",
                name=f"{label} (AUC {auc:.2f})" if auc is not None else label,
                line={"color": colour, "width": 2, "shape": "hv"},
                hovertemplate="1 \u2212 specificity %{x:.2f}<br>sensitivity %{y:.2f}<extra>" + label + "</extra>",
            )
        )
        spec, sens = model.metrics.get("specificity"), model.metrics.get("sensitivity")
        if spec is not None and sens is not None:
            traces.append(
                scatter(
                    [1 - spec],
                    [sens],
                    mode="markers",
                    marker={"color": colour, "size": 9, "symbol": "circle-open", "line": {"width": 2}},
                    showlegend=False,
                    hovertemplate=f"{label}: Youden cut-off<br>sensitivity {sens:.2f}, specificity {spec:.2f}"
                    "<extra></extra>",
                )
            )
    return figure(
        traces,
        height=380,
        margin={"l": 60, "r": 20, "t": 10, "b": 50},
        legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom", "bgcolor": "#ffffffcc"},
        xaxis=axis_title("1 \u2212 specificity", range=[-0.01, 1.01], gridcolor="#e5e9ee"),
        yaxis=axis_title("Sensitivity", range=[-0.01, 1.01], gridcolor="#e5e9ee", scaleanchor="x"),
        **_LAYOUT,
    )


def _p_text(p: float | None) -> str:
    if p is None:
        return "p: \u2013"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def group_box_plot(group: GroupValues) -> dict | None:
    """Box plot of one bio-marker, severe against non-severe, with the Mann-Whitney p-value in the title."""
    if not group.severe and not group.non_severe:
        return None
    feature = FEATURES[group.feature]

    def box(values: list[float], name: str, colour: str) -> dict:
        return trace(
            "box",
            y=[v * feature.scale for v in values],
            name=f"{name} (n={len(values)})",
            boxpoints="all",
            jitter=0.4,
            pointpos=0,
            marker={"color": colour, "size": 5, "opacity": 0.7},
            line={"color": colour},
            hovertemplate=f"{feature.label} %{{y:.{feature.digits}f}} {feature.unit}<extra></extra>",
        )

    return figure(
        [box(group.non_severe, "Non-severe", NON_SEVERE_COLOUR), box(group.severe, "Severe", SEVERE_COLOUR)],
        height=320,
        margin={"l": 60, "r": 20, "t": 40, "b": 40},
        showlegend=False,
        title={"text": f"{feature.label} by group · Mann\u2013Whitney {_p_text(group.p_value)}", "font": {"size": 13}},
        yaxis=axis_title(f"{feature.label} ({feature.unit})", gridcolor="#e5e9ee"),
        **_LAYOUT,
    )
