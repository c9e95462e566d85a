"""Geometric validation and ordering of the slices of one DICOM series.

Shared by upload ingest (which checks headers read with ``stop_before_pixels``) and the volume
loader. Slices are ordered by their position along the slice normal (the cross product of the
two ImageOrientationPatient direction cosines), never by file name or InstanceNumber, and a
series that is not a usable axial volume is refused with a message a person can act on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

# A slice normal within this angle of the patient z axis counts as axial.
AXIAL_TOLERANCE_DEG = 30.0
# Direction cosines of two slices of one series may differ by rounding only.
ORIENTATION_TOLERANCE = 1e-3
# Two slices closer than this (mm) along the normal sit at the same position.
DUPLICATE_TOLERANCE_MM = 1e-3
# A step larger than this multiple of the median step means slices are missing.
GAP_FACTOR = 1.5


class GeometryError(ValueError):
    """The slices do not form one regular axial volume; the message says why."""


@dataclass(frozen=True)
class SliceGeometry:
    """The datasets of one series sorted along the slice normal, with the grid they share.

    ``positions`` are the slice positions along ``normal`` in mm (ascending, one per dataset);
    ``image_positions`` the matching ImagePositionPatient triplets (LPS mm).
    """

    datasets: tuple[Dataset, ...]
    rows: int
    columns: int
    pixel_spacing: tuple[float, float]  # (between rows, between columns) in mm
    slice_spacing: float  # median step between consecutive positions, mm
    slice_thickness: float | None  # the SliceThickness tag, when present
    orientation: tuple[float, float, float, float, float, float]
    positions: tuple[float, ...]
    image_positions: tuple[tuple[float, float, float], ...]
    normal: tuple[float, float, float]

    @property
    def n_slices(self) -> int:
        return len(self.datasets)

    @property
    def row_direction(self) -> tuple[float, float, float]:
        """LPS direction in which the column index grows (along a row)."""
        return self.orientation[0], self.orientation[1], self.orientation[2]

    @property
    def column_direction(self) -> tuple[float, float, float]:
        """LPS direction in which the row index grows (down a column)."""
        return self.orientation[3], self.orientation[4], self.orientation[5]


def plane_name(normal: Sequence[float], tolerance_deg: float = AXIAL_TOLERANCE_DEG) -> str:
    """Name the acquisition plane of a slice normal: axial, coronal, sagittal or oblique."""
    limit = math.cos(math.radians(tolerance_deg))
    nx, ny, nz = (abs(float(v)) for v in normal)
    if nz >= limit:
        return "axial"
    if ny >= limit:
        return "coronal"
    if nx >= limit:
        return "sagittal"
    return "oblique"


def order_slices(
    headers: Sequence[Dataset],
    *,
    min_slices: int = 3,
    spacing_tolerance: float = 0.1,
) -> SliceGeometry:
    """Sort the datasets of ONE series along the slice normal and check they form a regular axial volume.

    ``spacing_tolerance`` is the relative deviation from the median step allowed before the
    spacing is called inconsistent (steps beyond ``GAP_FACTOR`` x median are reported as gaps).
    Raises GeometryError with a readable reason.
    """
    n = len(headers)
    if n < min_slices:
        if n == 0:
            raise GeometryError("not a volume: no slices")
        noun = "slice" if n == 1 else "slices"
        raise GeometryError(f"not a volume: only {n} {noun} (at least {min_slices} are needed)")

    for ds in headers:
        frames = ds.get("NumberOfFrames")
        if frames is not None and int(frames) > 1:
            raise GeometryError(
                f"{_name(ds)} is a multi-frame image ({int(frames)} frames); "
                "only series of single-frame slices are supported"
            )

    for keyword, label in (
        ("ImagePositionPatient", "Image Position (Patient)"),
        ("ImageOrientationPatient", "Image Orientation (Patient)"),
        ("PixelSpacing", "Pixel Spacing"),
        ("Rows", "Rows"),
        ("Columns", "Columns"),
    ):
        missing = [ds for ds in headers if ds.get(keyword) is None or ds.get(keyword) == ""]
        if missing:
            raise GeometryError(
                f"missing {label} ({keyword}) in {len(missing)} of {n} slices (first: {_name(missing[0])}); "
                "the slices cannot be placed in space"
            )

    orientations = np.array([_floats(ds, "ImageOrientationPatient", 6) for ds in headers])
    # The plane comes first: "coronal series" helps more than "orientations differ" for a mixed upload.
    normals = np.cross(orientations[:, :3], orientations[:, 3:])
    lengths = np.linalg.norm(normals, axis=1)
    if (lengths < 0.5).any():
        bad = int(np.argmax(lengths < 0.5))
        raise GeometryError(
            f"invalid Image Orientation (Patient) {_fmt(orientations[bad])} in {_name(headers[bad])}: "
            "the two directions are parallel"
        )
    for i, plane in enumerate(plane_name(v / length) for v, length in zip(normals, lengths, strict=True)):
        if plane != "axial":
            raise GeometryError(
                f"{plane} series: only axial CT series can be analysed "
                f"({_name(headers[i])} has slice normal {_fmt(normals[i] / lengths[i])})"
            )
    reference = orientations[0]
    differs = np.abs(orientations - reference).max(axis=1) > ORIENTATION_TOLERANCE
    if differs.any():
        other = headers[int(np.argmax(differs))]
        raise GeometryError(
            f"slice orientations differ within the series ({_name(headers[0])}: {_fmt(reference)}, "
            f"{_name(other)}: {_fmt(orientations[int(np.argmax(differs))])}); it is not one volume"
        )
    row_dir, col_dir = reference[:3], reference[3:]
    normal = np.cross(row_dir, col_dir)
    normal = normal / float(np.linalg.norm(normal))

    sizes = {(int(ds.Rows), int(ds.Columns)) for ds in headers}
    if len(sizes) > 1:
        listed = ", ".join(f"{r}x{c}" for r, c in sorted(sizes))
        raise GeometryError(f"slices have different sizes ({listed}); they are not one volume")
    rows, columns = sizes.pop()

    spacings = np.array([_floats(ds, "PixelSpacing", 2) for ds in headers])
    if (spacings <= 0).any():
        raise GeometryError(f"Pixel Spacing must be positive, got {_fmt(spacings[np.argmin(spacings.min(axis=1))])}")
    if np.abs(spacings - spacings[0]).max() > 1e-3 * spacings[0].max():
        raise GeometryError("slices have different pixel spacings; they are not one volume")

    image_positions = np.array([_floats(ds, "ImagePositionPatient", 3) for ds in headers])
    along = image_positions @ normal
    order = np.argsort(along, kind="stable")
    along = along[order]
    steps = np.diff(along)

    duplicates = np.flatnonzero(steps < DUPLICATE_TOLERANCE_MM)
    if duplicates.size:
        i = int(duplicates[0])
        a, b = headers[int(order[i])], headers[int(order[i + 1])]
        raise GeometryError(
            f"duplicate slice position z={along[i]:.2f} mm ({_name(a)} and {_name(b)}; "
            f"{duplicates.size} duplicated position(s) in all): two series mixed, or a file uploaded twice?"
        )

    median = float(np.median(steps))
    gaps = np.flatnonzero(steps > GAP_FACTOR * median)
    if gaps.size:
        i = int(gaps[0])
        raise GeometryError(
            f"missing slices between z={along[i]:.2f} and z={along[i + 1]:.2f} mm "
            f"(a step of {steps[i]:.2f} mm where the others are {median:.2f} mm)"
        )
    uneven = np.abs(steps - median) > max(spacing_tolerance * median, 0.01)
    if uneven.any():
        i = int(np.argmax(np.abs(steps - median)))
        raise GeometryError(
            f"inconsistent slice spacing: steps from {steps.min():.3f} to {steps.max():.3f} mm "
            f"(median {median:.3f} mm; worst between z={along[i]:.2f} and z={along[i + 1]:.2f} mm)"
        )

    thickness = headers[int(order[0])].get("SliceThickness")
    return SliceGeometry(
        datasets=tuple(headers[int(i)] for i in order),
        rows=rows,
        columns=columns,
        pixel_spacing=(float(spacings[0][0]), float(spacings[0][1])),
        slice_spacing=median,
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
        orientation=tuple(float(v) for v in reference),  # type: ignore[arg-type]
        positions=tuple(float(v) for v in along),
        image_positions=tuple(tuple(float(v) for v in image_positions[int(i)]) for i in order),  # type: ignore[misc]
        normal=(float(normal[0]), float(normal[1]), float(normal[2])),
    )


def _floats(ds: Dataset, keyword: str, count: int) -> list[float]:
    value = ds.get(keyword)
    try:
        numbers = [float(v) for v in value]
    except (TypeError, ValueError) as exc:
        raise GeometryError(f"{keyword} of {_name(ds)} is not a list of numbers: {value!r}") from exc
    if len(numbers) != count or not all(math.isfinite(v) for v in numbers):
        raise GeometryError(f"{keyword} of {_name(ds)} must hold {count} finite numbers, got {value!r}")
    return numbers


def _name(ds: Dataset) -> str:
    """A short name for a slice in messages: its file name, else its SOPInstanceUID or InstanceNumber."""
    filename = getattr(ds, "filename", None)
    if isinstance(filename, str | Path) and str(filename):
        return Path(filename).name
    uid = ds.get("SOPInstanceUID")
    if uid:
        return f"instance {uid}"
    number = ds.get("InstanceNumber")
    return f"instance number {number}" if number is not None else "a slice"


def _fmt(values: Sequence[float] | np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in values) + ")"
