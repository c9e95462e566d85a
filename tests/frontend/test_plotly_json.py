"""The figures written as plain JSON are the JSON plotly's own objects would give plotly.js."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import date
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
from django.conf import settings

from frontend import figures
from frontend.plotly_json import axis_title, figure, line, scatter, trace

from .records import slice_metrics


def _plotly(traces: list, **layout) -> dict:
    built = go.Figure(traces)
    built.update_layout(**layout)
    return json.loads(built.to_json())


def test_a_figure_is_the_json_of_the_same_plotly_figure_template_included():
    mine = figure(
        [scatter([1, 2, 3], [0.5, 1.5, 1.0], name="POI", mode="lines", line=line("#c2410c", 2, "dot"))],
        template_name="plotly_white",
        height=300,
        xaxis=axis_title("Study date", type="date"),
    )
    theirs = _plotly(
        [
            go.Scatter(
                x=[1, 2, 3],
                y=[0.5, 1.5, 1.0],
                name="POI",
                mode="lines",
                line={"color": "#c2410c", "width": 2},
                line_dash="dot",
            )
        ],
        template="plotly_white",
        height=300,
        xaxis={"title": {"text": "Study date"}, "type": "date"},
    )
    assert mine == theirs
    assert mine["layout"]["template"]["layout"]["plot_bgcolor"] == "white"


def test_a_figure_without_a_named_template_gets_plotlys_default_as_go_figure_does():
    mine = figure([trace("box", y=[1.0, 2.0], name="a")], height=200)
    assert mine == _plotly([go.Box(y=[1.0, 2.0], name="a")], height=200)


def test_numpy_numbers_become_plain_numbers_and_nan_or_infinity_become_null():
    mine = figure([scatter(np.arange(3), [np.float32(1.5), float("nan"), np.inf], customdata=[np.int64(4), 1, 2])])
    assert mine["data"][0]["x"] == [0, 1, 2]
    assert mine["data"][0]["y"] == [1.5, None, None]
    assert mine["data"][0]["customdata"] == [4, 1, 2]
    json.dumps(mine, allow_nan=False)  # strict JSON: plotly.js's JSON.parse accepts it


def test_the_slice_profile_is_what_the_plotly_objects_gave():
    rows = slice_metrics(6)
    for row in rows[::2]:
        row["abnormal_probability"] = 0.25
    built = figures.slice_profile(SimpleNamespace(slice_metrics=rows))
    z = [r["z_mm"] for r in rows]
    hover = "{}: %{{y:.1f}} cm²<br>z = %{{x:.1f}} mm<extra></extra>"
    assert built["data"][2] == {
        "type": "scatter",
        "x": z,
        "y": [r["lung_area_mm2"] / 100 for r in rows],
        "name": "Lung",
        "mode": "lines",
        "line": {"color": figures.LUNG_COLOUR, "width": 1.5, "dash": "dot"},
        "hovertemplate": hover.format("Lung"),
    }
    assert [t["name"] for t in built["data"]] == ["Ground-glass", "Consolidation", "Lung", "P(abnormal slice)"]
    assert built["data"][3]["x"] == z[::2]
    assert built["data"][3]["yaxis"] == "y2"
    assert built["layout"]["yaxis2"]["visible"] is True
    assert (
        built["layout"]["template"]
        == json.loads(go.Figure(layout={"template": "plotly_white"}).to_json())["layout"]["template"]
    )


def test_building_the_figures_does_not_import_plotlys_figure_objects():
    # A fresh interpreter: importing plotly.graph_objects builds validators (seconds on a server's first page).
    code = (
        "import sys, django; from datetime import date; from types import SimpleNamespace as NS;"
        "django.setup(); from frontend import figures;"
        "from tests.frontend.records import slice_metrics;"
        "assert figures.slice_profile(NS(slice_metrics=slice_metrics(5)));"
        "print('plotly.graph_objects' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "False"


def test_the_course_over_time_marks_each_labelled_report_with_its_phrase():
    class Related(list):
        def all(self):
            return self

    def report(label: str, phrase: str):
        return SimpleNamespace(label=label, phrase=phrase, get_label_display=lambda: label.title())

    studies = [
        SimpleNamespace(pk=n, study_date=date(2026, 3, 1 + 7 * n), reports=Related(r))
        for n, r in enumerate([[], [report("progression", "new ground-glass")], [report("", "")]])
    ]
    runs = {
        s.pk: SimpleNamespace(
            poi=0.05 * (s.pk + 1), ihu=-600.0, corona_score_ml=None, series=SimpleNamespace(description="Chest")
        )
        for s in studies
    }
    built = figures.poi_timeline(SimpleNamespace(studies=Related(studies), study_runs=runs))
    assert [t["name"] for t in built["data"]] == ["POI (%)", "iHU", "Report phrase"]
    assert built["data"][0]["y"] == pytest.approx([5.0, 10.0, 15.0])
    assert built["data"][2]["x"] == ["2026-03-08"]
    assert built["layout"]["annotations"][0]["text"] == "Progression: “new ground-glass”"
    assert "yaxis3" not in built["layout"]
    assert built["layout"]["height"] == 280
