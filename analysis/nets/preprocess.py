"""Input preparation shared by training and inference, so both see exactly the same pixels.

A slice becomes network input by: HU window -> [0, 1]; for the infection network and the slice
classifier, a square box around the lungs (the union over the study's slices, padded with air
where it leaves the image) so the lungs fill the input whatever the field of view, like the
lung-cropped MedSeg slices; then a resize to the network's size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from analysis.nets.architectures import HU_WINDOW

AIR_HU = -1024.0


def window(hu: np.ndarray, hu_window: tuple[float, float] = HU_WINDOW) -> np.ndarray:
    """HU (any shape) -> float32 in [0, 1] over the window."""
    lo, hi = hu_window
    return np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0.0, 1.0)


@dataclass(frozen=True)
class Box:
    """A square in-plane box [y0, y0+side) x [x0, x0+side); it may reach outside the image."""

    y0: int
    x0: int
    side: int


def lung_box(lungs: np.ndarray, margin: float = 0.06, min_side: int = 32) -> Box | None:
    """The square around every lung voxel of a (z, y, x) or (y, x) mask, widened by `margin` of its side."""
    plane = lungs.any(axis=0) if lungs.ndim == 3 else lungs.astype(bool)
    ys = np.flatnonzero(plane.any(axis=1))
    xs = np.flatnonzero(plane.any(axis=0))
    if ys.size == 0:
        return None
    cy, cx = (ys[0] + ys[-1] + 1) / 2, (xs[0] + xs[-1] + 1) / 2
    side = max(round(max(ys[-1] - ys[0] + 1, xs[-1] - xs[0] + 1) * (1 + 2 * margin)), min_side)
    return Box(round(cy - side / 2), round(cx - side / 2), int(side))


def crop(stack: np.ndarray, box: Box, fill: float) -> np.ndarray:
    """Cut `box` out of (..., y, x), padding with `fill` where the box leaves the image."""
    h, w = stack.shape[-2:]
    out = np.full((*stack.shape[:-2], box.side, box.side), fill, dtype=stack.dtype)
    sy0, sx0 = max(box.y0, 0), max(box.x0, 0)
    sy1, sx1 = min(box.y0 + box.side, h), min(box.x0 + box.side, w)
    if sy1 > sy0 and sx1 > sx0:
        out[..., sy0 - box.y0 : sy1 - box.y0, sx0 - box.x0 : sx1 - box.x0] = stack[..., sy0:sy1, sx0:sx1]
    return out


def uncrop(stack: np.ndarray, box: Box, shape: tuple[int, int], fill: float = 0) -> np.ndarray:
    """Put a (..., side, side) crop back on a (..., *shape) canvas (the inverse of `crop`)."""
    h, w = shape
    out = np.full((*stack.shape[:-2], h, w), fill, dtype=stack.dtype)
    sy0, sx0 = max(box.y0, 0), max(box.x0, 0)
    sy1, sx1 = min(box.y0 + box.side, h), min(box.x0 + box.side, w)
    if sy1 > sy0 and sx1 > sx0:
        out[..., sy0:sy1, sx0:sx1] = stack[..., sy0 - box.y0 : sy1 - box.y0, sx0 - box.x0 : sx1 - box.x0]
    return out


def resize(images: torch.Tensor, size: int | tuple[int, int], *, labels: bool = False) -> torch.Tensor:
    """Resize (n, c, h, w): area-averaging when shrinking images, bilinear when enlarging, nearest for labels."""
    size = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == size:
        return images
    if labels:
        return F.interpolate(images, size=size, mode="nearest")
    if images.shape[-2] >= size[0] and images.shape[-1] >= size[1]:
        return F.interpolate(images, size=size, mode="area")
    return F.interpolate(images, size=size, mode="bilinear", align_corners=False)
