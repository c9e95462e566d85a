"""The study viewer in Chromium: images on the canvas, overlays on the lesion, scrolling, jumps, 3D, real series.

Overlay alignment is read back from the rendered page: the consolidation overlay's pixels are found
by colour, then the same pixels of the image without overlays must be soft tissue (bright in the lung
window) while the ring around them is aerated lung (dark), for series stored in different orientations.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from analysis.pipeline.stored_grid import StoredGrid

from ..conftest import PASSWORD, ctdata_path
from .browser import log_in, screenshot
from .viewer_data import lesion_centroid, make_viewer_phantom

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CONSOLIDATION_RGB = np.array([194, 65, 12])


def open_viewer(page, live_server, user, series, *, all_loaded: bool = True) -> None:
    log_in(page, live_server.url, user.username, PASSWORD)
    page.goto(f"{live_server.url}/series/{series.pk}/viewer/")
    page.wait_for_selector('#viewer[data-state="ready"]', timeout=30_000)
    if all_loaded:
        page.wait_for_selector('#viewer[data-all-loaded="true"]', timeout=60_000)
        assert page.get_attribute("#viewer", "data-failed-images") == "0", page.inner_text('[data-role="load-info"]')


def stage_pixels(page) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(page.locator(".viewer-stage").screenshot())).convert("RGB")).astype(int)


def set_layers(page, **layers) -> None:
    """Switch overlay layers on/off (True/False) or to an opacity (0-100), then wait for the redraw."""
    for name, value in layers.items():
        box = page.locator(f'[data-layer="{name}"]')
        if isinstance(value, bool):
            box.set_checked(value)
        else:
            box.set_checked(True)
            page.eval_on_selector(
                f'[data-opacity="{name}"]',
                "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                value,
            )
    page.evaluate("window.covidViewer.refreshOverlay()")


def assert_not_blank(pixels: np.ndarray) -> None:
    grey = pixels.mean(axis=2)
    assert grey.std() > 20, "the viewport shows no image"
    assert (grey > 100).mean() > 0.05


@pytest.mark.parametrize("orientation", ["identity", "flipped", "transposed"])
def test_the_consolidation_overlay_lands_on_the_phantom_lesion(
    page, live_server, clinician, team_a, tmp_path, orientation
):
    built = make_viewer_phantom(team_a, tmp_path / "dicom", orientation=orientation)
    series = built.series
    grid = StoredGrid.from_orientation(series.orientation, series.slice_count)
    expected_slice = grid.stored_index(round(lesion_centroid(built.phantom, 1)[0]))

    open_viewer(page, live_server, clinician, series)
    assert_not_blank(stage_pixels(page))
    page.click('.opacity-jump[data-opacity-index="0"]')
    page.wait_for_selector(f'#viewer[data-opacity="0"][data-overlay-slice="{expected_slice}"]')
    assert page.get_attribute("#viewer", "data-slice") == str(expected_slice)
    screenshot(page, f"viewer-phantom-{orientation}")

    set_layers(page, lungs=False, ggo=False, heat=False, consolidation=100)
    with_overlay = stage_pixels(page)
    set_layers(page, consolidation=False)
    without = stage_pixels(page).mean(axis=2)

    mask = np.abs(with_overlay - CONSOLIDATION_RGB).sum(axis=2) < 40
    assert mask.sum() > 200, "no consolidation overlay on screen"
    ring = ndimage.binary_dilation(mask, iterations=10) & ~ndimage.binary_dilation(mask, iterations=3)
    assert np.median(without[mask]) > 170, "the overlay does not cover the bright consolidation"
    assert np.median(without[ring]) < 140, "the overlay's surroundings are not aerated lung"
    # The jump centred the opacity in the viewport.
    rows, columns = np.nonzero(mask)
    height, width = mask.shape
    assert abs(rows.mean() - height / 2) < 0.1 * height
    assert abs(columns.mean() - width / 2) < 0.1 * width


def test_wheel_keys_slider_and_slice_curve_change_the_slice(page, live_server, viewer, team_a, tmp_path):
    built = make_viewer_phantom(team_a, tmp_path / "dicom")
    open_viewer(page, live_server, viewer, built.series)
    start = int(page.get_attribute("#viewer", "data-slice"))
    assert page.inner_text('[data-role="slice-info"]').startswith(f"Slice {start + 1} / 64")
    before = stage_pixels(page)

    page.hover("#viewport")
    page.mouse.wheel(0, 300)
    page.wait_for_function(f"window.covidViewer.currentIndex() !== {start}")
    scrolled = int(page.get_attribute("#viewer", "data-slice"))
    assert scrolled != start
    page.wait_for_timeout(200)
    assert np.abs(stage_pixels(page) - before).mean() > 0.5, "scrolling did not change the picture"

    page.focus("#viewport")
    page.keyboard.press("Home")
    page.wait_for_selector('#viewer[data-slice="0"]')
    page.keyboard.press("ArrowDown")
    page.wait_for_selector('#viewer[data-slice="1"]')
    page.eval_on_selector("#slice-slider", "el => { el.value = 40; el.dispatchEvent(new Event('input')); }")
    page.wait_for_selector('#viewer[data-slice="39"]')
    assert "Slice 40 / 64" in page.inner_text('[data-role="slice-info"]')

    page.click('[data-preset="mediastinum"]')
    assert page.inner_text('[data-role="voi-info"]') == "W 400 · L 40"
    box = page.locator("#viewport").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] / 2 + 60, box["y"] + box["height"] / 2 + 40, steps=5)
    page.mouse.up()
    assert page.inner_text('[data-role="voi-info"]') != "W 400 · L 40", "dragging did not change the window"

    # Click the slice curve's marker of slice 12.
    page.wait_for_selector('#slice-curve-plot[data-ready="true"]')
    page.locator("#slice-curve-plot").scroll_into_view_if_needed()
    point = page.evaluate(
        """() => {
            const gd = document.getElementById('slice-curve-plot');
            const trace = gd.data[0];
            const k = trace.x.indexOf(12);
            const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, box = gd.getBoundingClientRect();
            return [box.left + xa._offset + xa.l2p(12), box.top + ya._offset + ya.l2p(trace.y[k])];
        }"""
    )
    page.mouse.move(*point)
    page.mouse.click(*point)
    page.wait_for_selector('#viewer[data-slice="11"]')

    page.click('.opacity-jump[data-opacity-index="0"]')
    set_layers(page, heat=70)
    page.wait_for_selector('#viewer[data-opacity="0"]')
    heat = stage_pixels(page)
    assert ((heat[..., 0] > 180) & (heat[..., 2] < 90)).sum() > 50, "no warm heat-map colours on screen"
    page.locator("#surfaces").scroll_into_view_if_needed()
    page.wait_for_selector('#surfaces-plot[data-ready="true"]', timeout=30_000)
    screenshot(page, "viewer-phantom-full-page")


def test_another_team_gets_404_for_the_viewer_page_and_the_image_urls(page, live_server, outsider, team_a, tmp_path):
    built = make_viewer_phantom(team_a, tmp_path / "dicom", slices=27, matrix=96)
    log_in(page, live_server.url, outsider.username, PASSWORD)
    base = f"{live_server.url}/series/{built.series.pk}"
    assert page.goto(f"{base}/viewer/").status == 404
    for url in (f"{base}/instances/0/", f"{base}/overlays/0.png", f"{base}/surfaces.json"):
        assert page.request.get(url).status == 404, url


@pytest.mark.realdata
@pytest.mark.parametrize(
    ("folder", "name"),
    [(("covid-ct-md", "P001"), "jpeg-lossless-p001"), (("dicom-variety", "abdomen-jpeg2000-series"), "jpeg2000")],
)
def test_real_compressed_series_are_decoded_and_shown(page, live_server, clinician, team_a, folder, name):
    from patients.ingest import ingest_paths
    from patients.models import Series

    # The JPEG 2000 export is anonymised (no PatientID): it needs an identifier.
    upload = ingest_paths(team_a, [ctdata_path(*folder)], patient_identifier=f"REAL-{name}")
    series = Series.objects.get(pk=upload.report["series"][0]["id"])
    open_viewer(page, live_server, clinician, series)
    assert_not_blank(stage_pixels(page))
    timings = page.evaluate("window.covidViewer.timings")
    print(json.dumps({"series": name, "slices": series.slice_count, **timings}))
    page.focus("#viewport")
    page.keyboard.press("End")
    page.wait_for_selector(f'#viewer[data-slice="{series.slice_count - 1}"]')
    assert_not_blank(stage_pixels(page))
    screenshot(page, f"viewer-real-{name}")
