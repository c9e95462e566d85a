"""Loading and writing CT volumes (analysis.pipeline.volume): round trips, reorientation, refusals, real data."""

from __future__ import annotations

from datetime import date

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from analysis.pipeline.volume import (
    CTVolume,
    VolumeError,
    check_ct_headers,
    load_dicom_series,
    load_nifti,
    load_volume,
    write_dicom_series,
    write_label_nifti,
)
from tests.conftest import ctdata_path


def small_volume(shape=(6, 70, 80), spacing=(2.5, 0.8, 0.6), origin=(-30.5, -40.25, -100.0), seed=0) -> CTVolume:
    """A random volume of plausible HU (air to bone) with distinct, anisotropic spacing."""
    hu = np.random.default_rng(seed).integers(-1024, 1500, size=shape).astype(np.int16)
    return CTVolume(hu=hu, spacing=spacing, origin=origin)


@pytest.fixture
def folder(tmp_path):
    path = tmp_path / "series"
    path.mkdir()
    return path


def test_a_written_series_reads_back_identically(folder):
    volume = small_volume()
    paths = write_dicom_series(
        volume, folder, patient_id="PHANTOM-7", study_date=date(2020, 4, 2), sex="F", birth_year=1961,
        series_description="thick", accession_number="ACC1",
    )  # fmt: skip
    assert len(paths) == 6
    names = [p.name for p in paths]
    assert sorted(names) != names, "file names must not follow anatomical order"

    loaded = load_dicom_series(sorted(folder.iterdir()))

    np.testing.assert_array_equal(loaded.hu, volume.hu)
    assert loaded.hu.dtype == np.int16
    assert loaded.spacing == pytest.approx(volume.spacing)
    assert loaded.origin == pytest.approx(volume.origin)
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths]
    assert loaded.slice_uids == tuple(uids)
    assert loaded.stored_flips == (False, False)
    assert not loaded.stored_transposed
    header = pydicom.dcmread(paths[0])
    assert header.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert header.SOPClassUID == pydicom.uid.CTImageStorage
    assert (header.Modality, header.PatientID, header.PatientSex, header.PatientBirthDate) == (
        "CT", "PHANTOM-7", "F", "19610101",
    )  # fmt: skip
    assert (header.StudyDate, header.AccessionNumber, header.SeriesDescription) == ("20200402", "ACC1", "thick")
    assert len({str(pydicom.dcmread(p).SeriesInstanceUID) for p in paths}) == 1


def test_an_independent_reader_sees_the_same_series(folder):
    volume = small_volume()
    write_dicom_series(volume, folder, patient_id="P")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))  # GDCM sorts by position itself
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.hu)
    assert image.GetOrigin() == pytest.approx(volume.origin)
    assert image.GetSpacing() == pytest.approx(volume.spacing[::-1])


def test_shared_study_and_series_uids_are_used(folder):
    paths = write_dicom_series(small_volume(), folder, patient_id="P", study_uid="1.2.3.4", series_uid="1.2.3.4.5")
    header = pydicom.dcmread(paths[-1], stop_before_pixels=True)
    assert (header.StudyInstanceUID, header.SeriesInstanceUID) == ("1.2.3.4", "1.2.3.4.5")


def _restore(folder, volume: CTVolume, row_dir, col_dir) -> None:
    """Rewrite a canonical series as if the scanner had stored its slices along other in-plane directions."""
    sz, sy, sx = volume.spacing
    ny, nx = volume.shape[1:]
    step = {(1, 0, 0): sx, (0, 1, 0): sy}
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        k = round((float(ds.ImagePositionPatient[2]) - volume.origin[2]) / sz)
        plane = volume.hu[k]
        # Stored pixel (r, c) shows the canonical voxel reached by walking r along col_dir, c along row_dir.
        if abs(row_dir[1]) == 1:  # rows run along y: stored[r, c] = canonical[c, r]
            plane = plane.T
        if row_dir[0] < 0 or row_dir[1] < 0:
            plane = plane[:, ::-1]
        if col_dir[0] < 0 or col_dir[1] < 0:
            plane = plane[::-1, :]
        corner = np.array(volume.origin, dtype=float)
        corner[2] += k * sz
        if row_dir[0] < 0:
            corner[0] += (nx - 1) * sx
        if row_dir[1] < 0:
            corner[1] += (ny - 1) * sy
        if col_dir[0] < 0:
            corner[0] += (nx - 1) * sx
        if col_dir[1] < 0:
            corner[1] += (ny - 1) * sy
        ds.Rows, ds.Columns = plane.shape
        ds.PixelData = (plane.astype(np.int32) + 1024).astype(np.uint16).tobytes()
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.ImagePositionPatient = [float(v) for v in corner]
        ds.PixelSpacing = [step[tuple(abs(v) for v in col_dir)], step[tuple(abs(v) for v in row_dir)]]
        ds.save_as(path)


@pytest.mark.parametrize(
    ("row_dir", "col_dir", "transposed", "flips"),
    [
        ((-1, 0, 0), (0, -1, 0), False, (True, True)),  # prone patient: image turned by 180 degrees
        ((1, 0, 0), (0, -1, 0), False, (True, False)),  # anterior at the bottom; normal -z: slices reversed
        ((0, 1, 0), (1, 0, 0), True, (False, False)),  # rows run along y: transposed, normal -z
    ],
)
def test_other_stored_orientations_are_reoriented_to_canonical(folder, row_dir, col_dir, transposed, flips):
    volume = small_volume()
    write_dicom_series(volume, folder, patient_id="P")
    _restore(folder, volume, row_dir, col_dir)

    loaded = load_dicom_series(list(folder.iterdir()))

    np.testing.assert_array_equal(loaded.hu, volume.hu)
    assert loaded.spacing == pytest.approx(volume.spacing)
    assert loaded.origin == pytest.approx(volume.origin)
    assert loaded.stored_transposed == transposed
    assert loaded.stored_flips == flips
    # A label drawn on the canonical grid maps back onto the stored image, pixel for pixel.
    stored = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(p) for p in folder.iterdir())}
    for k in (0, 3):
        image = stored[loaded.slice_uids[k]]
        hu = image.pixel_array.astype(np.int32) - 1024
        np.testing.assert_array_equal(loaded.to_stored_plane(loaded.hu[k]), hu)
        np.testing.assert_array_equal(loaded.from_stored_plane(hu), loaded.hu[k])
        assert float(image.ImagePositionPatient[2]) == pytest.approx(loaded.z_mm(k))


def test_values_below_air_are_clipped_to_minus_1024(folder):
    volume = small_volume()
    write_dicom_series(volume, folder, patient_id="P")
    for path in folder.iterdir():  # padding outside the reconstruction circle, as some scanners store it
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.int32) - 1024
        pixels[:4, :4] = -3024
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = 0
        ds.PixelData = pixels.astype(np.int16).tobytes()
        ds.save_as(path)
    loaded = load_dicom_series(list(folder.iterdir()))
    assert loaded.hu.min() == -1024
    np.testing.assert_array_equal(loaded.hu[:, 4:, 4:], volume.hu[:, 4:, 4:])


def _edit(folder, **changes) -> list:
    paths = list(folder.iterdir())
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword, value in changes.items():
            if value is None:
                delattr(ds, keyword)
            else:
                setattr(ds, keyword, value)
        ds.save_as(path)
    return paths


def test_a_missing_modality_is_accepted_when_values_are_hu(folder):
    volume = small_volume()
    write_dicom_series(volume, folder, patient_id="P")
    loaded = load_dicom_series(_edit(folder, Modality=None))
    np.testing.assert_array_equal(loaded.hu, volume.hu)


def test_another_modality_is_refused(folder):
    write_dicom_series(small_volume(), folder, patient_id="P")
    paths = _edit(folder, Modality="MR")
    with pytest.raises(VolumeError, match="modality MR: only CT"):
        load_dicom_series(paths)
    with pytest.raises(VolumeError, match="modality MR: only CT"):  # from headers alone, as ingest reads them
        check_ct_headers([pydicom.dcmread(p, stop_before_pixels=True) for p in paths])
    check_ct_headers([pydicom.dcmread(p, stop_before_pixels=True) for p in _edit(folder, Modality="CT")])


def test_values_without_air_are_not_hounsfield_units(folder):
    write_dicom_series(small_volume(), folder, patient_id="P")
    with pytest.raises(VolumeError, match=r"no air anywhere .* \(lowest value 0;"):
        load_dicom_series(_edit(folder, RescaleIntercept=0))  # stored 0..2524 read as HU


def test_a_series_without_modality_and_without_air_says_both(folder):
    write_dicom_series(small_volume(), folder, patient_id="P")
    with pytest.raises(VolumeError, match=r"no Modality tag.*no air|no air.*no Modality tag"):
        load_dicom_series(_edit(folder, RescaleIntercept=0, Modality=None))


def test_a_picture_of_values_0_to_255_is_refused(folder):
    picture = np.random.default_rng(1).integers(0, 256, size=(4, 64, 64)).astype(np.int16)
    write_dicom_series(CTVolume(hu=picture - 1024, spacing=(1.0, 1.0, 1.0)), folder, patient_id="P")
    with pytest.raises(VolumeError, match=r"only holds values 0\.\.255"):
        load_dicom_series(_edit(folder, RescaleIntercept=0))


def test_8_bit_images_are_refused(folder):
    write_dicom_series(small_volume(), folder, patient_id="P")
    paths = list(folder.iterdir())
    for path in paths:
        ds = pydicom.dcmread(path)
        pixels = (ds.pixel_array >> 4).astype(np.uint8)
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        ds.PixelData = pixels.tobytes()
        ds.save_as(path)
    with pytest.raises(VolumeError, match="8-bit image"):
        load_dicom_series(paths)


def test_absurd_values_are_refused(folder):
    write_dicom_series(small_volume(), folder, patient_id="P")
    with pytest.raises(VolumeError, match="not plausible Hounsfield units"):
        load_dicom_series(_edit(folder, RescaleSlope=40))


def test_small_images_and_single_slices_are_refused(folder, tmp_path):
    write_dicom_series(small_volume(shape=(5, 32, 70)), folder, patient_id="P")
    with pytest.raises(VolumeError, match="32x70 pixels are too small"):
        load_dicom_series(list(folder.iterdir()))
    single = tmp_path / "single"
    paths = write_dicom_series(small_volume(shape=(1, 64, 64)), single, patient_id="P")
    with pytest.raises(VolumeError, match="not a volume: only 1 slice"):
        load_dicom_series(paths)


def test_a_file_that_is_not_dicom_is_named(folder):
    paths = write_dicom_series(small_volume(), folder, patient_id="P")
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(VolumeError, match=r"notes\.txt is not a readable DICOM file"):
        load_dicom_series([*paths, folder / "notes.txt"])
    assert load_volume(folder).shape == (6, 70, 80)  # a folder: only its DICOM files are read


def test_geometry_problems_surface_as_volume_errors(folder):
    paths = write_dicom_series(small_volume(shape=(8, 64, 64)), folder, patient_id="P")
    paths[4].unlink()
    with pytest.raises(VolumeError, match="missing slices between z="):
        load_dicom_series([p for p in paths if p.exists()])


def test_nifti_in_ras_is_reoriented_to_lps(tmp_path):
    volume = small_volume()
    # The same voxels stored with x towards the right and y towards the front (RAS, as nibabel writes).
    image = sitk.GetImageFromArray(volume.hu[:, ::-1, ::-1].astype(np.float32))
    sz, sy, sx = volume.spacing
    image.SetSpacing((sx, sy, sz))
    ny, nx = volume.shape[1:]
    image.SetOrigin((volume.origin[0] + (nx - 1) * sx, volume.origin[1] + (ny - 1) * sy, volume.origin[2]))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / "ras.nii.gz"
    sitk.WriteImage(image, str(path))

    loaded = load_nifti(path)

    np.testing.assert_array_equal(loaded.hu, volume.hu)
    assert loaded.spacing == pytest.approx(volume.spacing)
    assert loaded.origin == pytest.approx(volume.origin, abs=1e-4)
    assert loaded.slice_uids is None
    assert load_volume(path).shape == volume.shape


def test_nifti_without_air_is_refused(tmp_path):
    path = tmp_path / "mask.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.full((5, 64, 64), 300, np.int16)), str(path))
    with pytest.raises(VolumeError, match=r"no air anywhere in mask\.nii\.gz"):
        load_nifti(path)


def test_label_map_is_written_with_the_volume_geometry(tmp_path):
    volume = small_volume()
    labels = np.zeros(volume.shape, np.uint8)
    labels[2, 10:20, 30:35] = 2
    path = write_label_nifti(labels, volume, tmp_path / "labels.nii.gz")
    image = sitk.ReadImage(str(path))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), labels)
    assert image.GetSpacing() == pytest.approx(volume.spacing[::-1])
    assert image.GetOrigin() == pytest.approx(volume.origin, abs=1e-4)
    with pytest.raises(ValueError, match="does not match the volume"):
        write_label_nifti(labels[1:], volume, tmp_path / "bad.nii.gz")


@pytest.mark.realdata
def test_real_jpeg_lossless_chest_series_loads_in_position_order():
    folder = ctdata_path("covid-ct-md", "P001")
    paths = sorted(folder.glob("*.dcm"))
    volume = load_dicom_series(paths)
    assert volume.shape == (148, 512, 512)
    assert volume.spacing == pytest.approx((2.0, 0.748046875, 0.748046875))
    heights = {}
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        heights[str(ds.SOPInstanceUID)] = float(ds.ImagePositionPatient[2])
    z = [heights[uid] for uid in volume.slice_uids]
    assert z == sorted(z)
    assert z[0] == pytest.approx(volume.origin[2])
    assert volume.hu.min() == -1024
    # Lungs and soft tissue: a chest has plenty of both.
    assert (volume.hu < -600).mean() > 0.2
    assert ((volume.hu > -100) & (volume.hu < 100)).mean() > 0.1


@pytest.mark.realdata
def test_real_jpeg2000_series_loads():
    volume = load_volume(ctdata_path("dicom-variety", "abdomen-jpeg2000-series"))
    assert volume.shape == (20, 512, 512)
    assert volume.spacing[0] == pytest.approx(2.0)
    assert volume.slice_thickness == pytest.approx(3.0)


@pytest.mark.realdata
def test_real_nifti_chest_crop_loads():
    volume = load_nifti(ctdata_path("dicom-variety", "nifti", "chest_crop_pulmonary_report_1.5mm.nii.gz"))
    assert volume.spacing == pytest.approx((1.5, 1.5, 1.5))
    assert volume.shape[0] > 50
    assert volume.hu.min() == -1024


@pytest.mark.realdata
def test_real_single_slices_are_not_a_volume():
    folder = ctdata_path("dicom-variety", "ny-sbu-single-slices")
    for path in sorted(folder.glob("*/axial/*.dcm"))[:2]:
        with pytest.raises(VolumeError, match="not a volume: only 1 slice"):
            load_dicom_series([path])


@pytest.mark.realdata
def test_real_two_slices_without_modality_are_not_a_volume():
    folder = ctdata_path("dicom-variety", "misc-single-slices", "lungmask_testdata")
    with pytest.raises(VolumeError, match=r"not a volume: only 2 slices \(at least 3 are needed\)"):
        load_volume(folder)


@pytest.mark.realdata
def test_real_implicit_vr_slices_load():
    volume = load_volume(ctdata_path("dicom-variety", "misc-single-slices", "dcmqi_ct-3slice"))
    assert volume.shape == (3, 512, 512)
    assert volume.spacing[0] == pytest.approx(1.0, abs=1e-6)


def test_a_phantom_survives_the_dicom_round_trip(folder):
    from analysis.phantoms import make_phantom, random_spec

    phantom = make_phantom(random_spec(1, "mild"), slice_thickness_mm=10.0, matrix=128, pixel_spacing_mm=2.8)
    paths = write_dicom_series(phantom.volume, folder, patient_id="DEMO-1", slice_thickness=10.0)
    loaded = load_volume(folder)
    np.testing.assert_array_equal(loaded.hu, phantom.volume.hu)
    assert loaded.spacing == pytest.approx((10.0, 2.8, 2.8))
    assert loaded.origin == pytest.approx(phantom.volume.origin)
    assert loaded.slice_thickness == pytest.approx(10.0)
    assert len(paths) == 27
