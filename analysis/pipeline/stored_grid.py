"""How the canonical (z, y, x) grid of a DICOM series maps back to its stored slices.

The volume loader turns the stored (slice, row, column) stack into the canonical grid: slices sorted
along the slice normal and reversed when the normal points to the feet, then rows and columns
transposed and flipped so x runs right-to-left of the patient (LPS +x) and y to the back (LPS +y).
A viewer shows the stored images, so every label map or point drawn on them has to take the way
back. This module holds that mapping, computed from the series' ImageOrientationPatient alone, with
the same rules as `volume._canonical_from_dicom`; no Django, tested directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


class StoredGridError(ValueError):
    """The orientation does not describe an axial series; the message says why."""


def _dominant_axis(direction: Sequence[float]) -> tuple[int, bool]:
    axis = int(np.argmax(np.abs(direction)))
    return axis, bool(direction[axis] < 0)


@dataclass(frozen=True)
class StoredGrid:
    """The canonical grid of `n_slices` slices seen from the stored images.

    Stored index k (Instance.index: rank along the slice normal) holds canonical slice
    `canonical_z(k)`; a canonical (y, x) plane becomes the stored (row, column) image by flipping y
    and/or x (`flips`) and then transposing (`transposed`) — exactly `CTVolume.to_stored_plane`.
    """

    n_slices: int
    transposed: bool = False
    flips: tuple[bool, bool] = (False, False)
    flip_z: bool = False

    @classmethod
    def from_orientation(cls, orientation: Sequence[float], n_slices: int) -> StoredGrid:
        if len(orientation) != 6:
            raise StoredGridError(f"ImageOrientationPatient must hold 6 numbers, got {list(orientation)!r}")
        row_dir = np.asarray(orientation[:3], dtype=float)  # column index grows along it
        col_dir = np.asarray(orientation[3:], dtype=float)  # row index grows along it
        row_axis, row_negative = _dominant_axis(row_dir)
        col_axis, col_negative = _dominant_axis(col_dir)
        if {row_axis, col_axis} != {0, 1}:
            raise StoredGridError("the image rows and columns do not lie in the axial plane")
        normal = np.cross(row_dir, col_dir)
        transposed = row_axis == 1
        flips = (col_negative, row_negative) if not transposed else (row_negative, col_negative)
        return cls(n_slices=int(n_slices), transposed=transposed, flips=flips, flip_z=bool(normal[2] < 0))

    def _check_index(self, index: int) -> int:
        if not 0 <= index < self.n_slices:
            raise IndexError(f"slice {index} is outside 0..{self.n_slices - 1}")
        return index

    def canonical_z(self, stored_index: int) -> int:
        """The canonical z of the stored slice with Instance.index `stored_index`."""
        self._check_index(stored_index)
        return self.n_slices - 1 - stored_index if self.flip_z else stored_index

    def stored_index(self, canonical_z: int) -> int:
        """The Instance.index of canonical slice `canonical_z` (the mapping is its own inverse)."""
        return self.canonical_z(canonical_z)

    def to_stored_plane(self, plane: np.ndarray) -> np.ndarray:
        """A canonical (y, x) plane as the stored image's (row, column) plane."""
        if self.flips[0]:
            plane = plane[::-1, :]
        if self.flips[1]:
            plane = plane[:, ::-1]
        if self.transposed:
            plane = plane.T
        return np.ascontiguousarray(plane)

    def stored_slice(self, volume: np.ndarray, stored_index: int) -> np.ndarray:
        """The (row, column) plane of a canonical (z, y, x) volume shown on stored slice `stored_index`."""
        return self.to_stored_plane(volume[self.canonical_z(stored_index)])

    def to_stored_point(self, y: float, x: float, shape_yx: tuple[int, int]) -> tuple[float, float]:
        """A canonical (y, x) voxel position as the stored image's (row, column) position."""
        height, width = shape_yx
        if self.flips[0]:
            y = height - 1 - y
        if self.flips[1]:
            x = width - 1 - x
        return (x, y) if self.transposed else (y, x)
