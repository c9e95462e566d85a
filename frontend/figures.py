"""Plotly figures for the pages, built in Python and drawn in the browser by plotly.js.

Views pass the figure's JSON to the template (`json_script`); `figures.js` draws it. No figure is
drawn when the data it needs is absent. The JSON is written as plain dicts (`frontend.plotly_json`):
no plotly object is built per request.
"""

from __future__ import annotations

from analysis.models import AnalysisRun
from analysis.pipeline.corona import relative_score
from analysis.study_runs import study_runs

from .plotly_json import axis_title, figure, line, scatter

GGO_COLOUR = "#e0a526"
CONSOLIDATION_COLOUR = "#c2410c"
LUNG_COLOUR = "#64748b"
PROBABILITY_COLOUR = "#7c3aed"
GRID_COLOUR = "#e5e9ee"
FONT = {"family": "system-ui, sans-serif", "size": 12, "color": "#1b2633"}


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

    def area(key: str, name: str, colour: str, dash: str | None = None, **properties) -> dict:
        return scatter(
            z,
            [s[key] * cm2 for s in rows],
            name=name,
            line=line(colour, 1.5, dash),
            hovertemplate=f"{name}: %{{y:.1f}} cm²<br>z = %{{x:.1f}} mm<extra></extra>",
            **properties,
        )

    traces = [
        area("ggo_area_mm2", "Ground-glass", GGO_COLOUR, stackgroup="infection"),
        area("consolidation_area_mm2", "Consolidation", CONSOLIDATION_COLOUR, stackgroup="infection"),
        area("lung_area_mm2", "Lung", LUNG_COLOUR, mode="lines", dash="dot"),
    ]
    classified = [s for s in rows if isinstance(s.get("abnormal_probability"), int | float)]
    if classified:
        # P(abnormal slice) (classifier fused with lesion area) on its own 0-1 axis, beside the areas it follows.
        traces.append(
            scatter(
                [s["z_mm"] for s in classified],
                [s["abnormal_probability"] for s in classified],
                name="P(abnormal slice)",
                yaxis="y2",
                mode="lines",
                line=line(PROBABILITY_COLOUR, 1.5),
                hovertemplate="P(abnormal) %{y:.2f}<br>z = %{x:.1f} mm<extra></extra>",
            )
        )
    return figure(
        traces,
        template_name="plotly_white",
        height=300,
        margin={"l": 60, "r": 60 if classified else 20, "t": 10, "b": 50},
        paper_bgcolor="#ffffff",
        plot_bgcolor="#ffffff",
        font=FONT,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0, "traceorder": "normal"},
        xaxis=axis_title("Slice position along the body axis (mm, feet → head)", gridcolor=GRID_COLOUR),
        yaxis=axis_title("Area per slice (cm²)", gridcolor=GRID_COLOUR, rangemode="tozero"),
        yaxis2=axis_title(
            "P(abnormal slice)",
            overlaying="y",
            side="right",
            range=[0, 1],
            tickvals=[0, 0.25, 0.5, 0.75, 1],
            showgrid=False,
            visible=bool(classified),
        ),
        hovermode="x unified",
    )


REPORT_COLOURS = {"progression": "#c2410c", "regression": "#1d7a46", "stable": "#64748b", "partial": "#7c3aed"}
CORONA_COLOUR = "#1f6fb2"


def _report_of(study) -> object | None:
    """The newest report of a study whose reports were prefetched newest first (None without one)."""
    reports = list(study.reports.all())
    return reports[0] if reports else None


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def poi_timeline(patient) -> dict | None:
    """POI (%), iHU, corona score and relative corona score per dated study of a patient, with each report's
    label and phrase as an annotated marker; the study's run is `analysis.study_runs`' choice.

    The patient comes from `frontend.queries.patient_detail` (studies, reports and `study_runs` loaded),
    so no query is needed. None unless at least two dated studies have a result. The relative corona score
    is each score over the first plotted one.
    """
    studies = [s for s in patient.studies.all() if s.study_date is not None]
    runs = getattr(patient, "study_runs", None)
    if runs is None:
        runs = study_runs([s.pk for s in studies])
    points = sorted(
        ((s.study_date.isoformat(), s.pk, s, runs[s.pk]) for s in studies if s.pk in runs), key=lambda p: p[:2]
    )
    if len(points) < 2:
        return None  # one point is no course; the study table already shows it
    dates = [p[0] for p in points]
    poi = [p[3].poi * 100 for p in points]
    corona = [p[3].corona_score_ml for p in points]
    first = next((c for c in corona if c is not None), None)
    relative = [None if c is None else relative_score(c, first) for c in corona]
    has_corona = any(c is not None for c in corona)

    def course(
        y: list, name: str, colour: str, hover: str, *, width: float, size: int, dash: str | None = None, **properties
    ) -> dict:
        return scatter(
            dates,
            y,
            name=name,
            mode="lines+markers",
            line=line(colour, width, dash),
            marker={"size": size},
            hovertemplate=f"%{{x}}<br>{hover}<extra></extra>",
            **properties,
        )

    traces = [
        course(
            poi,
            "POI (%)",
            CONSOLIDATION_COLOUR,
            "POI %{y:.1f} %<br>%{customdata}",
            width=2,
            size=8,
            customdata=[p[3].series.description for p in points],
        ),
        course(
            [p[3].ihu for p in points], "iHU", LUNG_COLOUR, "iHU %{y:.0f}", width=1.5, size=6, dash="dot", yaxis="y2"
        ),
    ]
    if has_corona:
        traces += [
            course(corona, "Corona score (mL)", CORONA_COLOUR, "Corona score %{y:.1f} mL", width=2, size=7, yaxis="y3"),
            course(
                relative,
                "Relative corona score",
                PROBABILITY_COLOUR,
                "Relative corona score %{y:.2f}",
                width=1.5,
                size=6,
                dash="dot",
                yaxis="y4",
            ),
        ]
    annotations = []
    marked = [(p, value, _report_of(p[2])) for p, value in zip(points, poi, strict=True)]
    marked = [(p, value, report) for p, value, report in marked if report is not None and report.label]
    if marked:
        traces.append(
            scatter(
                [p[0] for p, _, _ in marked],
                [value for _, value, _ in marked],
                name="Report phrase",
                mode="markers",
                marker={
                    "symbol": "diamond",
                    "size": 13,
                    "color": [REPORT_COLOURS.get(r.label, LUNG_COLOUR) for _, _, r in marked],
                    "line": {"width": 1.5, "color": "#ffffff"},
                },
                customdata=[[r.get_label_display(), r.phrase] for _, _, r in marked],
                hovertemplate="%{x}<br>Report: %{customdata[0]}<br>“%{customdata[1]}”<extra></extra>",
            )
        )
        for p, value, report in marked:
            text = report.get_label_display()
            if report.phrase:
                text += f": “{_short(report.phrase)}”"
            annotations.append(
                {
                    "x": p[0],
                    "y": value,
                    "xref": "x",
                    "yref": "y",
                    "text": text,
                    "showarrow": True,
                    "arrowhead": 0,
                    "ax": 0,
                    "ay": -28,
                    "font": {"size": 11, "color": REPORT_COLOURS.get(report.label, LUNG_COLOUR)},
                    "bgcolor": "#ffffffd9",
                }
            )
    top = [0.45, 1.0] if has_corona else [0.0, 1.0]
    xaxis = axis_title("Study date", type="date", tickformat="%d %b %Y", gridcolor=GRID_COLOUR)
    lower_panel = {}
    if has_corona:
        xaxis["anchor"] = "y3"  # the shared date axis sits under the lower panel
        lower_panel = {
            "yaxis3": axis_title("Corona (mL)", domain=[0.0, 0.32], rangemode="tozero", anchor="x"),
            "yaxis4": axis_title("Relative", overlaying="y3", side="right", showgrid=False, rangemode="tozero"),
        }
    return figure(
        traces,
        template_name="plotly_white",
        height=440 if has_corona else 280,
        margin={"l": 60, "r": 60, "t": 30, "b": 40},
        font=FONT,
        legend={"orientation": "h", "y": 1.08, "yanchor": "bottom", "x": 0, "traceorder": "normal"},
        xaxis=xaxis,
        yaxis=axis_title("POI (%)", rangemode="tozero", gridcolor=GRID_COLOUR, domain=top),
        yaxis2=axis_title("iHU", overlaying="y", side="right", showgrid=False, tickformat=".0f"),
        hovermode="closest",
        annotations=annotations,
        **lower_panel,
    )
