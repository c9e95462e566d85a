"""The viewer's server side: permission-checked images, overlays on the stored pixels, curve and 3D surfaces."""

from __future__ import annotations

import io

import numpy as np
import pydicom
import pytest
from django.urls import reverse
from PIL import Image

from analysis.pipeline.stored_grid import StoredGrid
from analysis.pipeline.surfaces import surface
from patients.models import Instance

from ..analysis.reoriented import ORIENTATIONS
from .viewer_data import lesion_centroid, make_viewer_phantom

pytestmark = pytest.mark.django_db


@pytest.fixture
def phantom(team_a, tmp_path):
    return make_viewer_phantom(team_a, tmp_path / "dicom", slices=27, matrix=96)


def _overlay(client, series, index) -> np.ndarray:
    response = client.get(reverse("viewer-overlay", args=[series.pk, index]))
    assert response.status_code == 200, response.content[:200]
    assert response["Content-Type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(response.content)))


def test_a_team_member_gets_each_stored_instance_as_dicom_with_caching_headers(client, viewer, phantom):
    client.force_login(viewer)  # read-only members may look at images
    instance = Instance.objects.get(series=phantom.series, index=5)
    url = reverse("viewer-instance", args=[phantom.series.pk, 5])

    response = client.get(url)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/dicom"
    assert response["Cache-Control"] == "private, max-age=3600"
    body = b"".join(response.streaming_content)
    assert pydicom.dcmread(io.BytesIO(body)).SOPInstanceUID == instance.sop_instance_uid
    again = client.get(url, HTTP_IF_NONE_MATCH=response["ETag"])
    assert again.status_code == 304


def test_another_team_gets_404_for_the_page_images_overlays_and_surfaces(client, outsider, phantom):
    client.force_login(outsider)
    series = phantom.series
    for url in (
        reverse("series-viewer", args=[series.pk]),
        reverse("viewer-instance", args=[series.pk, 0]),
        reverse("viewer-overlay", args=[series.pk, 0]),
        reverse("viewer-surfaces", args=[series.pk]),
    ):
        assert client.get(url).status_code == 404, url


def test_an_anonymous_visitor_is_sent_to_log_in_for_an_image(client, phantom):
    response = client.get(reverse("viewer-instance", args=[phantom.series.pk, 0]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_an_index_past_the_last_slice_is_404(client, clinician, phantom):
    client.force_login(clinician)
    assert client.get(reverse("viewer-instance", args=[phantom.series.pk, 27])).status_code == 404
    assert client.get(reverse("viewer-overlay", args=[phantom.series.pk, 27])).status_code == 404


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_overlay_labels_cover_the_lesion_pixels_of_the_stored_image(client, clinician, team_a, tmp_path, orientation):
    built = make_viewer_phantom(team_a, tmp_path / "dicom", orientation=orientation, slices=27, matrix=96)
    client.force_login(clinician)
    series = built.series
    grid = StoredGrid.from_orientation(series.orientation, series.slice_count)
    z = round(lesion_centroid(built.phantom, 1)[0])
    index = grid.stored_index(z)

    labels = _overlay(client, series, index)
    stored = pydicom.dcmread(tmp_path / "media" / Instance.objects.get(series=series, index=index).file)
    hu = stored.pixel_array.astype(int) + int(stored.RescaleIntercept)

    consolidation = labels[..., 1] == 2
    lungs = labels[..., 0] > 0
    assert labels.shape[:2] == hu.shape
    assert consolidation.sum() > 20
    # Read from the stored DICOM itself: consolidation is soft tissue, the rest of the lung is air-like.
    assert np.median(hu[consolidation]) > -250
    assert np.median(hu[lungs & ~consolidation]) < -700
    np.testing.assert_array_equal(labels[..., 1], grid.stored_slice(built.phantom.infection, index))


def test_the_heat_map_travels_in_the_blue_channel(client, clinician, phantom):
    client.force_login(clinician)
    z = round(lesion_centroid(phantom.phantom, 1)[0])
    labels = _overlay(client, phantom.series, z)  # identity orientation: index == z
    assert labels[..., 2].max() > 200
    assert labels[..., 2][labels[..., 0] == 0].max() == 0  # the heat map stays inside the lungs


def test_the_viewer_page_lists_slices_and_opacities_that_jump_to_the_lesion(client, clinician, phantom):
    client.force_login(clinician)
    response = client.get(reverse("series-viewer", args=[phantom.series.pk]))

    assert response.status_code == 200
    config = response.context["config"]
    assert len(config["imageIds"]) == 27
    assert config["imageIds"][3] == "wadouri:" + reverse("viewer-instance", args=[phantom.series.pk, 3])
    first = config["opacities"][0]
    assert first["kind"] == "consolidation"
    z, y, x = lesion_centroid(phantom.phantom, 1)
    assert (first["slice"], first["row"], first["column"]) == (
        round(z),
        pytest.approx(y, abs=0.1),
        pytest.approx(x, abs=0.1),
    )
    assert response.context["slice_curve"]["data"][0]["x"][0] == 1
    content = response.content.decode()
    assert "Focal opacities" in content
    assert 'data-preset="lung"' in content
    assert 'data-preset="mediastinum"' in content


def test_a_series_without_results_shows_images_without_overlays(client, clinician, phantom):
    phantom.run.delete()
    client.force_login(clinician)
    response = client.get(reverse("series-viewer", args=[phantom.series.pk]))
    assert response.status_code == 200
    assert response.context["config"]["overlays"] is None
    assert "No finished analysis" in response.content.decode()
    assert client.get(reverse("viewer-overlay", args=[phantom.series.pk, 0])).json()["error"].startswith("this series")


def test_a_label_map_that_no_longer_fits_the_series_is_explained(client, clinician, phantom):
    from analysis.storage import save_label_map

    phantom.run.lungs_file = save_label_map(phantom.run, "lungs", np.zeros((5, 96, 96), dtype=np.uint8))
    phantom.run.save()
    client.force_login(clinician)
    response = client.get(reverse("viewer-overlay", args=[phantom.series.pk, 0]))
    assert response.status_code == 409
    assert "re-run the analysis" in response.json()["error"]


def test_the_3d_view_holds_lung_and_opacity_surfaces(client, clinician, phantom):
    client.force_login(clinician)
    response = client.get(reverse("viewer-surfaces", args=[phantom.series.pk]))
    assert response.status_code == 200
    traces = {trace["name"]: trace for trace in response.json()["data"]}
    assert set(traces) == {"Lungs", "Ground glass", "Consolidation"}
    assert all(trace["type"] == "mesh3d" for trace in traces.values())
    assert len(traces["Lungs"]["i"]) <= 20_000


def test_a_sphere_surface_has_the_sphere_radius_and_fits_the_budget():
    zz, yy, xx = np.indices((60, 60, 60))
    sphere = (zz - 30) ** 2 + (yy - 30) ** 2 + (xx - 30) ** 2 <= 20**2
    mesh = surface(sphere, (1.0, 1.0, 1.0), max_faces=2_000)
    radii = np.linalg.norm(mesh.vertices - np.array([30.0, 30.0, 30.0]), axis=1)
    assert mesh.face_count <= 2_000
    assert mesh.step > 1
    assert abs(float(np.median(radii)) - 20.0) < 1.5
    assert surface(np.zeros((4, 4, 4), bool), (1.0, 1.0, 1.0)) is None


def test_collectstatic_ships_the_bundle_worker_and_codecs_with_their_mime_types(client, settings, tmp_path):
    from django.conf import settings as live
    from django.core.management import call_command

    dist = live.BASE_DIR / "frontend" / "static" / "dist"
    assert (dist / "viewer.js").is_file(), "the viewer is not built: run `npm ci && npm run build` in frontend/js"
    settings.STATIC_ROOT = tmp_path / "static"
    call_command("collectstatic", interactive=False, verbosity=0)

    expected = {
        "dist/viewer.js": "text/javascript",
        "dist/decodeImageFrameWorker.js": "text/javascript",
        "dist/openjpegwasm_decode.wasm": "application/wasm",  # JPEG 2000
        "dist/charlswasm_decode.wasm": "application/wasm",  # JPEG-LS
    }
    for name, mime in expected.items():
        response = client.get(f"/static/{name}")  # served by whitenoise, as in production
        assert response.status_code == 200, name
        assert response["Content-Type"].startswith(mime), (name, response["Content-Type"])


def test_the_series_page_links_to_the_viewer_and_a_nifti_series_is_explained(client, viewer, phantom):
    client.force_login(viewer)
    page = client.get(reverse("series-detail", args=[phantom.series.pk])).content.decode()
    assert reverse("series-viewer", args=[phantom.series.pk]) in page

    phantom.series.source = "nifti"
    phantom.series.save()
    response = client.get(reverse("series-viewer", args=[phantom.series.pk]))
    assert response.status_code == 200
    assert "Only DICOM series can be shown in the viewer" in response.content.decode()
    assert "viewer-config" not in response.content.decode()
