"""Views of the study viewer: the page, each stored image, each slice's overlay and the 3D surfaces.

Data and permission scoping live in `frontend.viewer`; these views validate, call it and respond.
Images and overlays carry caching headers (private: they are patient data) and an ETag.
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse, HttpResponseNotModified, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from audit.choices import AuditAction
from audit.log import record

from . import queries, viewer


def _cached(response: HttpResponse, etag: str) -> HttpResponse:
    response["ETag"] = etag
    response["Cache-Control"] = f"private, max-age={viewer.CACHE_SECONDS}"
    return response


def _not_modified(request: HttpRequest, etag: str) -> bool:
    return etag in [tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")]


@login_required
@require_GET
def viewer_page(request: HttpRequest, series_id: int) -> HttpResponse:
    series = queries.series_detail(request.user, series_id)
    # One event per opening of the viewer; its per-slice image requests are not audited one by one.
    record(request, AuditAction.VIEW, series, summary="slice viewer")
    problem = viewer.viewable(series)
    run = viewer.shown_run(series)
    results = queries.run_results(run) if run is not None else None
    context = {
        "series": series,
        "study": series.study,
        "patient": series.study.patient,
        "run": run,
        "results": results,
        "problem": problem,
    }
    if problem is None:
        try:
            context["config"] = viewer.viewer_config(series, run, results)
            context["slice_curve"] = viewer.slice_curve(run, series) if run is not None else None
        except viewer.ViewerDataError as exc:
            context["problem"] = str(exc)
    return render(request, "frontend/viewer.html", context)


@login_required
@require_GET
def instance_file(request: HttpRequest, series_id: int, index: int) -> HttpResponse:
    instance = viewer.instance_for_user(request.user, series_id, index)
    etag = viewer.instance_etag(instance)
    if _not_modified(request, etag):
        return _cached(HttpResponseNotModified(), etag)
    path = viewer.instance_path(instance)
    response = FileResponse(path.open("rb"), content_type="application/dicom")
    return _cached(response, etag)


@login_required
@require_GET
def overlay(request: HttpRequest, series_id: int, index: int) -> HttpResponse:
    series = viewer.series_for_viewer(request.user, series_id)
    run = viewer.shown_run(series)
    if run is None:
        return JsonResponse({"error": "this series has no finished analysis to overlay"}, status=404)
    try:
        result = viewer.overlay_slice(run, series, index)
    except viewer.ViewerDataError as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    if _not_modified(request, result.etag):
        return _cached(HttpResponseNotModified(), result.etag)
    return _cached(HttpResponse(result.png, content_type="image/png"), result.etag)


@login_required
@require_GET
def surfaces(request: HttpRequest, series_id: int) -> JsonResponse:
    series = viewer.series_for_viewer(request.user, series_id)
    run = viewer.shown_run(series)
    if run is None:
        return JsonResponse({"error": "this series has no finished analysis to draw in 3D"}, status=404)
    try:
        figure = viewer.surfaces_figure(run, series)
    except viewer.ViewerDataError as exc:
        return JsonResponse({"error": str(exc)}, status=409)
    return _cached(JsonResponse(figure), f'"surfaces-{run.pk}-{int(run.finished.timestamp()) if run.finished else 0}"')
