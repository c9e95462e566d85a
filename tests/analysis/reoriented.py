"""Rewrite an identity-oriented DICOM series as if the scanner had stored it flipped or transposed.

`write_dicom_series` always writes rows along +x and columns along +y, feet first. Real scanners
do not: these helpers re-store the same anatomy with another ImageOrientationPatient (and the
matching pixels and ImagePositionPatient), so tests can check that overlays follow the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

# name -> ImageOrientationPatient. "flipped" runs the rows to the front (and the normal to the feet);
# "transposed" stores x down the columns and y along the rows (its normal also points to the feet).
ORIENTATIONS = {
    "identity": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "flipped": (1.0, 0.0, 0.0, 0.0, -1.0, 0.0),
    "transposed": (0.0, 1.0, 0.0, 1.0, 0.0, 0.0),
}


def reorient(paths: list[Path], name: str) -> None:
    """Re-store, in place, identity-oriented slices with the orientation `name` (same anatomy, same LPS mm)."""
    if name == "identity":
        return
    for path in paths:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array  # stored[r, c] = canonical[y=r, x=c]
        spacing_y, spacing_x = (float(v) for v in ds.PixelSpacing)
        ipp = [float(v) for v in ds.ImagePositionPatient]
        if name == "flipped":
            stored = pixels[::-1, :]
            ipp[1] += (pixels.shape[0] - 1) * spacing_y  # the first stored row is now the last y
        elif name == "transposed":
            stored = pixels.T
            ds.PixelSpacing = [spacing_x, spacing_y]
            ds.Rows, ds.Columns = stored.shape
        else:
            raise ValueError(f"unknown orientation {name!r}")
        ds.ImageOrientationPatient = list(ORIENTATIONS[name])
        ds.ImagePositionPatient = ipp
        ds.PixelData = np.ascontiguousarray(stored).astype(pixels.dtype).tobytes()
        ds.save_as(path)
