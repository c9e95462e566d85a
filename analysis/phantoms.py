"""Synthetic chest CT with exact ground truth, for the pipeline's tests, the demo cohort and browser tests.

The anatomy is defined in millimetres (so changing matrix and pixel spacing together gives the same
patient): an elliptical body with a fat layer, ribs, spine, a trachea, a heart that carves the
lungs' medial sides, two lungs with a diaphragm dome and apices, textured parenchyma (~ -850 HU)
with tapering vessels, and blob-shaped lesions (ground-glass and consolidation), textured and
clipped to the lungs.

Each output slice is the AVERAGE of the thin sub-slices it covers (partial volume, as a thick
reconstruction), and the truth (volumes, POI, iHU) is counted on that fine grid; the output label
maps mark a voxel where at least half of its sub-slices are covered. Coordinates: LPS, x towards
the patient's left (the right lung has low x indices), y towards the back, z towards the head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum

import numpy as np
from scipy import ndimage

from analysis.pipeline.volume import HU_MIN, CTVolume

SCAN_LENGTH_MM = 270.0  # craniocaudal extent of every phantom scan
FINE_STEP_MM = 1.0  # target thickness of the sub-slices the truth is counted on
TEXTURE_CELL_MM = 5.0  # grid of the smooth random fields (lung and lesion texture)
AIR_HU, FAT_HU, SOFT_HU, LUNG_HU, VESSEL_HU, BONE_HU = -1000.0, -100.0, 40.0, -850.0, 40.0, 700.0
GGO_RANGE = (-750.0, -300.0)
CONSOLIDATION_RANGE = (-100.0, 50.0)


class LesionKind(StrEnum):
    GGO = "ggo"
    CONSOLIDATION = "consolidation"


class Side(StrEnum):
    RIGHT = "right"
    LEFT = "left"


class Severity(StrEnum):
    NORMAL = "normal"
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


@dataclass(frozen=True)
class LesionSpec:
    """One lesion: a blob of `radius_mm` placed in a lung, textured around `hu`.

    Placement inside `lung`: at `height_frac` of the lung's craniocaudal extent (0 base, 1 apex),
    in the direction `angle_deg` in the axial plane (0 lateral, 90 posterior, -90 anterior, 180
    medial), at `depth_frac` of the way from the lung's centre line to its wall (1.0 touches the
    pleura: subpleural; 0 central). `position_mm` (x, y, z in phantom mm, z from the scan's
    bottom) overrides the placement.
    """

    kind: LesionKind
    radius_mm: float
    hu: float
    lung: Side = Side.RIGHT
    height_frac: float = 0.4
    angle_deg: float = 90.0
    depth_frac: float = 1.0
    position_mm: tuple[float, float, float] | None = None
    texture_hu: float | None = None  # amplitude of the texture (default 60 for GGO, 25 for consolidation)
    shape_seed: int = 0

    def __post_init__(self) -> None:
        kind = LesionKind(self.kind)
        low, high = GGO_RANGE if kind == LesionKind.GGO else CONSOLIDATION_RANGE
        if not low <= self.hu <= high:
            raise ValueError(f"{kind} lesions must have a mean HU in {low:g}..{high:g}, got {self.hu:g}")
        if not 1.0 <= self.radius_mm <= 80.0:
            raise ValueError(f"lesion radius must be 1..80 mm, got {self.radius_mm:g}")
        if not (0.0 <= self.height_frac <= 1.0 and 0.0 <= self.depth_frac <= 1.2):
            raise ValueError("height_frac must be in 0..1 and depth_frac in 0..1.2")


@dataclass(frozen=True)
class PhantomSpec:
    """A synthetic patient: anatomy sizes (mm), lesions, and the seed of every random detail."""

    seed: int = 0
    lesions: tuple[LesionSpec, ...] = ()
    body_width_mm: float = 330.0
    body_depth_mm: float = 230.0
    lung_height_mm: float = 225.0
    noise_hu: float = 12.0
    description: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "lesions", tuple(self.lesions))
        if not 260 <= self.body_width_mm <= 420 or not 180 <= self.body_depth_mm <= 320:
            raise ValueError("body width must be 260..420 mm and depth 180..320 mm")
        if not 150 <= self.lung_height_mm <= 250:
            raise ValueError("lung height must be 150..250 mm")


@dataclass(frozen=True)
class PhantomTruth:
    """Exact values, counted on the fine grid (volumes in mL, POI as a fraction, HU noise-free)."""

    lung_volume_ml: float
    right_lung_ml: float
    left_lung_ml: float
    infection_volume_ml: float
    ggo_volume_ml: float
    consolidation_volume_ml: float
    right_infection_ml: float
    left_infection_ml: float
    poi: float
    ihu: float | None  # mean HU of the infection; None without lesions
    lesion_volumes_ml: list[float]  # one per spec lesion: the voxels it owns (later lesions win overlaps)


@dataclass
class FineGrid:
    """The sub-slice grid the truth is counted on (only kept on request: it is large)."""

    hu: np.ndarray  # float32, noise-free
    lungs: np.ndarray
    infection: np.ndarray
    lesions: np.ndarray
    spacing: tuple[float, float, float]


@dataclass
class Phantom:
    """A generated scan with its label maps at the output thickness and the exact truth."""

    spec: PhantomSpec
    volume: CTVolume
    lungs: np.ndarray = field(repr=False)  # uint8: 1 right, 2 left
    infection: np.ndarray = field(repr=False)  # uint8: 1 GGO, 2 consolidation
    lesions: np.ndarray = field(repr=False)  # uint8: index+1 of the owning LesionSpec
    truth: PhantomTruth
    fine: FineGrid | None = None


# --- anatomy -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Anatomy:
    """Sizes derived from the spec (mm; x, y in the axial plane centred on the body, z from the scan bottom)."""

    body_a: float
    body_b: float
    lung_base: float
    lung_top: float
    lung_cx: dict[Side, float]
    lung_cy: float
    lung_ax: float
    lung_ay: float
    dome_mm: float
    apex_mm: float
    heart_c: tuple[float, float]
    heart_axes: tuple[float, float]
    heart_top: float

    @classmethod
    def of(cls, spec: PhantomSpec) -> _Anatomy:
        a, b = spec.body_width_mm / 2, spec.body_depth_mm / 2
        base = 22.0
        return cls(
            body_a=a,
            body_b=b,
            lung_base=base,
            lung_top=base + spec.lung_height_mm,
            lung_cx={Side.RIGHT: -0.455 * a, Side.LEFT: 0.455 * a},
            lung_cy=0.04 * b,
            lung_ax=0.335 * a,
            lung_ay=0.74 * b,
            dome_mm=0.22 * spec.lung_height_mm,
            apex_mm=0.3 * spec.lung_height_mm,
            heart_c=(0.09 * a, -0.22 * b),
            heart_axes=(0.42 * a, 0.48 * b),
            heart_top=base + 0.5 * spec.lung_height_mm,
        )

    def lung_scale(self, z: np.ndarray) -> np.ndarray:
        """Cross-section scale of the lungs at height z: 1 below the apical dome, falling to 0 at the apex."""
        start = self.lung_top - self.apex_mm
        u = np.clip((z - start) / self.apex_mm, 0.0, None)
        scale = np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0))
        return np.where((z < self.lung_base) | (z > self.lung_top), 0.0, scale)

    def heart_scale(self, z: np.ndarray) -> np.ndarray:
        u = np.clip((z - self.lung_base) / (self.heart_top - self.lung_base), 0.0, 1.0)
        return np.sqrt(np.clip(1.0 - u**2, 0.0, 1.0)) * (z < self.heart_top)

    def lesion_centre(self, lesion: LesionSpec) -> tuple[float, float, float]:
        if lesion.position_mm is not None:
            return lesion.position_mm
        z = self.lung_base + self.dome_mm * 0.6 + lesion.height_frac * (self.lung_top - self.lung_base - self.dome_mm)
        scale = float(self.lung_scale(np.array(z)))
        lateral = -1.0 if lesion.lung == Side.RIGHT else 1.0
        angle = math.radians(lesion.angle_deg)
        x = self.lung_cx[Side(lesion.lung)] + lateral * math.cos(angle) * self.lung_ax * scale * lesion.depth_frac
        y = self.lung_cy + math.sin(angle) * self.lung_ay * scale * lesion.depth_frac
        return x, y, z


@dataclass(frozen=True)
class _Segment:
    """A vessel: a tapering tube from a to b (mm)."""

    a: np.ndarray
    b: np.ndarray
    r0: float
    r1: float


@dataclass(frozen=True)
class _Blob:
    """A lesion shape: the union of a few ellipsoids (centres, semi-axes in mm)."""

    centres: np.ndarray  # (n, 3) x, y, z
    axes: np.ndarray  # (n, 3)
    lo: np.ndarray
    hi: np.ndarray


def _vessel_tree(anatomy: _Anatomy, rng: np.random.Generator) -> list[_Segment]:
    segments = []
    height = anatomy.lung_top - anatomy.lung_base
    for side in (Side.RIGHT, Side.LEFT):
        lateral = -1.0 if side == Side.RIGHT else 1.0
        # The hilum lies on the lung's medial (mediastinal) surface, where the vessels enter. A hub 26 mm
        # inside the lung (before 2026-12-04) put 24 roots wider than 7 mm deep in aerated lung: lesion-free
        # phantoms read 0.33-0.50 % infection by the HU baseline, real normal lungs 0.02-0.08 % (2 mm).
        hilum_x = anatomy.lung_cx[side] - lateral * 0.95 * anatomy.lung_ax
        hilum = np.array([hilum_x, anatomy.lung_cy, anatomy.lung_base + 0.55 * height])
        for _ in range(12):
            z = anatomy.lung_base + anatomy.dome_mm * 0.5 + rng.uniform(0.0, 0.85) * (height - anatomy.dome_mm * 0.5)
            scale = float(anatomy.lung_scale(np.array(z)))
            angle = rng.uniform(-0.6 * math.pi, 0.6 * math.pi)
            depth = rng.uniform(0.55, 0.85) * scale
            end = np.array(
                [
                    anatomy.lung_cx[side] + lateral * math.cos(angle) * anatomy.lung_ax * depth,
                    anatomy.lung_cy + math.sin(angle) * anatomy.lung_ay * depth,
                    z,
                ]
            )
            segments.append(_Segment(hilum, end, 4.0, 1.6))
            for _ in range(3):
                start = hilum + rng.uniform(0.45, 0.75) * (end - hilum)
                tip = end + rng.normal(0.0, 1.0, 3) * np.array([18.0, 18.0, 25.0])
                tip = start + 0.9 * (tip - start)
                segments.append(_Segment(start, tip, 1.8, 0.8))
    return segments


def _blob(anatomy: _Anatomy, lesion: LesionSpec, index: int, seed: int) -> _Blob:
    rng = np.random.default_rng([seed, index, lesion.shape_seed])
    centre = np.array(anatomy.lesion_centre(lesion))
    r = lesion.radius_mm
    centres = [centre]
    axes = [r * rng.uniform(0.8, 1.2, 3)]
    for _ in range(2):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        centres.append(centre + direction * r * rng.uniform(0.35, 0.6))
        axes.append(r * rng.uniform(0.45, 0.75, 3))
    centres_arr, axes_arr = np.array(centres), np.array(axes)
    return _Blob(centres_arr, axes_arr, (centres_arr - axes_arr).min(axis=0), (centres_arr + axes_arr).max(axis=0))


def _texture_planes(
    rng: np.random.Generator, nz: int, grid_y: np.ndarray, grid_x: np.ndarray, fov: float
) -> np.ndarray:
    """A smooth random field of unit spread on a coarse 3-D grid, sampled in-plane at the pixel centres.

    Returns (nz, ny, nx) planes at heights k * TEXTURE_CELL_MM; sub-slices interpolate linearly between
    two of them. Drawn in millimetres, so every matrix size shows the same texture.
    """
    cells = math.ceil(fov / TEXTURE_CELL_MM) + 3
    coarse = ndimage.gaussian_filter(rng.normal(size=(nz, cells, cells)), sigma=1.0, mode="wrap")
    coarse /= coarse.std()
    iy = (grid_y + fov / 2) / TEXTURE_CELL_MM + 1.0
    ix = (grid_x + fov / 2) / TEXTURE_CELL_MM + 1.0
    coords = np.meshgrid(iy, ix, indexing="ij")
    return np.stack([ndimage.map_coordinates(plane, coords, order=1) for plane in coarse]).astype(np.float32)


# --- generation ------------------------------------------------------------------------------------


def make_phantom(
    spec: PhantomSpec,
    *,
    slice_thickness_mm: float = 5.0,
    pixel_spacing_mm: float = 1.4,
    matrix: int = 256,
    keep_fine: bool = False,
    scan_length_mm: float = SCAN_LENGTH_MM,
) -> Phantom:
    """Generate the scan of `spec` at the given reconstruction, with its label maps and exact truth.

    The field of view is matrix x pixel_spacing_mm (it must hold the body); the scan covers
    `scan_length_mm` (default SCAN_LENGTH_MM; longer scans reach further above the apices). `keep_fine`
    also returns the fine sub-slice grid (large: for small test phantoms).
    """
    if slice_thickness_mm <= 0 or pixel_spacing_mm <= 0:
        raise ValueError("slice thickness and pixel spacing must be positive")
    if matrix < 64:
        raise ValueError(f"matrix must be at least 64 pixels, got {matrix}")
    fov = matrix * pixel_spacing_mm
    if fov < spec.body_width_mm + 10:
        raise ValueError(
            f"the field of view ({matrix} x {pixel_spacing_mm:g} mm = {fov:.0f} mm) must exceed the body width "
            f"({spec.body_width_mm:g} mm)"
        )
    if scan_length_mm < SCAN_LENGTH_MM:
        raise ValueError(f"the scan must be at least {SCAN_LENGTH_MM:g} mm long to hold the lungs")
    n_slices = max(1, round(scan_length_mm / slice_thickness_mm))
    sub = max(1, math.ceil(slice_thickness_mm / FINE_STEP_MM - 1e-9))
    fine_dz = slice_thickness_mm / sub

    anatomy = _Anatomy.of(spec)
    rng = np.random.default_rng(spec.seed)
    coords = (np.arange(matrix) - (matrix - 1) / 2) * pixel_spacing_mm
    yy, xx = np.meshgrid(coords, coords, indexing="ij")

    # Everything that does not change along z is drawn once.
    body_r2 = (xx / anatomy.body_a) ** 2 + (yy / anatomy.body_b) ** 2
    body = body_r2 <= 1.0
    fat = body & (body_r2 > (1 - 14 / anatomy.body_b) ** 2)
    base = np.where(body, SOFT_HU, AIR_HU).astype(np.float32)
    base[fat] = FAT_HU
    rib_shell = (body_r2 > 0.86**2) & (body_r2 <= 0.92**2) & ~((np.abs(xx) < 0.2 * anatomy.body_a) & (yy < 0))
    sternum = (np.abs(xx) < 14) & (np.abs(yy + 0.86 * anatomy.body_b) < 6)
    spine_y = 0.72 * anatomy.body_b
    vertebra = (xx**2 + (yy - spine_y) ** 2) <= 17.0**2
    cortex = vertebra & ((xx**2 + (yy - spine_y) ** 2) > 13.0**2)
    canal = (xx**2 + (yy - spine_y - 26) ** 2) <= 8.0**2
    arch = ((xx**2 + (yy - spine_y - 26) ** 2) <= 14.0**2) & ~canal
    trachea = (xx**2 + (yy + 0.1 * anatomy.body_b) ** 2) <= 8.0**2
    lung_r2 = {
        side: ((xx - anatomy.lung_cx[side]) / anatomy.lung_ax) ** 2 + ((yy - anatomy.lung_cy) / anatomy.lung_ay) ** 2
        for side in (Side.RIGHT, Side.LEFT)
    }
    heart_r2 = ((xx - anatomy.heart_c[0]) / anatomy.heart_axes[0]) ** 2 + (
        (yy - anatomy.heart_c[1]) / anatomy.heart_axes[1]
    ) ** 2

    texture_nz = math.ceil(scan_length_mm / TEXTURE_CELL_MM) + 2
    lung_texture = _texture_planes(rng, texture_nz, coords, coords, fov)
    lesion_texture = _texture_planes(rng, texture_nz, coords, coords, fov)
    vessels = _vessel_tree(anatomy, rng)
    blobs = [_blob(anatomy, lesion, i, spec.seed) for i, lesion in enumerate(spec.lesions)]
    noise_rng = np.random.default_rng([spec.seed, 7919])

    hu_out = np.empty((n_slices, matrix, matrix), dtype=np.int16)
    lungs_out = np.zeros((n_slices, matrix, matrix), dtype=np.uint8)
    infection_out = np.zeros_like(lungs_out)
    lesions_out = np.zeros_like(lungs_out)
    n_fine = n_slices * sub
    fine = (
        FineGrid(
            hu=np.empty((n_fine, matrix, matrix), np.float32),
            lungs=np.zeros((n_fine, matrix, matrix), np.uint8),
            infection=np.zeros((n_fine, matrix, matrix), np.uint8),
            lesions=np.zeros((n_fine, matrix, matrix), np.uint8),
            spacing=(fine_dz, pixel_spacing_mm, pixel_spacing_mm),
        )
        if keep_fine
        else None
    )
    counts = {"right": 0, "left": 0, "ggo": 0, "cons": 0, "right_inf": 0, "left_inf": 0}
    hu_sum = 0.0
    lesion_counts = np.zeros(len(spec.lesions) + 1, dtype=np.int64)

    slab_hu = np.empty((sub, matrix, matrix), np.float32)
    slab_lung = np.zeros((sub, matrix, matrix), np.uint8)
    slab_inf = np.zeros((sub, matrix, matrix), np.uint8)
    slab_owner = np.zeros((sub, matrix, matrix), np.uint8)
    for k in range(n_slices):
        zs = (k * sub + np.arange(sub) + 0.5) * fine_dz
        slab_lung[:] = 0
        slab_inf[:] = 0
        slab_owner[:] = 0
        for s, z in enumerate(zs):
            hu = slab_hu[s]
            hu[:] = base
            t = z / TEXTURE_CELL_MM
            k0 = min(int(t), texture_nz - 2)
            w = t - k0
            lung_tex = (1 - w) * lung_texture[k0] + w * lung_texture[k0 + 1]
            if (z % 24.0) < 9.0:
                hu[rib_shell] = np.clip(BONE_HU + 150 * lung_tex[rib_shell], 400.0, 1000.0)
            hu[sternum] = BONE_HU - 200
            disc = (z % 30.0) < 5.0
            hu[vertebra] = 80.0 if disc else np.clip(500.0 + 60 * lung_tex[vertebra], 400.0, 1000.0)
            if not disc:
                hu[cortex] = 900.0
                hu[arch] = 800.0
            hu[canal] = 20.0
            if anatomy.lung_top - 45 < z:
                hu[trachea] = AIR_HU
            scale = float(anatomy.lung_scale(np.array(z)))
            if scale <= 0:
                continue
            heart_s = float(anatomy.heart_scale(np.array(z)))
            in_heart = heart_r2 < heart_s**2 if heart_s > 0 else None
            for label, side in ((1, Side.RIGHT), (2, Side.LEFT)):
                r2 = lung_r2[side]
                # Diaphragm dome: the lung floor rises towards the centre of each lung.
                floor = anatomy.lung_base + anatomy.dome_mm * (1.0 - np.minimum(r2, 1.0))
                inside = (r2 < scale**2) & (z > floor)
                if in_heart is not None:
                    inside &= ~in_heart
                slab_lung[s][inside] = label
            lung = slab_lung[s] > 0
            hu[lung] = LUNG_HU + 30 * lung_tex[lung]
            _draw_vessels(hu, lung, vessels, z, coords, pixel_spacing_mm)
            if blobs:
                les_tex = (1 - w) * lesion_texture[k0] + w * lesion_texture[k0 + 1]
                for i, (blob, lesion) in enumerate(zip(blobs, spec.lesions, strict=True)):
                    _draw_lesion(hu, slab_inf[s], slab_owner[s], lung, blob, lesion, i, z, coords, les_tex)

        # Truth on the fine grid.
        infected = slab_inf > 0
        counts["right"] += int(np.count_nonzero(slab_lung == 1))
        counts["left"] += int(np.count_nonzero(slab_lung == 2))
        counts["ggo"] += int(np.count_nonzero(slab_inf == 1))
        counts["cons"] += int(np.count_nonzero(slab_inf == 2))
        counts["right_inf"] += int(np.count_nonzero(infected & (slab_lung == 1)))
        counts["left_inf"] += int(np.count_nonzero(infected & (slab_lung == 2)))
        hu_sum += float(slab_hu[infected].sum(dtype=np.float64))
        lesion_counts += np.bincount(slab_owner.ravel(), minlength=len(lesion_counts))
        if fine is not None:
            window = slice(k * sub, (k + 1) * sub)
            fine.hu[window] = slab_hu
            fine.lungs[window] = slab_lung
            fine.infection[window] = slab_inf
            fine.lesions[window] = slab_owner

        # The output slice: partial-volume average, labels where at least half of the sub-slices are covered.
        mean = slab_hu.mean(axis=0)
        if spec.noise_hu > 0:
            mean += noise_rng.normal(0.0, spec.noise_hu, mean.shape).astype(np.float32)
        hu_out[k] = np.clip(np.rint(mean), HU_MIN, 3071)
        half = sub / 2.0
        right = np.count_nonzero(slab_lung == 1, axis=0)
        left = np.count_nonzero(slab_lung == 2, axis=0)
        lungs_out[k][right >= half] = 1
        lungs_out[k][(left >= half) & (left > right)] = 2
        ggo = np.count_nonzero(slab_inf == 1, axis=0)
        cons = np.count_nonzero(slab_inf == 2, axis=0)
        inf = (ggo + cons) >= half
        infection_out[k][inf & (ggo > cons)] = 1
        infection_out[k][inf & (cons >= ggo)] = 2
        if blobs and inf.any():
            owners = np.stack([np.count_nonzero(slab_owner == i + 1, axis=0) for i in range(len(blobs))])
            lesions_out[k][inf] = (np.argmax(owners, axis=0) + 1)[inf].astype(np.uint8)

    voxel_ml = fine_dz * pixel_spacing_mm**2 / 1000.0
    lung_ml = (counts["right"] + counts["left"]) * voxel_ml
    infection_count = counts["ggo"] + counts["cons"]
    truth = PhantomTruth(
        lung_volume_ml=lung_ml,
        right_lung_ml=counts["right"] * voxel_ml,
        left_lung_ml=counts["left"] * voxel_ml,
        infection_volume_ml=infection_count * voxel_ml,
        ggo_volume_ml=counts["ggo"] * voxel_ml,
        consolidation_volume_ml=counts["cons"] * voxel_ml,
        right_infection_ml=counts["right_inf"] * voxel_ml,
        left_infection_ml=counts["left_inf"] * voxel_ml,
        poi=infection_count * voxel_ml / lung_ml if lung_ml else 0.0,
        ihu=hu_sum / infection_count if infection_count else None,
        lesion_volumes_ml=[float(c) * voxel_ml for c in lesion_counts[1:]],
    )
    volume = CTVolume(
        hu=hu_out,
        spacing=(float(slice_thickness_mm), float(pixel_spacing_mm), float(pixel_spacing_mm)),
        origin=(float(coords[0]), float(coords[0]), float(0.5 * slice_thickness_mm - scan_length_mm)),
        slice_thickness=float(slice_thickness_mm),
    )
    return Phantom(spec, volume, lungs_out, infection_out, lesions_out, truth, fine)


def _window(lo: float, hi: float, coords: np.ndarray, spacing: float) -> slice:
    """Index range of the pixel centres that fall within [lo, hi] mm."""
    start = math.floor((lo - coords[0]) / spacing)
    stop = math.ceil((hi - coords[0]) / spacing) + 1
    return slice(max(start, 0), max(min(stop, len(coords)), 0))


def _draw_vessels(
    hu: np.ndarray, lung: np.ndarray, vessels: list[_Segment], z: float, coords: np.ndarray, spacing: float
) -> None:
    for seg in vessels:
        dz = seg.b[2] - seg.a[2]
        reach = max(seg.r0, seg.r1)
        # The part of the segment within reach of this height: its in-plane bounding box is all we test.
        if abs(dz) < 1e-6:
            if abs(z - seg.a[2]) > reach:
                continue
            t_lo, t_hi = 0.0, 1.0
        else:
            t_a, t_b = (z - reach - seg.a[2]) / dz, (z + reach - seg.a[2]) / dz
            t_lo, t_hi = max(min(t_a, t_b), 0.0), min(max(t_a, t_b), 1.0)
            if t_lo > t_hi:
                continue
        p_lo, p_hi = seg.a + t_lo * (seg.b - seg.a), seg.a + t_hi * (seg.b - seg.a)
        ys = _window(min(p_lo[1], p_hi[1]) - reach, max(p_lo[1], p_hi[1]) + reach, coords, spacing)
        xs = _window(min(p_lo[0], p_hi[0]) - reach, max(p_lo[0], p_hi[0]) + reach, coords, spacing)
        if ys.start >= ys.stop or xs.start >= xs.stop:
            continue
        py, px = coords[ys][:, None], coords[xs][None, :]
        d = seg.b - seg.a
        t = np.clip(((px - seg.a[0]) * d[0] + (py - seg.a[1]) * d[1] + (z - seg.a[2]) * d[2]) / float(d @ d), 0, 1)
        dist2 = (px - seg.a[0] - t * d[0]) ** 2 + (py - seg.a[1] - t * d[1]) ** 2 + (z - seg.a[2] - t * d[2]) ** 2
        radius = seg.r0 + (seg.r1 - seg.r0) * t
        inside = (dist2 <= radius**2) & lung[ys, xs]
        hu[ys, xs][inside] = VESSEL_HU


def _draw_lesion(
    hu: np.ndarray,
    infection: np.ndarray,
    owner: np.ndarray,
    lung: np.ndarray,
    blob: _Blob,
    lesion: LesionSpec,
    index: int,
    z: float,
    coords: np.ndarray,
    texture: np.ndarray,
) -> None:
    if not blob.lo[2] <= z <= blob.hi[2]:
        return
    spacing = float(coords[1] - coords[0])
    ys = _window(blob.lo[1], blob.hi[1], coords, spacing)
    xs = _window(blob.lo[0], blob.hi[0], coords, spacing)
    if ys.start >= ys.stop or xs.start >= xs.stop:
        return
    py, px = coords[ys][:, None], coords[xs][None, :]
    inside = np.zeros((ys.stop - ys.start, xs.stop - xs.start), bool)
    for (cx, cy, cz), (ax, ay, az) in zip(blob.centres, blob.axes, strict=True):
        inside |= ((px - cx) / ax) ** 2 + ((py - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1.0
    inside &= lung[ys, xs]
    if not inside.any():
        return
    kind = LesionKind(lesion.kind)
    amplitude = lesion.texture_hu if lesion.texture_hu is not None else (60.0 if kind == LesionKind.GGO else 25.0)
    hu[ys, xs][inside] = lesion.hu + amplitude * texture[ys, xs][inside]
    infection[ys, xs][inside] = 1 if kind == LesionKind.GGO else 2
    owner[ys, xs][inside] = index + 1


# --- patients ------------------------------------------------------------------------------------------

_SEVERITY_LESIONS = {
    Severity.NORMAL: (0, 0, 0.0, 0.0),  # (min count, max count, min radius, max radius)
    Severity.MILD: (1, 3, 8.0, 16.0),
    Severity.MODERATE: (4, 7, 12.0, 24.0),
    Severity.SEVERE: (8, 12, 18.0, 34.0),
}


def random_spec(seed: int, severity: Severity | str = Severity.MODERATE) -> PhantomSpec:
    """A patient drawn at random: body size and lesions typical of COVID-19 (peripheral, posterior, basal).

    NORMAL has no lesions; the consolidation share grows with severity.
    """
    severity = Severity(severity)
    rng = np.random.default_rng([seed, 104729])
    low, high, r_min, r_max = _SEVERITY_LESIONS[severity]
    n = int(rng.integers(low, high + 1)) if high else 0
    consolidation_share = {Severity.MILD: 0.0, Severity.MODERATE: 0.25, Severity.SEVERE: 0.4}.get(severity, 0.0)
    lesions = []
    for i in range(n):
        consolidation = rng.random() < consolidation_share
        subpleural = i % 3 != 2  # two in three touch the pleura, the rest are central
        lesions.append(
            LesionSpec(
                kind=LesionKind.CONSOLIDATION if consolidation else LesionKind.GGO,
                radius_mm=float(rng.uniform(r_min, r_max)),
                hu=float(rng.uniform(-60.0, 30.0) if consolidation else rng.uniform(-700.0, -400.0)),
                lung=Side.RIGHT if rng.random() < 0.5 else Side.LEFT,
                height_frac=float(rng.beta(1.6, 2.2)),  # basal predominance
                angle_deg=float(rng.uniform(-70.0, 120.0)),  # lateral and posterior, never medial (heart)
                depth_frac=float(rng.uniform(0.9, 1.0) if subpleural else rng.uniform(0.0, 0.45)),
                shape_seed=int(rng.integers(0, 2**31)),
            )
        )
    return PhantomSpec(
        seed=seed,
        lesions=tuple(lesions),
        body_width_mm=float(rng.uniform(300.0, 345.0)),
        body_depth_mm=float(rng.uniform(205.0, 245.0)),
        lung_height_mm=float(rng.uniform(205.0, 240.0)),
        description=f"{severity} ({n} lesions)",
    )


def patient_course(seed: int, n_scans: int) -> list[PhantomSpec]:
    """The same patient scanned `n_scans` times: lesions grow to a peak (densest there), then resolve."""
    if n_scans < 1:
        raise ValueError("n_scans must be at least 1")
    baseline = random_spec(seed, Severity.MODERATE if seed % 3 else Severity.SEVERE)
    peak = max(1, (n_scans - 1) // 3) if n_scans > 2 else n_scans - 1
    specs = []
    for scan in range(n_scans):
        if scan <= peak:
            growth = 0.55 + 0.45 * (scan / peak if peak else 1.0)
        else:
            growth = 1.0 - 0.8 * (scan - peak) / max(n_scans - 1 - peak, 1)
        lesions = []
        for lesion in baseline.lesions:
            radius = lesion.radius_mm * growth
            if radius < 4.0:
                continue  # resolved
            kind = LesionKind(lesion.kind)
            if kind == LesionKind.GGO:
                low, high = GGO_RANGE
                hu = float(np.clip(lesion.hu + 150.0 * (growth - 0.8), low, high))  # denser at the peak
            else:
                # Consolidation is there at the peak only; before and after it shows as dense ground glass.
                kind = LesionKind.CONSOLIDATION if growth >= 0.9 else LesionKind.GGO
                hu = lesion.hu if kind == LesionKind.CONSOLIDATION else -350.0
            lesions.append(replace(lesion, kind=kind, radius_mm=radius, hu=hu))
        specs.append(
            replace(baseline, lesions=tuple(lesions), description=f"scan {scan + 1} of {n_scans}, extent {growth:.2f}")
        )
    return specs
