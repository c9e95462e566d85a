"""The study viewer's data: stored instances, per-slice overlays, the slice curve and the 3D surfaces.

Every entry point starts from `Series.objects.for_user`, so an image, an overlay or a surface of
another team's series is a 404 like its page. Overlays are cut from the run's label maps (canonical
(z, y, x) grid) into each stored image's own (row, column) grid with `StoredGrid`, so the browser
draws them pixel for pixel on the image whatever the stored slice order or orientation.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import reverse

from analysis.choices import RunStatus
from analysis.models import AnalysisRun
from analysis.pipeline.stored_grid import StoredGrid, StoredGridError
from analysis.storage import LABEL_KEY, LabelMapError
from patients.choices import SeriesSource
from patients.models import Instance, Series

from .figures import CONSOLIDATION_COLOUR, FONT, GGO_COLOUR, LUNG_COLOUR, PROBABILITY_COLOUR
from .plotly_json import axis_title, figure, line, scatter, trace
from .queries import RunResults

# Browsers may keep an image or overlay for an hour; the ETag makes the revalidation after that cheap.
CACHE_SECONDS = 3600
# Window/level presets (centre, width) in HU.
PRESETS = {"lung": (-600, 1500), "mediastinum": (40, 400)}
# Coarser masks for the 3D view: the surfaces are a picture, not a measurement.
SURFACE_VOXEL_MM = 3.0


class ViewerDataError(Exception):
    """The stored results cannot be shown (a missing file, a grid that does not match); says why."""


def series_for_viewer(user, series_id: int) -> Series:
    """One DICOM series of the user's teams with its study and patient; else 404."""
    return get_object_or_404(Series.objects.for_user(user).select_related("study__patient__team"), pk=series_id)


def instance_for_user(user, series_id: int, index: int) -> Instance:
    """The stored slice `index` of one of the user's series; else 404 (no file outside the user's teams)."""
    return get_object_or_404(Instance.objects.for_user(user).select_related("series"), series_id=series_id, index=index)


def instance_path(instance: Instance) -> Path:
    root = Path(settings.MEDIA_ROOT).resolve()
    path = (root / instance.file).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise Http404("The stored image file is missing.")
    return path


def instance_etag(instance: Instance) -> str:
    return f'"{instance.sop_instance_uid}-{instance.file_size}"'


def shown_run(series: Series) -> AnalysisRun | None:
    """The newest run of the series when it succeeded (the run the series page shows), else None."""
    run = getattr(series, "latest_run", None)  # set by queries.series_detail
    if run is None:
        run = AnalysisRun.objects.filter(series=series).order_by("-created", "-id").first()
    return run if run is not None and run.status == RunStatus.SUCCEEDED else None


def stored_grid(series: Series) -> StoredGrid:
    try:
        return StoredGrid.from_orientation(series.orientation or [1, 0, 0, 0, 1, 0], series.slice_count)
    except StoredGridError as exc:
        raise ViewerDataError(f"the series orientation cannot be shown: {exc}") from exc


# --- label maps ----------------------------------------------------------------------------------


@lru_cache(maxsize=3)  # one run's lungs, infection and heat map
def _read_label_map(path: str, mtime_ns: int, size: int) -> np.ndarray:
    # Keyed by modification time and size: a re-run replaces the file, and the cache with it.
    with np.load(path, allow_pickle=False) as data:
        return data[LABEL_KEY]


def label_map(relative: str) -> np.ndarray:
    """A run's label map, decompressed once per process (each slice request would otherwise do it again)."""
    if not relative:
        raise LabelMapError("this run has no stored label map")
    root = Path(settings.MEDIA_ROOT).resolve()
    full = (root / relative).resolve()
    if not full.is_relative_to(root) or not full.is_file():
        raise LabelMapError(f"label map {relative} is missing from the media folder")
    stat = full.stat()
    try:
        return _read_label_map(str(full), stat.st_mtime_ns, stat.st_size)
    except KeyError as exc:
        raise LabelMapError(f"{relative} is not a label map (no {LABEL_KEY!r} array)") from exc


def _checked_maps(run: AnalysisRun, series: Series) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        lungs = label_map(run.lungs_file)
        infection = label_map(run.infection_file)
        heat = label_map(run.heatmap_file) if run.heatmap_file else None
    except LabelMapError as exc:
        raise ViewerDataError(str(exc)) from exc
    for name, array in (("lungs", lungs), ("infection", infection), ("heat map", heat)):
        if array is not None and (array.ndim != 3 or array.shape[0] != series.slice_count):
            raise ViewerDataError(
                f"the {name} label map has shape {array.shape}, but the series has {series.slice_count} slices: "
                "re-run the analysis"
            )
    return lungs, infection, heat


@dataclass(frozen=True)
class OverlaySlice:
    png: bytes
    etag: str


def overlay_slice(run: AnalysisRun, series: Series, index: int) -> OverlaySlice:
    """Labels of stored slice `index` as an RGB PNG in the image's own pixel grid.

    Red holds the lung label (1 right, 2 left), green the infection label (1 ground glass,
    2 consolidation), blue the heat map (0-255); the viewer colours them.
    """
    from PIL import Image

    grid = stored_grid(series)
    if not 0 <= index < series.slice_count:
        raise Http404(f"slice {index} is outside 0..{series.slice_count - 1}")
    lungs, infection, heat = _checked_maps(run, series)
    planes = [grid.stored_slice(lungs, index), grid.stored_slice(infection, index)]
    planes.append(grid.stored_slice(heat, index) if heat is not None else np.zeros_like(planes[0]))
    if series.rows and series.columns and planes[0].shape != (series.rows, series.columns):
        raise ViewerDataError(
            f"the label maps are {planes[0].shape[1]} x {planes[0].shape[0]} pixels per slice, "
            f"the images {series.columns} x {series.rows}: re-run the analysis"
        )
    rgb = np.stack(planes, axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=1)
    stamp = int(run.finished.timestamp()) if run.finished else 0
    return OverlaySlice(png=buffer.getvalue(), etag=f'"run{run.pk}-{stamp}-{index}"')


# --- the page ------------------------------------------------------------------------------------


def _canonical_shape(series: Series, grid: StoredGrid) -> tuple[int, int]:
    rows, columns = series.rows or 0, series.columns or 0
    return (columns, rows) if grid.transposed else (rows, columns)


def viewer_config(series: Series, run: AnalysisRun | None, results: RunResults | None) -> dict:
    """What the viewer script needs: image ids, slice positions, overlay URLs and the opacities to jump to."""
    grid = stored_grid(series)
    instances = list(series.instances.order_by("index").values_list("index", "position"))
    image_ids = ["wadouri:" + reverse("viewer-instance", args=[series.pk, index]) for index, _position in instances]
    opacities = []
    if run is not None and results is not None:
        shape = _canonical_shape(series, grid)
        for number, opacity in enumerate(results.opacities, start=1):
            z, y, x = (float(v) for v in opacity.centroid_voxel)
            row, column = grid.to_stored_point(y, x, shape)
            opacities.append(
                {
                    "number": number,
                    "kind": opacity.kind,
                    "label": opacity.get_kind_display(),
                    "volume_ml": round(opacity.volume_ml, 2),
                    "diameter_mm": round(opacity.longest_diameter_mm, 1),
                    "zone": opacity.get_zone_display(),
                    "slice": grid.stored_index(min(max(round(z), 0), series.slice_count - 1)),
                    "row": round(row, 1),
                    "column": round(column, 1),
                }
            )
    overlays = None
    if run is not None:
        overlays = {
            "url": reverse("viewer-overlay", args=[series.pk, 0]).replace("/0.png", "/{index}.png"),
            "heatmap": bool(run.heatmap_file),
        }
    return {
        "series": series.pk,
        "slices": len(instances),
        "rows": series.rows,
        "columns": series.columns,
        "imageIds": image_ids,
        # Position along the body axis (feet -> head), whichever way the slice normal points.
        "positions": [round(-position if grid.flip_z else position, 2) for _index, position in instances],
        "overlays": overlays,
        "opacities": opacities,
        "presets": {name: {"center": c, "width": w} for name, (c, w) in PRESETS.items()},
        "surfacesUrl": reverse("viewer-surfaces", args=[series.pk]) if run is not None else None,
        "colours": {"ggo": GGO_COLOUR, "consolidation": CONSOLIDATION_COLOUR},
    }


def viewable(series: Series) -> str | None:
    """Why the series cannot be shown in the viewer, or None when it can."""
    if series.source != SeriesSource.DICOM:
        return "Only DICOM series can be shown in the viewer (this one was uploaded as NIfTI)."
    if not series.instances.exists():
        return "The series has no stored images."
    return None


def slice_curve(run: AnalysisRun, series: Series) -> dict | None:
    """Infection area and P(abnormal) per stored slice (x = slice number as the viewer shows it)."""
    grid = stored_grid(series)
    rows = []
    for entry in run.slice_metrics if isinstance(run.slice_metrics, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("index"), int):
            continue
        if not 0 <= entry["index"] < series.slice_count or not isinstance(entry.get("infection_area_mm2"), int | float):
            continue
        rows.append((grid.stored_index(entry["index"]) + 1, entry))
    if len(rows) < 2:
        return None
    rows.sort(key=lambda item: item[0])
    numbers = [number for number, _entry in rows]
    traces = [
        scatter(
            numbers,
            [entry["infection_area_mm2"] / 100 for _n, entry in rows],
            name="Infection area (cm²)",
            mode="lines+markers",
            marker={"size": 4},
            line=line(CONSOLIDATION_COLOUR, 1.5),
            fill="tozeroy",
            hovertemplate="slice %{x}<br>infection %{y:.1f} cm²<extra></extra>",
        )
    ]
    probability = [(n, e["abnormal_probability"]) for n, e in rows if isinstance(e.get("abnormal_probability"), float)]
    if probability:
        traces.append(
            scatter(
                [n for n, _p in probability],
                [p for _n, p in probability],
                name="P(abnormal slice)",
                yaxis="y2",
                mode="lines",
                line=line(PROBABILITY_COLOUR, 1.5),
                hovertemplate="slice %{x}<br>P(abnormal) %{y:.2f}<extra></extra>",
            )
        )
    return figure(
        traces,
        template_name="plotly_white",
        height=220,
        margin={"l": 60, "r": 60, "t": 10, "b": 40},
        font=FONT,
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        xaxis=axis_title("Slice (click to show it)", range=[0.5, series.slice_count + 0.5]),
        yaxis=axis_title("cm²", rangemode="tozero"),
        yaxis2=axis_title(
            "P(abnormal)",
            overlaying="y",
            side="right",
            range=[0, 1.05],
            tickvals=[0, 0.5, 1],
            showgrid=False,
            visible=bool(probability),
        ),
        hovermode="closest",
        clickmode="event",
    )


def surfaces_figure(run: AnalysisRun, series: Series) -> dict:
    """Lungs and opacities as decimated marching-cubes surfaces in a plotly 3D figure."""
    from analysis.pipeline.surfaces import surface

    lungs, infection, _heat = _checked_maps(run, series)
    spacing = (
        float(series.slice_spacing or 1.0),
        float(series.pixel_spacing_row or 1.0),
        float(series.pixel_spacing_col or 1.0),
    )
    grid = stored_grid(series)
    if grid.transposed:
        spacing = (spacing[0], spacing[2], spacing[1])
    # Sample the masks down to about SURFACE_VOXEL_MM per voxel before marching cubes.
    factors = [max(1, round(SURFACE_VOXEL_MM / s)) for s in spacing]
    coarse = tuple(slice(None, None, f) for f in factors)
    coarse_spacing = tuple(s * f for s, f in zip(spacing, factors, strict=True))
    layers = [
        ("Lungs", lungs[coarse] > 0, LUNG_COLOUR, 0.18, 20_000),
        ("Ground glass", infection[coarse] == 1, GGO_COLOUR, 0.8, 15_000),
        ("Consolidation", infection[coarse] == 2, CONSOLIDATION_COLOUR, 0.95, 15_000),
    ]
    traces = []
    for name, mask, colour, opacity, budget in layers:
        mesh = surface(mask, coarse_spacing, max_faces=budget)
        if mesh is None:
            continue
        x, y, z = (np.round(mesh.vertices[:, k], 1).tolist() for k in range(3))
        i, j, k = (mesh.faces[:, n].tolist() for n in range(3))
        traces.append(
            trace(
                "mesh3d",
                x=x,
                y=y,
                z=z,
                i=i,
                j=j,
                k=k,
                name=name,
                color=colour,
                opacity=opacity,
                showlegend=True,
                hoverinfo="name",
                flatshading=False,
            )
        )
    return figure(
        traces,
        height=460,
        margin={"l": 0, "r": 0, "t": 0, "b": 0},
        legend={"orientation": "h", "y": 1.0, "x": 0},
        scene={
            "aspectmode": "data",
            "xaxis": axis_title("x (mm, patient left →)"),
            "yaxis": axis_title("y (mm)"),
            "zaxis": axis_title("z (mm)"),
            "camera": {"eye": {"x": 0.0, "y": -1.9, "z": 0.4}},
        },
        paper_bgcolor="#ffffff",
    )
