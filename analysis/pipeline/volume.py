"""CTVolume: a CT scan as Hounsfield units on a (z, y, x) grid with its geometry; loaders and writers.

Canonical orientation (every loader returns it): axial slices; z index grows towards the head
(superior), y towards the back (posterior), x towards the patient's left; so in DICOM's LPS
patient coordinates the direction matrix is the identity. Arrays are indexed [z, y, x] and
`spacing` is (sz, sy, sx) in mm.

Loaders refuse input that is not a CT volume in HU (wrong modality, 8-bit pictures, values that
cannot be Hounsfield units, too few slices or pixels) with a `VolumeError` that says why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.misc import is_dicom
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from analysis.pipeline.dicom_geometry import GeometryError, SliceGeometry, order_slices

# HU below this is padding outside the reconstruction circle, not tissue: every loader clips to it.
HU_MIN = -1024
# Stored values for the writer: unsigned 16 bit with this intercept (the common scanner layout).
WRITE_INTERCEPT = -1024
MIN_SLICES = 3
MIN_MATRIX = 64
# A CT scan of a body always holds air (outside the body, in the lungs or the bowel) near -1000 HU.
AIR_HU = -900
# Values beyond these cannot be Hounsfield units of a patient (even metal stays below ~30000 raw).
PLAUSIBLE_HU = (-10000.0, 30000.0)
NIFTI_SUFFIXES = (".nii", ".nii.gz")


class VolumeError(ValueError):
    """The input is not a CT volume this pipeline can analyse; the message says why."""


@dataclass(frozen=True)
class CTVolume:
    """HU int16 array (z, y, x) with spacing (mm), origin (LPS mm of voxel [0,0,0]) and slice ids.

    For DICOM input, `stored_transposed` and `stored_flips` record how each stored slice was turned
    into the canonical (y, x) plane, so a label map can be drawn back onto the stored images
    (see `to_stored_plane`). `slice_thickness` is the nominal reconstructed thickness in mm when
    known (it may exceed the spacing for overlapping slices).
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    # SOPInstanceUID of each z index for DICOM input (None for NIfTI or resampled volumes).
    slice_uids: tuple[str, ...] | None = None
    slice_thickness: float | None = None
    # Stored slice -> canonical plane: transpose first (stored rows ran along x), then flip y, x.
    stored_transposed: bool = False
    stored_flips: tuple[bool, bool] = (False, False)

    def __post_init__(self) -> None:
        if self.hu.ndim != 3:
            raise ValueError(f"a CT volume must be 3-D (z, y, x), got shape {self.hu.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ValueError(f"spacing must be three positive numbers in mm, got {self.spacing}")
        if self.slice_uids is not None and len(self.slice_uids) != self.hu.shape[0]:
            raise ValueError("slice_uids must name every slice")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def voxel_volume_ml(self) -> float:
        sz, sy, sx = self.spacing
        return sz * sy * sx / 1000.0

    @property
    def pixel_area_mm2(self) -> float:
        return self.spacing[1] * self.spacing[2]

    def z_mm(self, index: int) -> float:
        """LPS z (mm, towards the head) of slice `index`."""
        return self.origin[2] + index * self.spacing[0]

    def to_stored_plane(self, plane: np.ndarray) -> np.ndarray:
        """Map a canonical (y, x) plane (a label slice, a heat map) back to the stored image's (row, column)."""
        if self.stored_flips[0]:
            plane = plane[::-1, :]
        if self.stored_flips[1]:
            plane = plane[:, ::-1]
        if self.stored_transposed:
            plane = plane.T
        return np.ascontiguousarray(plane)

    def from_stored_plane(self, plane: np.ndarray) -> np.ndarray:
        """Map a stored image's (row, column) plane to the canonical (y, x) plane."""
        if self.stored_transposed:
            plane = plane.T
        if self.stored_flips[0]:
            plane = plane[::-1, :]
        if self.stored_flips[1]:
            plane = plane[:, ::-1]
        return np.ascontiguousarray(plane)


def to_thick_slabs(volume: CTVolume, slices_per_slab: int) -> CTVolume:
    """Simulate a thick-section reconstruction: each output slice is the mean of `slices_per_slab` input slices.

    Trailing slices that do not fill a whole slab are dropped. The slab's position is the centre of
    the slices it averages, so z positions stay comparable with the thin scan.
    """
    n = int(slices_per_slab)
    if n < 1:
        raise ValueError(f"slices_per_slab must be at least 1, got {slices_per_slab}")
    slabs = volume.shape[0] // n
    if slabs < 2:
        raise VolumeError(f"{volume.shape[0]} slices cannot make two slabs of {n}")
    hu = volume.hu[: slabs * n].reshape(slabs, n, *volume.shape[1:]).astype(np.float32).mean(axis=1)
    sz, sy, sx = volume.spacing
    ox, oy, oz = volume.origin
    return replace(
        volume,
        hu=np.rint(hu).astype(np.int16),
        spacing=(sz * n, sy, sx),
        origin=(ox, oy, oz + sz * (n - 1) / 2),
        slice_uids=None,
        slice_thickness=sz * n,
    )


# --- DICOM -------------------------------------------------------------------------------------


def load_dicom_series(paths: Sequence[Path]) -> CTVolume:
    """Read the files of ONE DICOM CT series into a canonical CTVolume (HU int16).

    Files are ordered by position along the slice normal; compressed transfer syntaxes (JPEG
    Lossless, JPEG 2000, ...) are decoded by pylibjpeg through pydicom. Raises VolumeError.
    """
    if not paths:
        raise VolumeError("no files given")
    datasets = []
    for path in paths:
        try:
            datasets.append(pydicom.dcmread(path))
        except (InvalidDicomError, EOFError, OSError, ValueError) as exc:
            raise VolumeError(f"{Path(path).name} is not a readable DICOM file ({exc})") from exc

    check_ct_headers(datasets)
    for ds in datasets:
        if "PixelData" not in ds:
            raise VolumeError(f"{_filename(ds)} has no pixel data (is it a report or a structured document?)")
    try:
        geometry = order_slices(datasets, min_slices=MIN_SLICES)
    except GeometryError as exc:
        raise VolumeError(str(exc)) from exc
    if geometry.rows < MIN_MATRIX or geometry.columns < MIN_MATRIX:
        raise VolumeError(
            f"images of {geometry.rows}x{geometry.columns} pixels are too small for a CT volume "
            f"(at least {MIN_MATRIX}x{MIN_MATRIX})"
        )

    rescales = [
        (float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0))
        for ds in geometry.datasets
    ]
    # Integer arithmetic when the rescale allows it (the usual case): a float pass over 40 M voxels costs seconds.
    integral = all(slope == 1.0 and intercept.is_integer() for slope, intercept in rescales)
    stack = np.empty((geometry.n_slices, geometry.rows, geometry.columns), dtype=np.int32 if integral else np.float32)
    for k, ds in enumerate(geometry.datasets):
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # decoders raise many types; the reason is what matters
            raise VolumeError(f"cannot decode the pixels of {_filename(ds)}: {exc}") from exc
        if pixels.shape != (geometry.rows, geometry.columns):
            raise VolumeError(f"{_filename(ds)} holds pixels of shape {pixels.shape}, expected one greyscale image")
        slope, intercept = rescales[k]
        if integral:
            stack[k] = pixels
            stack[k] += int(intercept)
        else:
            np.multiply(pixels, slope, out=stack[k], casting="unsafe")
            stack[k] += intercept

    has_modality = any(ds.get("Modality") for ds in datasets)
    _check_hu(stack, what="the series" if has_modality else "the series (it has no Modality tag)")
    return _canonical_from_dicom(stack, geometry)


def check_ct_headers(headers: Sequence[Dataset]) -> None:
    """Refuse, from the headers alone (pixels may be absent), series that are not CT in HU.

    Checks modality (a missing Modality tag is let through: the values decide later), 8-bit and
    colour images. Ingest can call it on `stop_before_pixels` reads; the loader calls it too.
    """
    modalities = {str(ds.get("Modality", "")).strip().upper() for ds in headers} - {""}
    if modalities and modalities != {"CT"}:
        raise VolumeError(f"modality {', '.join(sorted(modalities))}: only CT series can be analysed")
    for ds in headers:
        if int(ds.get("BitsAllocated", 16)) == 8:
            raise VolumeError(
                f"{_filename(ds)} is an 8-bit image (a screenshot or a secondary capture?), not CT in Hounsfield units"
            )
        if int(ds.get("SamplesPerPixel", 1)) != 1:
            raise VolumeError(f"{_filename(ds)} is a colour image, not CT in Hounsfield units")


def _check_hu(values: np.ndarray, *, what: str) -> None:
    """Refuse arrays whose values cannot be Hounsfield units of a CT scan."""
    low, high = float(values.min()), float(values.max())
    if low >= 0 and high <= 255:
        raise VolumeError(
            f"{what} only holds values 0..255: it looks like an 8-bit picture (a windowed export), not Hounsfield units"
        )
    if low < PLAUSIBLE_HU[0] or high > PLAUSIBLE_HU[1]:
        raise VolumeError(f"values from {low:.0f} to {high:.0f} are not plausible Hounsfield units in {what}")
    if low > AIR_HU:
        raise VolumeError(
            f"no air anywhere in {what} (lowest value {low:.0f}; air is about -1000 HU): "
            "the values are not Hounsfield units (wrong rescale intercept?) or this is not a CT scan"
        )


def _to_hu_int16(values: np.ndarray) -> np.ndarray:
    if not np.issubdtype(values.dtype, np.integer):
        values = np.rint(values)
    return np.clip(values, HU_MIN, np.iinfo(np.int16).max).astype(np.int16)


def _dominant_axis(direction: Sequence[float]) -> tuple[int, bool]:
    """LPS axis (0 x, 1 y, 2 z) a direction mostly runs along, and whether it runs against it."""
    axis = int(np.argmax(np.abs(direction)))
    return axis, direction[axis] < 0


def _canonical_from_dicom(stack: np.ndarray, geometry: SliceGeometry) -> CTVolume:
    """Transpose and flip the (slice, row, column) stack to (z, y, x) with identity LPS directions."""
    row_dir = np.array(geometry.row_direction)  # column index grows along it
    col_dir = np.array(geometry.column_direction)  # row index grows along it
    row_axis, row_negative = _dominant_axis(row_dir)
    col_axis, col_negative = _dominant_axis(col_dir)
    if {row_axis, col_axis} != {0, 1}:
        raise VolumeError("the image rows and columns do not lie in the axial plane")
    transposed = row_axis == 1  # stored columns run along y: swap so the last axis is x
    flip_z = geometry.normal[2] < 0

    hu = _to_hu_int16(stack)
    row_spacing, column_spacing = geometry.pixel_spacing
    if transposed:
        hu = hu.transpose(0, 2, 1)
        flip_y, flip_x = row_negative, col_negative
        spacing_y, spacing_x = column_spacing, row_spacing
    else:
        flip_y, flip_x = col_negative, row_negative
        spacing_y, spacing_x = row_spacing, column_spacing
    hu = np.ascontiguousarray(hu[:: -1 if flip_z else 1, :: -1 if flip_y else 1, :: -1 if flip_x else 1])

    # Origin: LPS position of the stored voxel that became [0, 0, 0].
    n, rows, columns = stack.shape
    k0 = n - 1 if flip_z else 0
    if transposed:
        r0 = rows - 1 if flip_x else 0  # canonical x came from the stored row index
        c0 = columns - 1 if flip_y else 0
    else:
        r0 = rows - 1 if flip_y else 0
        c0 = columns - 1 if flip_x else 0
    origin = np.array(geometry.image_positions[k0]) + r0 * row_spacing * col_dir + c0 * column_spacing * row_dir
    uids = [str(ds.get("SOPInstanceUID", "")) for ds in geometry.datasets]
    if flip_z:
        uids.reverse()
    return CTVolume(
        hu=hu,
        spacing=(float(geometry.slice_spacing), float(spacing_y), float(spacing_x)),
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        slice_uids=tuple(uids) if all(uids) else None,
        slice_thickness=geometry.slice_thickness,
        stored_transposed=transposed,
        stored_flips=(bool(flip_y), bool(flip_x)),
    )


def _filename(ds: Dataset) -> str:
    filename = getattr(ds, "filename", None)
    return Path(filename).name if isinstance(filename, str | Path) and str(filename) else "a slice"


def write_dicom_series(
    volume: CTVolume,
    folder: Path,
    *,
    patient_id: str,
    study_uid: str | None = None,
    series_uid: str | None = None,
    study_date: date | None = None,
    series_description: str = "",
    accession_number: str = "",
    sex: str = "",
    birth_year: int | None = None,
    slice_thickness: float | None = None,
) -> list[Path]:
    """Write `volume` as a CT Image Storage series (explicit VR little endian, uncompressed) in `folder`.

    Files are named by their SOPInstanceUID, so the names are not in anatomical order. Returns the
    paths in canonical z order (feet to head). Values below -1024 HU are stored as -1024.
    """
    if not patient_id:
        raise ValueError("patient_id is required")
    if sex not in ("", "M", "F", "O"):
        raise ValueError(f"sex must be 'M', 'F', 'O' or empty, got {sex!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    when = study_date or date.today()
    now = datetime.now().strftime("%H%M%S")
    thickness = slice_thickness or volume.slice_thickness or volume.spacing[0]
    sz, sy, sx = volume.spacing
    stored = (np.clip(volume.hu.astype(np.int32), HU_MIN, None) - WRITE_INTERCEPT).astype(np.uint16)

    paths = []
    for k in range(volume.shape[0]):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PatientName = patient_id
        ds.PatientID = patient_id
        ds.PatientBirthDate = f"{birth_year:04d}0101" if birth_year else ""
        ds.PatientSex = sex
        ds.StudyInstanceUID = study_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = when.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now
        ds.StudyID = "1"
        ds.AccessionNumber = accession_number
        ds.ReferringPhysicianName = ""
        ds.Modality = "CT"
        ds.Manufacturer = "covidsite"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 1
        ds.SeriesDescription = series_description
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.InstanceNumber = k + 1
        ds.AcquisitionNumber = 1
        ds.KVP = 120
        ds.ImagePositionPatient = [_ds(volume.origin[0]), _ds(volume.origin[1]), _ds(volume.origin[2] + k * sz)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = _ds(volume.origin[2] + k * sz)
        ds.PixelSpacing = [_ds(sy), _ds(sx)]
        ds.SliceThickness = _ds(thickness)
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = WRITE_INTERCEPT
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.WindowCenter = -600
        ds.WindowWidth = 1500
        ds.PixelData = stored[k].tobytes()
        path = folder / f"{sop_uid}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ds(value: float) -> str:
    """A decimal string (at most 16 characters) that keeps the value exact to well below a micrometre."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if len(text) <= 16 else f"{value:.10g}"


# --- NIfTI -------------------------------------------------------------------------------------


def load_nifti(path: Path) -> CTVolume:
    """Read a NIfTI CT volume (values in HU) reoriented to canonical LPS. Raises VolumeError."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise VolumeError(f"{path.name} is not a NIfTI file (.nii or .nii.gz)")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise VolumeError(f"{path.name} is not a readable NIfTI file: {str(exc).strip().splitlines()[-1]}") from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{path.name} is not a single 3-D greyscale volume "
            f"({image.GetDimension()}-D, {image.GetNumberOfComponentsPerPixel()} component(s))"
        )
    if image.GetPixelID() in (sitk.sitkUInt8, sitk.sitkInt8):
        raise VolumeError(f"{path.name} holds 8-bit values, not CT in Hounsfield units")
    # The nearest axis permutation and flips to LPS (DICOM naming: x to Left, y to Posterior, z to Superior).
    image = sitk.DICOMOrient(image, "LPS")
    direction = np.array(image.GetDirection()).reshape(3, 3)
    if np.abs(np.diag(direction)).min() < math.cos(math.radians(30)):
        raise VolumeError(f"{path.name} is not an axial volume (direction matrix {np.round(direction, 3).tolist()})")
    size = image.GetSize()  # x, y, z
    if size[2] < MIN_SLICES:
        raise VolumeError(f"not a volume: only {size[2]} slice(s) in {path.name}")
    if min(size[:2]) < MIN_MATRIX:
        raise VolumeError(f"images of {size[1]}x{size[0]} pixels are too small for a CT volume")
    values = sitk.GetArrayFromImage(image)  # z, y, x
    _check_hu(values, what=path.name)
    sx, sy, sz = image.GetSpacing()
    ox, oy, oz = image.GetOrigin()
    return CTVolume(
        hu=_to_hu_int16(values),
        spacing=(float(sz), float(sy), float(sx)),
        origin=(float(ox), float(oy), float(oz)),
    )


def write_label_nifti(labels: np.ndarray, volume: CTVolume, path: Path) -> Path:
    """Write a label map on `volume`'s canonical grid to NIfTI (.nii.gz) with the volume's geometry."""
    import SimpleITK as sitk

    labels = np.asarray(labels)
    if labels.shape != volume.shape:
        raise ValueError(f"label map shape {labels.shape} does not match the volume {volume.shape}")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 255:
        raise ValueError("labels must lie in 0..255")
    image = sitk.GetImageFromArray(labels.astype(np.uint8))
    sz, sy, sx = volume.spacing
    image.SetSpacing((sx, sy, sz))
    image.SetOrigin(volume.origin)
    image.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


# --- either --------------------------------------------------------------------------------------


def load_volume(path: Path) -> CTVolume:
    """Load a NIfTI file, or every DICOM file in a folder (one series), as a canonical CTVolume."""
    path = Path(path)
    if path.is_dir():
        # Licences, read-me files and DICOMDIR indexes travel with series: keep the image files.
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "DICOMDIR" and is_dicom(p))
        if not files:
            raise VolumeError(f"{path.name} holds no DICOM files")
        return load_dicom_series(files)
    if path.name.endswith(NIFTI_SUFFIXES):
        return load_nifti(path)
    if not path.exists():
        raise VolumeError(f"{path} does not exist")
    raise VolumeError(f"{path.name}: give a NIfTI file (.nii, .nii.gz) or a folder with one DICOM series")
