"""The stored-slice mapping agrees with the volume loader for every stored orientation (no Django needed)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from analysis.pipeline.stored_grid import StoredGrid, StoredGridError
from analysis.pipeline.volume import CTVolume, load_dicom_series, write_dicom_series

from .reoriented import ORIENTATIONS, reorient


def _volume() -> CTVolume:
    rng = np.random.default_rng(7)
    hu = rng.integers(-1000, 400, size=(6, 64, 72)).astype(np.int16)
    hu[:, :5, :7] = -1000  # air in a corner that no flip maps onto itself
    hu[:, -3:, -2:] = 300
    return CTVolume(hu=hu, spacing=(2.5, 0.8, 0.8), origin=(-16.0, -16.0, 100.0))


def _stored_slices(paths) -> list[np.ndarray]:
    """The stored images in Instance.index order: sorted along the slice normal, as ingest ranks them."""
    datasets = [pydicom.dcmread(p) for p in paths]
    normal = np.cross(
        [float(v) for v in datasets[0].ImageOrientationPatient[:3]],
        [float(v) for v in datasets[0].ImageOrientationPatient[3:]],
    )
    datasets.sort(key=lambda ds: float(np.dot([float(v) for v in ds.ImagePositionPatient], normal)))
    return [ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept) for ds in datasets]


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_every_stored_slice_shows_the_canonical_plane_the_grid_names(tmp_path, name):
    original = _volume()
    paths = write_dicom_series(original, tmp_path, patient_id="GRID-1")
    reorient(paths, name)

    loaded = load_dicom_series(paths)
    grid = StoredGrid.from_orientation(ORIENTATIONS[name], loaded.shape[0])

    np.testing.assert_array_equal(loaded.hu, original.hu)  # the loader undoes the orientation
    assert (grid.transposed, grid.flips) == (loaded.stored_transposed, loaded.stored_flips)
    for index, stored in enumerate(_stored_slices(paths)):
        np.testing.assert_array_equal(grid.stored_slice(original.hu, index), stored)
        assert grid.stored_index(grid.canonical_z(index)) == index


@pytest.mark.parametrize("name", sorted(ORIENTATIONS))
def test_a_canonical_point_lands_on_the_same_voxel_of_the_stored_image(name):
    grid = StoredGrid.from_orientation(ORIENTATIONS[name], 3)
    plane = np.arange(30 * 40).reshape(30, 40)
    stored = grid.to_stored_plane(plane)
    for y, x in [(0, 0), (3, 31), (29, 39), (17, 5)]:
        row, column = grid.to_stored_point(y, x, plane.shape)
        assert stored[int(row), int(column)] == plane[y, x]


def test_flipped_series_run_from_head_to_feet_in_index_order():
    grid = StoredGrid.from_orientation(ORIENTATIONS["flipped"], 10)
    assert grid.flip_z
    assert [grid.canonical_z(k) for k in (0, 9)] == [9, 0]
    with pytest.raises(IndexError, match=r"outside 0\.\.9"):
        grid.canonical_z(10)


def test_a_coronal_orientation_is_refused_with_a_reason():
    with pytest.raises(StoredGridError, match="axial plane"):
        StoredGrid.from_orientation((1, 0, 0, 0, 0, -1), 5)
