"""Ordering and geometric refusal of DICOM series headers (analysis.pipeline.dicom_geometry)."""

from __future__ import annotations

import random

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from analysis.pipeline.dicom_geometry import GeometryError, order_slices, plane_name
from tests.conftest import ctdata_path

AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def header(z: float, *, orientation=AXIAL, position=None, rows: int = 64, columns: int = 64, **extra) -> Dataset:
    """One slice header at height z (LPS mm) on an axial grid."""
    ds = Dataset()
    ds.SOPInstanceUID = generate_uid()
    ds.ImagePositionPatient = list(position) if position is not None else [-100.0, -120.0, float(z)]
    ds.ImageOrientationPatient = list(orientation)
    ds.PixelSpacing = [0.8, 0.7]
    ds.SliceThickness = 2.5
    ds.Rows = rows
    ds.Columns = columns
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    return ds


def series(zs) -> list[Dataset]:
    return [header(z) for z in zs]


def test_slices_are_ordered_by_position_not_by_file_name_or_instance_number(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    zs = [-50.0 + 2.5 * i for i in range(12)]
    names = [f"{generate_uid()}.dcm" for _ in zs]
    shuffled = list(zip(zs, names, strict=True))
    random.Random(3).shuffle(shuffled)
    for number, (z, name) in enumerate(shuffled, start=1):
        ds = header(z, InstanceNumber=number)  # instance numbers follow the shuffled order, not z
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.save_as(folder / name, enforce_file_format=False)
    headers = [pydicom.dcmread(p, stop_before_pixels=True, force=True) for p in sorted(folder.iterdir())]

    geometry = order_slices(headers)

    assert geometry.positions == pytest.approx(zs)
    assert [float(ds.ImagePositionPatient[2]) for ds in geometry.datasets] == pytest.approx(zs)
    assert geometry.slice_spacing == pytest.approx(2.5)
    assert geometry.pixel_spacing == (0.8, 0.7)
    assert geometry.slice_thickness == 2.5
    assert (geometry.rows, geometry.columns) == (64, 64)
    assert geometry.normal == pytest.approx((0.0, 0.0, 1.0))
    assert geometry.n_slices == 12


def test_positions_follow_the_normal_when_the_columns_run_towards_anterior():
    # Row direction +x, column direction -y: the normal is -z, so ascending position = descending z.
    flipped = [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    headers = [header(z, orientation=flipped) for z in (10.0, 0.0, 5.0, 15.0)]
    geometry = order_slices(headers)
    assert geometry.normal == pytest.approx((0.0, 0.0, -1.0))
    assert [ds.ImagePositionPatient[2] for ds in geometry.datasets] == [15.0, 10.0, 5.0, 0.0]
    assert geometry.positions == pytest.approx([-15.0, -10.0, -5.0, 0.0])


def test_a_single_slice_is_not_a_volume():
    with pytest.raises(GeometryError, match="not a volume: only 1 slice"):
        order_slices([header(0.0)])


def test_the_minimum_number_of_slices_is_a_parameter():
    with pytest.raises(GeometryError, match=r"only 2 slices \(at least 3"):
        order_slices(series([0.0, 1.0]))
    assert order_slices(series([0.0, 1.0]), min_slices=2).n_slices == 2


@pytest.mark.parametrize("keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"])
def test_missing_geometry_tags_are_refused(keyword):
    headers = series([0.0, 1.0, 2.0, 3.0])
    delattr(headers[2], keyword)
    with pytest.raises(GeometryError, match=f"missing .*{keyword}.* in 1 of 4 slices"):
        order_slices(headers)


def test_orientations_differing_between_slices_are_refused():
    headers = series([0.0, 1.0, 2.0, 3.0])
    headers[1].ImageOrientationPatient = [0.9848, 0.1736, 0.0, -0.1736, 0.9848, 0.0]
    with pytest.raises(GeometryError, match="orientations differ"):
        order_slices(headers)


@pytest.mark.parametrize(
    ("orientation", "plane"),
    [
        ([1.0, 0.0, 0.0, 0.0, 0.0, -1.0], "coronal"),
        ([0.0, 1.0, 0.0, 0.0, 0.0, -1.0], "sagittal"),
        ([1.0, 0.0, 0.0, 0.0, 0.7071068, -0.7071068], "oblique"),  # normal 45 degrees between y and z
    ],
)
def test_non_axial_series_are_refused_with_their_plane(orientation, plane):
    headers = [header(0, orientation=orientation, position=[float(i), float(i), float(i)]) for i in range(4)]
    with pytest.raises(GeometryError, match=rf"^{plane} series"):
        order_slices(headers)


def test_a_slightly_tilted_gantry_is_still_axial():
    assert plane_name((0.0, 0.34, 0.94)) == "axial"  # about 20 degrees
    assert plane_name((0.0, 0.57, 0.82)) == "oblique"  # about 35 degrees
    assert plane_name((0.0, -0.94, 0.34)) == "coronal"


def test_slices_of_different_sizes_are_refused():
    headers = series([0.0, 1.0, 2.0])
    headers[1].Rows = 128
    with pytest.raises(GeometryError, match=r"different sizes \(64x64, 128x64\)"):
        order_slices(headers)


def test_duplicate_positions_are_refused():
    with pytest.raises(GeometryError, match=r"duplicate slice position z=2.00 mm"):
        order_slices(series([0.0, 2.0, 2.0, 4.0]))


def test_a_gap_names_where_slices_are_missing():
    zs = [0.0, 2.0, 4.0, 6.0, 12.0, 14.0, 16.0]
    with pytest.raises(GeometryError, match=r"missing slices between z=6.00 and z=12.00 mm"):
        order_slices(series(zs))


def test_uneven_spacing_is_refused():
    zs = [0.0, 2.0, 4.0, 5.5, 7.5, 9.5]
    with pytest.raises(GeometryError, match="inconsistent slice spacing"):
        order_slices(series(zs))


def test_rounding_jitter_in_positions_is_accepted():
    zs = [0.0, 2.001, 3.999, 6.0005, 8.0]
    assert order_slices(series(zs)).slice_spacing == pytest.approx(2.0, abs=0.002)


def test_a_multiframe_image_is_refused_with_a_reason():
    with pytest.raises(GeometryError, match="multi-frame"):
        order_slices([header(0.0, NumberOfFrames=40)], min_slices=1)


@pytest.mark.realdata
def test_real_series_headers_are_ordered_along_z():
    folder = ctdata_path("covid-ct-md", "P001")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
    geometry = order_slices(headers)
    assert geometry.n_slices == 148
    assert geometry.slice_spacing == pytest.approx(2.0)
    assert all(b - a == pytest.approx(2.0) for a, b in zip(geometry.positions, geometry.positions[1:], strict=False))


@pytest.mark.realdata
def test_real_coronal_slices_are_refused_as_coronal():
    folder = ctdata_path("dicom-variety", "ny-sbu-single-slices", "A002304", "coronal")
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in folder.glob("*.dcm")]
    with pytest.raises(GeometryError, match=r"^coronal series"):
        order_slices(headers, min_slices=1)
