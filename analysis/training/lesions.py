"""Synthetic COVID-19-like lesions drawn into real lung CT slices, with exact masks.

Label-free lesion synthesis trains useful lesion segmenters (Yao et al., "Label-free segmentation
of COVID-19 lesions in lung CT", IEEE TMI 2021): the network sees real anatomy, real noise and real
normal findings (vessels, dependent density, fissures) everywhere except inside the lesions, whose
masks are exact because we drew them.

A lesion is an irregular blob (an ellipse whose edge is perturbed by smooth noise), clipped to the
lung, placed subpleurally (most COVID-19 opacities touch the pleura), around a vessel or bronchus
(peribronchovascular), or anywhere in the lung; radius 4-45 mm; textured. Ground glass raises the
parenchyma towards -700..-250 HU but keeps vessels visible (a max with the original); consolidation
replaces everything with -100..+50 HU. Noise like the scan's is added where the blend smoothed it away.

With `p_diffuse` > 0 a slice may also get one diffuse opacity: ground glass over a large part of a
lung (radius 50-110 mm), often with the fine reticular lines of crazy paving, or a whole dependent
region consolidated. Blobs up to 45 mm never show this, and a network that has only seen them reads
a diffusely hazy lung as normal lung (measured on the MedSeg slices; model card).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

GGO, CONSOLIDATION = 1, 2


@dataclass(frozen=True)
class LesionStyle:
    """Ranges the random lesions are drawn from (HU, mm, counts, probabilities)."""

    max_lesions: int = 5
    radius_mm: tuple[float, float] = (4.0, 45.0)
    ggo_hu: tuple[float, float] = (-700.0, -250.0)
    consolidation_hu: tuple[float, float] = (-100.0, 50.0)
    p_consolidation: float = 0.3
    p_mixed: float = 0.25  # a consolidated core inside a ground-glass halo
    p_subpleural: float = 0.6
    p_peribronchovascular: float = 0.25
    texture_hu: float = 60.0
    noise_hu: float = 18.0
    # Diffuse opacities (off by default, so earlier recipes draw exactly the same lesions).
    p_diffuse: float = 0.0  # share of lesioned slices that also get one diffuse opacity
    diffuse_radius_mm: tuple[float, float] = (50.0, 110.0)
    diffuse_ggo_hu: tuple[float, float] = (-720.0, -450.0)
    p_crazy_paving: float = 0.5  # share of diffuse ground glass crossed by thickened septal lines
    p_diffuse_consolidation: float = 0.25


def _smooth_noise(shape: tuple[int, int], sigma_px: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-ish standard deviation random field with correlation length ~sigma_px."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=max(sigma_px, 0.5))
    std = float(field.std()) or 1.0
    return field / std


def _pick_centre(
    lung: np.ndarray, depth_mm: np.ndarray, hu: np.ndarray, style: LesionStyle, rng: np.random.Generator
) -> tuple[int, int] | None:
    inside = np.argwhere(lung)
    if len(inside) == 0:
        return None
    roll = rng.random()
    if roll < style.p_subpleural:
        candidates = np.argwhere(lung & (depth_mm <= 8.0))
    elif roll < style.p_subpleural + style.p_peribronchovascular:
        # Vessels and bronchial walls: dense pixels well inside the lung.
        candidates = np.argwhere(lung & (hu > -500) & (depth_mm > 10.0))
    else:
        candidates = inside
    if len(candidates) == 0:
        candidates = inside
    y, x = candidates[rng.integers(len(candidates))]
    return int(y), int(x)


def _blob(shape: tuple[int, int], centre: tuple[int, int], radius_px: float, rng: np.random.Generator) -> np.ndarray:
    """Soft irregular blob in [0, 1] (0.5 at its edge) on a window of `shape` whose origin is 0, 0."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    ratio = rng.uniform(0.45, 1.0)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / radius_px
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / (radius_px * ratio)
    r = np.sqrt(u * u + v * v)
    edge = _smooth_noise(shape, radius_px * rng.uniform(0.25, 0.6), rng)
    field = 1.0 - r + rng.uniform(0.15, 0.4) * edge
    softness = rng.uniform(0.04, 0.15)
    return 1.0 / (1.0 + np.exp(np.clip(-field / softness, -50.0, 50.0)))


def insert_lesions(
    hu: np.ndarray,
    lung: np.ndarray,
    pixel_mm: float,
    rng: np.random.Generator,
    style: LesionStyle | None = None,
    n_lesions: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw 1..max_lesions lesions into a 2-D HU slice inside `lung`; returns (new HU float32, labels uint8).

    Labels: 1 GGO, 2 consolidation, where the lesion's blend weight is >= 0.5 inside the lung.
    """
    style = style or LesionStyle()
    out = hu.astype(np.float32).copy()
    labels = np.zeros(hu.shape, dtype=np.uint8)
    lung = lung.astype(bool)
    if not lung.any():
        return out, labels
    count = n_lesions if n_lesions is not None else int(rng.integers(1, style.max_lesions + 1))
    lo, hi = np.log(style.radius_mm[0]), np.log(style.radius_mm[1])
    depth_mm = ndimage.distance_transform_edt(lung) * pixel_mm
    if style.p_diffuse > 0 and rng.random() < style.p_diffuse:
        _insert_diffuse(out, labels, lung, pixel_mm, rng, style)
    for _ in range(count):
        centre = _pick_centre(lung, depth_mm, out, style, rng)
        if centre is None:
            break
        radius_px = float(np.exp(rng.uniform(lo, hi))) / pixel_mm
        # Work on a window around the blob only: the edge noise can push it out to ~1.6 radii.
        reach = int(np.ceil(1.7 * radius_px)) + 2
        y0, x0 = max(centre[0] - reach, 0), max(centre[1] - reach, 0)
        y1, x1 = min(centre[0] + reach + 1, hu.shape[0]), min(centre[1] + reach + 1, hu.shape[1])
        win = (slice(y0, y1), slice(x0, x1))
        shape = (y1 - y0, x1 - x0)
        weight = _blob(shape, (centre[0] - y0, centre[1] - x0), radius_px, rng) * lung[win]
        region = weight >= 0.5
        if region.sum() < 3:
            continue
        texture = style.texture_hu * _smooth_noise(shape, max(1.0, 2.0 / pixel_mm), rng)
        noise = rng.normal(0.0, style.noise_hu, shape).astype(np.float32)
        sub, sub_labels = out[win], labels[win]
        kind = CONSOLIDATION if rng.random() < style.p_consolidation else GGO
        # Consolidation is more uniform than ground glass: half the texture.
        hu_range, texture_share = (style.ggo_hu, 1.0) if kind == GGO else (style.consolidation_hu, 0.5)
        _paint(sub, sub_labels, weight, rng.uniform(*hu_range) + texture_share * texture, noise, kind)
        if kind == GGO and rng.random() < style.p_mixed:
            core = np.clip((weight - 0.5) * 2.0, 0.0, 1.0) ** 2  # the blob's inner part
            if (core >= 0.5).sum() >= 3:
                target = rng.uniform(*style.consolidation_hu) + 0.5 * texture
                _paint(sub, sub_labels, core, target, noise, CONSOLIDATION)
    return out, labels


def _paint(
    image: np.ndarray, labels: np.ndarray, weight: np.ndarray, target: np.ndarray, noise: np.ndarray, kind: int
) -> None:
    """Blend a lesion of `kind` into `image` in place with blend `weight` and label it where weight >= 0.5.

    Ground glass only raises density (vessels stay visible through it) and does not relabel
    consolidation; consolidation replaces what is there.
    """
    region = weight >= 0.5
    if kind == GGO:
        image[:] = np.maximum(image, image + weight * (target - image) + weight * noise)
        labels[region & (labels != CONSOLIDATION)] = GGO
    else:
        image += weight * (target - image) + weight * noise
        labels[region] = CONSOLIDATION


def _septal_lines(shape: tuple[int, int], pixel_mm: float, rng: np.random.Generator) -> np.ndarray:
    """Weight in [0, 1] of a polygonal network of thin lines ~5-10 mm apart (interlobular septa)."""
    field = _smooth_noise(shape, rng.uniform(2.5, 5.0) / pixel_mm, rng)
    # Zero crossings of a smooth random field form closed, cell-like lines; their width is ~1 mm.
    grad = np.hypot(*np.gradient(field)) + 1e-3
    distance_px = np.abs(field) / grad
    return np.clip(1.0 - distance_px * pixel_mm / 0.8, 0.0, 1.0)


def _insert_diffuse(
    out: np.ndarray,
    labels: np.ndarray,
    lung: np.ndarray,
    pixel_mm: float,
    rng: np.random.Generator,
    style: LesionStyle,
) -> None:
    """One diffuse opacity in place: ground glass (maybe crazy paving) over a large region, or a
    consolidated dependent region (the posterior part of the lung, lowest rows of the image)."""
    consolidation = rng.random() < style.p_diffuse_consolidation
    inside = np.argwhere(lung)
    if consolidation:
        # Dependent lung: the posterior third of the lung's rows (patients lie supine, y grows backwards).
        back = inside[:, 0] >= np.quantile(inside[:, 0], 0.66)
        inside = inside[back] if back.any() else inside
    y, x = inside[rng.integers(len(inside))]
    lo, hi = style.diffuse_radius_mm
    radius_px = float(rng.uniform(lo, hi if not consolidation else (lo + hi) / 2)) / pixel_mm
    weight = _blob(out.shape, (int(y), int(x)), radius_px, rng) * lung
    if (weight >= 0.5).sum() < 3:
        return
    texture = style.texture_hu * _smooth_noise(out.shape, max(1.0, 2.0 / pixel_mm), rng)
    noise = rng.normal(0.0, style.noise_hu, out.shape).astype(np.float32)
    if consolidation:
        _paint(out, labels, weight, rng.uniform(*style.consolidation_hu) + 0.5 * texture, noise, CONSOLIDATION)
        return
    target = rng.uniform(*style.diffuse_ggo_hu) + texture
    if rng.random() < style.p_crazy_paving:
        target = target + rng.uniform(150.0, 350.0) * _septal_lines(out.shape, pixel_mm, rng)
    _paint(out, labels, weight, target, noise, GGO)
