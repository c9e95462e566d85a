"""Triangle surfaces of label maps (lungs, opacities) for a 3D view: marching cubes, decimated.

A 512 x 512 x 300 lung mask gives millions of triangles at full resolution; a browser draws a few
tens of thousands smoothly. The mask is sampled on a coarser lattice (marching cubes' step size)
until the surface fits the triangle budget. No Django; arrays in, arrays out.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_MAX_FACES = 30_000
MAX_STEP = 16


@dataclass(frozen=True)
class Surface:
    """A triangle mesh in patient mm relative to voxel [0, 0, 0]: vertices as (x, y, z), faces as vertex triples."""

    vertices: np.ndarray  # float32 (n, 3): x, y, z mm
    faces: np.ndarray  # int32 (m, 3)
    step: int  # the sampling step (voxels) that met the budget

    @property
    def face_count(self) -> int:
        return int(self.faces.shape[0])


def surface(
    mask: np.ndarray, spacing: tuple[float, float, float], *, max_faces: int = DEFAULT_MAX_FACES
) -> Surface | None:
    """The surface of a boolean (z, y, x) mask with `spacing` (mm), at most `max_faces` triangles; None if empty."""
    from skimage.measure import marching_cubes

    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"a mask must be 3-D (z, y, x), got shape {mask.shape}")
    if not mask.any():
        return None
    # Crop to the mask's bounding box plus one empty voxel all round, so the surface is closed.
    nonzero = np.nonzero(mask)
    low = [max(int(a.min()) - 1, 0) for a in nonzero]
    high = [int(a.max()) + 2 for a in nonzero]
    box = np.pad(mask[low[0] : high[0], low[1] : high[1], low[2] : high[2]], 1).astype(np.float32)
    offset = np.array(low, dtype=float) - 1.0  # the padding moved voxel 0 by one

    step = 1
    while True:
        if min(box.shape) < 2 * step:
            step = max(1, min(box.shape) // 2)
        verts, faces, _normals, _values = marching_cubes(box, level=0.5, spacing=spacing, step_size=step)
        if len(faces) <= max_faces or step >= MAX_STEP:
            break
        # Triangles shrink with the square of the step: jump straight to a step that should fit.
        step = min(MAX_STEP, max(step + 1, int(np.ceil(step * np.sqrt(len(faces) / max_faces)))))
    verts = verts + offset * np.asarray(spacing)
    xyz = verts[:, ::-1].astype(np.float32)  # (z, y, x) -> (x, y, z)
    return Surface(vertices=xyz, faces=faces.astype(np.int32), step=step)
