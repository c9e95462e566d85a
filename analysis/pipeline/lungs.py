"""Lung segmentation: label map 1 = right lung (low x), 2 = left lung, on the volume's (z, y, x) grid.

Until a trained network is registered, a classical method does the work (`ClassicalLungSegmenter`):

1. air-like voxels (HU < -400, half way between aerated lung and soft tissue, so partial-volume
   edges split evenly) that are not connected to the image's side edges in their slice (outside air);
2. the trachea and main bronchi, tracked from the top of the scan down to where they enter the lungs,
   are taken out;
3. the large 3-D components are the lungs; two of them are right and left by position, one joined
   mass is cut along the column with the least lung between the two halves in each slice;
4. holes (vessels, lesions surrounded by aerated lung) are filled;
5. dense lung at the pleura (consolidation, which no threshold catches) is recovered from each lung's
   3-D convex hull (in mm): a hull voxel that is not bone and not outside the body joins the lung when
   lung lies medial to it along its row (hull voxels with no lung medial to them are the heart and
   mediastinum) and lung lies both above and below it in its (y, x) column (under the diaphragm dome
   and under the heart there is none). The hull is 3-D because a large subpleural consolidation
   flattens its own slice's outline, while the slices above and below still span it. Consolidation in
   the lowest part of a costophrenic recess is therefore not recovered.

Dense lung against the heart or on the diaphragm has no aerated lung medial to it or below it, so no
density rule can tell it from the heart or the liver next to it. `NetworkGuidedLungSegmenter` adds what
a trained lung network (which has learnt the lungs' shape) calls lung there: the classical mask keeps
the exact edge of aerated lung, and the network only decides about dense tissue next to it
(`recover_dense_lung`), in pieces whose median is of water density: its coarse edge also takes in fat
(P001: 21 mL of the fat over the left dome, median -94 HU), which consolidation is not.
Beside a subpleural consolidation the same edge runs a few mm into the chest wall, past the 3-D convex
hull of the aerated lung: that rim stays out, a consolidated mass reaching far past the hull does not
(GUIDE_HULL_MARGIN_MM).

The network also decides about gas under the diaphragm (`drop_abdominal_gas`). On a thin scan the
stomach and the colon's splenic flexure are air components of their own, below the lungs, and step 3
leaves them out. But the dome's partial volume can join them to the lung: in 10 mm slabs (normal002:
110 mL of colon gas in the left lung, whose walls then read as infection) and even at 2 mm (cap001:
150 mL). In the lower half of each lung, the in-plane pieces of the air mask that the network does not
call lung are left out before steps 4-5 where they form a body that starts in the lung's lowest third
and is air (median below -900 HU): aerated lung that the network misses has tissue in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from analysis.pipeline.errors import NO_LUNGS_MESSAGE, PipelineError
from analysis.pipeline.result import ModelInfo, combined_info, info_of
from analysis.pipeline.volume import CTVolume

RIGHT, LEFT = 1, 2
AIR_HU = -400  # lung vs. soft tissue: mid-way between aerated lung (~ -850) and soft tissue (~ 40)
RECOVER_MAX_HU = 150  # consolidation and effusion stay below; bone (ribs, spine) lies above
MIN_COMPONENT_ML = 20.0  # smaller air pockets are bowel gas, oesophagus, noise
MIN_LUNGS_ML = 300.0  # less aerated lung than this in the whole scan: not a chest CT
# Network-guided recovery: dense voxels the network calls lung, opened in-plane by this radius (the
# network's coarse edge leaves a rim of chest wall, heart and diaphragm a few mm thick: not lung), in
# pieces of at least this volume that touch the classical lung of the same side.
GUIDE_OPENING_MM = 3.0
GUIDE_MIN_ML = 0.5
# ... and, where they pass the 3-D convex hull of the classical lung of that side by more than this, only
# as part of a mass: the network's coarse edge runs 1.5-4 mm into the chest wall beside a subpleural
# consolidation, a rim that reaches up to 12 mm past the hull (whose chord cuts through the consolidation),
# while a consolidated lobe that the aerated lung's hull does not span reaches much further.
# Moderate phantom, 1 mm: of the network's additions, this leaves out 3.65 mL of chest wall and 0.04 mL
# of lung; those within 3 mm of the hull hold the consolidation in the costophrenic recess.
GUIDE_HULL_MARGIN_MM = 3.0
GUIDE_HULL_MASS_MM = 15.0
# ... and whose median is of water density, as consolidation is: the network's coarse edge also takes in
# fat (about -100 HU: pericardial fat pads, the fat over the diaphragm's dome) and, in thick slabs, the
# dome's partial volume with lung (-300..-120 HU), whose pieces' medians lie below this.
GUIDE_MIN_MEDIAN_HU = -80
# Gas veto: an in-plane air piece in the lower half of a lung is gas under the diaphragm when less than
# this share of it lies within GAS_GUIDE_MARGIN_MM of what the network calls lung (its edge is coarse:
# a 160-pixel input, 2-3 mm per pixel). Only when the air mask holds most of the network's lungs.
GAS_MIN_GUIDE_SHARE = 0.5
GAS_GUIDE_MARGIN_MM = 4.0
GUIDE_MIN_HELD = 0.8  # share of the network's lungs that the air mask must hold for the veto to apply
GAS_MAX_MEDIAN_HU = -900  # gas is air; lung parenchyma, even over-inflated at the apex, has tissue in it
SMALL_HOLE_MM2 = 600.0  # 2-D holes below this (vessels, small lesions) are filled slice by slice
TRACHEA_MAX_MM2 = 900.0  # a trachea or main bronchus cross-section is smaller than this
TRACHEA_CENTRE_MM = 40.0  # the trachea starts within this distance of the body's mid-line

_PLANE = np.zeros((3, 3, 3), dtype=bool)
_PLANE[1] = ndimage.generate_binary_structure(2, 1)


class LungSegmenter:
    """Protocol of a lung segmenter: `__call__(volume) -> uint8 labels (1 right, 2 left)` and `.info`."""

    info: ModelInfo

    def __call__(self, volume: CTVolume) -> np.ndarray:  # pragma: no cover - protocol
        raise NotImplementedError


@dataclass
class LungSegmentation:
    """Labels (uint8, 1 right, 2 left), the method that produced them and anything worth a warning."""

    labels: np.ndarray
    model: ModelInfo
    warnings: list[str] = field(default_factory=list)


class ClassicalLungSegmenter(LungSegmenter):
    """Threshold, airway removal, component selection, hole filling and pleural recovery (see module doc)."""

    info = ModelInfo(stage="lungs", name="classical-threshold-hull", version="1.0", kind="classical")

    def __init__(self, air_hu: int = AIR_HU, recover_max_hu: int = RECOVER_MAX_HU) -> None:
        self.air_hu = air_hu
        self.recover_max_hu = recover_max_hu
        self.warnings: list[str] = []

    def __call__(self, volume: CTVolume, guide: np.ndarray | None = None) -> np.ndarray:
        """Lung labels of `volume`; `guide` (a network's lung labels on the same grid) vetoes abdominal gas."""
        self.warnings = []
        hu = volume.hu
        pixel_mm2 = volume.pixel_area_mm2
        air = hu < self.air_hu
        outside = _outside_air(air)
        inside = air & ~outside
        trachea = _track_trachea(inside, volume)
        if trachea.any():
            # The wall's partial-volume ring goes too: two pixels around the tracked lumen.
            box = _box(trachea, margin=3)
            inside[box] &= ~ndimage.binary_dilation(trachea[box], structure=_PLANE, iterations=2)
        labels = _select_lungs(inside, volume)
        if labels is None:
            raise PipelineError(NO_LUNGS_MESSAGE)
        if guide is not None:
            labels, warning = drop_abdominal_gas(volume, labels, guide)
            if warning:
                self.warnings.append(warning)
        out = np.zeros(hu.shape, dtype=np.uint8)
        not_bone_body = (hu <= self.recover_max_hu) & ~outside
        for side in (RIGHT, LEFT):
            lung = labels == side
            if not lung.any():
                self.warnings.append(f"the {'right' if side == RIGHT else 'left'} lung was not found")
                continue
            zs, ys, xs = _box(lung, margin=1)
            crop = lung[zs, ys, xs]
            crop = _fill_holes(crop, pixel_mm2)
            crop |= _pleural_recovery(crop, not_bone_body[zs, ys, xs], side, volume.spacing)
            crop = _fill_holes(crop, pixel_mm2)
            region = out[zs, ys, xs]
            region[crop & (region == 0)] = side
        total_ml = np.count_nonzero(out) * volume.voxel_volume_ml
        if total_ml < MIN_LUNGS_ML:
            raise PipelineError(NO_LUNGS_MESSAGE)
        return out


class NetworkGuidedLungSegmenter(LungSegmenter):
    """The classical lungs without the abdominal gas a trained network does not call lung and, with
    `recover_dense`, plus the dense lung it finds next to them (see module doc).

    The worker runs it with `recover_dense` when the network's metadata says `pipeline_default` (the
    shipped weights do since pipeline 0.6.0: more of the consolidation against the heart, on the diaphragm
    and in the costophrenic recesses is measured, model card); without it the network only vetoes gas.
    """

    def __init__(
        self,
        network: Callable[[CTVolume], np.ndarray],
        classical: ClassicalLungSegmenter | None = None,
        *,
        recover_dense: bool = True,
    ):
        self.network = network
        self.classical = classical or ClassicalLungSegmenter()
        self.recover_dense = recover_dense
        self.warnings: list[str] = []
        net = info_of(network, "lungs")
        role = "" if recover_dense else " gas veto"
        self.info = combined_info("lungs", f"{self.classical.info.name}+{net.name}{role}", net)

    def __call__(self, volume: CTVolume) -> np.ndarray:
        guide = np.asarray(self.network(volume))
        if guide.shape != volume.shape:
            raise PipelineError(f"the lung network returned shape {guide.shape} for a volume of {volume.shape}")
        labels = self.classical(volume, guide=guide)
        self.warnings = list(self.classical.warnings)
        return recover_dense_lung(volume, labels, guide) if self.recover_dense else labels


def drop_abdominal_gas(
    volume: CTVolume,
    labels: np.ndarray,
    guide: np.ndarray,
    *,
    min_share: float = GAS_MIN_GUIDE_SHARE,
    margin_mm: float = GAS_GUIDE_MARGIN_MM,
    max_median_hu: float = GAS_MAX_MEDIAN_HU,
) -> tuple[np.ndarray, str]:
    """`labels` (the air-filled lungs, 1 right / 2 left) without the stomach and bowel gas that thick
    slabs join to a lung through the diaphragm's partial volume (module doc).

    Gas is a body that the in-plane pieces of the lung's lower half that `guide` (a network's lung
    labels) does not call lung form in 3-D, when it starts in the lowest third of the lung and is air
    (median HU below `max_median_hu`). Aerated lung the network misses (between consolidations, which it
    has rarely seen) has tissue in it and stays; cap001's partly consolidated middle lobe reads -837 HU,
    the colon gas -931 to -986 HU, in 2 mm slices and in 10 mm slabs.

    Returns the labels and a warning ("" when none). When the network finds less than MIN_LUNGS_ML of
    lung, or the air mask holds less than GUIDE_MIN_HELD of it, nothing is dropped: the network is not
    reading this scan.
    """
    lungs, guided = labels > 0, guide > 0
    # The network must find lungs, and the air mask must hold most of them; the air mask may hold more
    # (that is the gas in question), so this is not a symmetric agreement such as Dice.
    guided_voxels = np.count_nonzero(guided)
    held = np.count_nonzero(lungs & guided) / max(guided_voxels, 1)
    if guided_voxels * volume.voxel_volume_ml < MIN_LUNGS_ML or held < GUIDE_MIN_HELD:
        return labels, (
            f"the lung network does not read this scan's lungs like the air mask (it finds "
            f"{guided_voxels * volume.voxel_volume_ml:.0f} mL, {100 * held:.0f} % of it air): gas under the "
            "diaphragm not checked"
        )
    out = labels.copy()
    _, sy, sx = volume.spacing
    width = 2 * max(1, round(margin_mm / ((sy + sx) / 2))) + 1
    for side in (RIGHT, LEFT):
        lung = labels == side
        zs = np.flatnonzero(lung.any(axis=(1, 2)))
        if not zs.size:
            continue
        # Gas lies under the diaphragm: only the lower half of the lung's craniocaudal extent is checked.
        lower = slice(zs[0], int((zs[0] + zs[-1]) // 2) + 1)
        _, ys, xs = _box(lung[lower], margin=width)
        box = (lower, ys, xs)
        # Within the margin of the network's lungs (a square neighbourhood: two 1-D passes, fast).
        near = ndimage.maximum_filter1d(guided[box].view(np.uint8), width, axis=1)
        near = ndimage.maximum_filter1d(near, width, axis=2).view(bool)
        pieces, n = ndimage.label(lung[box], structure=_PLANE)
        if n == 0:
            continue
        sizes = np.bincount(pieces.ravel(), minlength=n + 1)
        agreeing = np.bincount(pieces[near].ravel(), minlength=n + 1)
        missed = agreeing < min_share * sizes
        missed[0] = False
        bodies, count = ndimage.label(missed[pieces])
        if count == 0:
            continue
        lowest = np.array([found[0].start for found in ndimage.find_objects(bodies)])  # from the lung's base
        # Median HU below the limit <=> more than half of the body's voxels below it.
        body_sizes = np.bincount(bodies.ravel(), minlength=count + 1)[1:]
        air = np.bincount(bodies[volume.hu[box] < max_median_hu].ravel(), minlength=count + 1)[1:]
        gas = np.concatenate([[False], (lowest < (zs[-1] - zs[0] + 1) / 3) & (2 * air > body_sizes)])
        out[box][gas[bodies]] = 0
    return out, ""


def recover_dense_lung(
    volume: CTVolume,
    labels: np.ndarray,
    guide: np.ndarray,
    *,
    max_hu: int = RECOVER_MAX_HU,
    opening_mm: float = GUIDE_OPENING_MM,
    min_ml: float = GUIDE_MIN_ML,
    min_median_hu: float = GUIDE_MIN_MEDIAN_HU,
    hull_margin_mm: float | None = GUIDE_HULL_MARGIN_MM,
    hull_mass_mm: float = GUIDE_HULL_MASS_MM,
) -> np.ndarray:
    """`labels` (classical lungs) plus the dense, non-bone voxels that `guide` (a network) labels as the
    same lung, opened in-plane by `opening_mm` and only in pieces of >= `min_ml` touching that lung
    whose median HU is at least `min_median_hu` (consolidation, not fat or partial volume). Of what lies
    more than `hull_margin_mm` outside that lung's 3-D convex hull, a piece that reaches no further than
    `hull_mass_mm` is a rim of chest wall and stays out (`hull_margin_mm` None: no such limit)."""
    out = labels.copy()
    hu = volume.hu
    _, sy, sx = volume.spacing
    radius = max(1, round(opening_mm / ((sy + sx) / 2)))
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disk = (yy**2 + xx**2 <= radius**2)[np.newaxis]
    dense = (hu >= AIR_HU) & (hu <= max_hu)
    min_voxels = min_ml / volume.voxel_volume_ml
    for side in (RIGHT, LEFT):
        candidate = (guide == side) & (labels == 0) & dense
        if not candidate.any() or not (labels == side).any():
            continue
        box = _box(candidate | (labels == side), margin=radius + 1)
        crop = ndimage.binary_opening(candidate[box], structure=disk)
        pieces, n = ndimage.label(crop)
        if n == 0:
            continue
        lung = labels[box] == side
        sizes = np.bincount(pieces.ravel())
        touching = np.zeros(n + 1, dtype=bool)
        touching[pieces[ndimage.binary_dilation(lung) & crop]] = True
        # Median >= min_median_hu <=> at least half of the piece's voxels reach it (counting is much faster
        # than ndimage.median, which sorts the whole box: 2.6 s on a 148-slice scan).
        reaching = np.bincount(pieces[hu[box] >= min_median_hu], minlength=n + 1)
        keep = touching & (sizes >= min_voxels) & (2 * reaching >= sizes)
        keep[0] = False
        # The opening also rounds off the corners of what it keeps: grow it back inside the candidates
        # by the same radius (a thin rim further away does not come back).
        kept = ndimage.binary_dilation(keep[pieces], structure=_PLANE, iterations=radius, mask=candidate[box])
        if hull_margin_mm is not None and kept.any():
            kept &= ~_chest_wall_rim(kept, lung, volume.spacing, hull_margin_mm, hull_mass_mm)
        region = out[box]
        region[kept & (region == 0)] = side
    return out


def _chest_wall_rim(
    added: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float], margin_mm: float, mass_mm: float
) -> np.ndarray:
    """The voxels of `added` more than `margin_mm` outside the 3-D convex hull of `lung`, in pieces
    that reach no further than `mass_mm` from it (see GUIDE_HULL_MARGIN_MM)."""
    points = np.argwhere(added)
    beyond = _beyond_convex_hull_mm(lung, points, np.asarray(spacing, dtype=np.float32))
    outside = beyond > margin_mm
    rim = np.zeros_like(added)
    if not outside.any():
        return rim
    # Pieces are labelled in the box of the outside voxels only: they are few, the lung's box is large.
    far, depths = points[outside], beyond[outside]
    low = far.min(axis=0)
    local = tuple((far - low).T)
    box = np.zeros(tuple(far.max(axis=0) - low + 1), dtype=bool)
    box[local] = True
    pieces, n = ndimage.label(box, structure=np.ones((3, 3, 3), dtype=bool))
    depth = np.zeros(n + 1, dtype=np.float32)
    np.maximum.at(depth, pieces[local], depths)
    rim[tuple(far[(depth <= mass_mm)[pieces[local]]].T)] = True
    return rim


def segment_lungs(volume: CTVolume, segmenter: Callable[[CTVolume], np.ndarray] | None = None) -> LungSegmentation:
    """Lung label map of `volume` (1 right, 2 left) by `segmenter` (a network) or the classical method.

    Raises PipelineError when the scan holds no lungs (not a chest CT) or the segmenter's output is unusable.
    """
    segmenter = segmenter or ClassicalLungSegmenter()
    labels = np.asarray(segmenter(volume))
    if labels.shape != volume.shape:
        raise PipelineError(f"the lung segmenter returned shape {labels.shape} for a volume of {volume.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > LEFT):
        raise PipelineError("the lung segmenter must return labels 0 (background), 1 (right) and 2 (left)")
    labels = labels.astype(np.uint8)
    if np.count_nonzero(labels) * volume.voxel_volume_ml < MIN_LUNGS_ML:
        raise PipelineError(NO_LUNGS_MESSAGE)
    info = info_of(segmenter, "lungs")
    return LungSegmentation(labels=labels, model=info, warnings=list(getattr(segmenter, "warnings", [])))


def _box(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty 3-D mask, widened by `margin` voxels."""
    spans = []
    for axis in range(3):
        found = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        spans.append(slice(max(int(found[0]) - margin, 0), int(found[-1]) + margin + 1))
    return tuple(spans)  # type: ignore[return-value]


def _edge_connected(mask: np.ndarray, structure: np.ndarray, *, z_faces: bool) -> np.ndarray:
    """Voxels of `mask` connected (through `structure`) to the array's side edges (and top/bottom if z_faces)."""
    labelled, n = ndimage.label(mask, structure=structure)
    faces = [labelled[:, 0, :], labelled[:, -1, :], labelled[:, :, 0], labelled[:, :, -1]]
    if z_faces:
        faces += [labelled[0], labelled[-1]]
    lookup = np.zeros(n + 1, dtype=bool)
    lookup[np.concatenate([f.ravel() for f in faces])] = True
    lookup[0] = False
    return lookup[labelled]


def _outside_air(air: np.ndarray) -> np.ndarray:
    """Air connected to the side edges of its slice (around the patient, under the table)."""
    return _edge_connected(air, _PLANE, z_faces=False)


def _holes(mask: np.ndarray, structure: np.ndarray, *, z_faces: bool) -> np.ndarray:
    """Background enclosed by `mask` (faster than binary_fill_holes' repeated dilation)."""
    background = ~mask
    return background & ~_edge_connected(background, structure, z_faces=z_faces)


def _track_trachea(inside: np.ndarray, volume: CTVolume) -> np.ndarray:
    """The trachea and main bronchi: followed from the top slice down while their cross-sections stay small.

    A branch stops when it merges into a large air region (it has entered a lung) or ends.
    """
    nz = inside.shape[0]
    pixel_mm2 = volume.pixel_area_mm2
    max_px = TRACHEA_MAX_MM2 / pixel_mm2
    trachea = np.zeros(inside.shape, dtype=bool)
    centre_x = inside.shape[2] / 2
    tracked: np.ndarray | None = None
    for z in range(nz - 1, -1, -1):
        labelled, n = ndimage.label(inside[z])
        if n == 0:
            if tracked is not None:
                break
            continue
        sizes = np.bincount(labelled.ravel())
        if tracked is None:
            # Seed: a small air region near the mid-line, in the highest slice that has one.
            seeds = []
            for index in range(1, n + 1):
                if not 20.0 / pixel_mm2 <= sizes[index] <= max_px:
                    continue
                cx = ndimage.center_of_mass(labelled == index)[1]
                if abs(cx - centre_x) * volume.spacing[2] <= TRACHEA_CENTRE_MM:
                    seeds.append(index)
            if not seeds:
                continue
            current = np.isin(labelled, seeds)
        else:
            touching = np.unique(labelled[tracked])
            touching = [t for t in touching if t > 0 and sizes[t] <= max_px]
            if not touching:
                break
            current = np.isin(labelled, touching)
        trachea[z] = current
        tracked = current
    return trachea


def _select_lungs(inside: np.ndarray, volume: CTVolume) -> np.ndarray | None:
    """Label the large air components 1 (right) / 2 (left); None when there is no lung-sized air."""
    labelled, n = ndimage.label(inside)
    if n == 0:
        return None
    sizes = np.bincount(labelled.ravel())
    sizes[0] = 0
    ml = sizes * volume.voxel_volume_ml
    if ml.max() < MIN_COMPONENT_ML:
        return None
    largest = int(np.argmax(ml))
    objects = ndimage.find_objects(labelled)
    top_of_largest = objects[largest - 1][0].stop
    bottom_of_largest = objects[largest - 1][0].start
    mid_z = (top_of_largest + bottom_of_largest) / 2
    keep = []
    for index in np.argsort(ml)[::-1]:
        if index == 0 or ml[index] < max(MIN_COMPONENT_ML, 0.03 * ml[largest]):
            break
        # A lung reaches above the middle of the largest one; stomach and bowel gas stay below it.
        if objects[index - 1][0].stop >= mid_z:
            keep.append(index)
    out = np.zeros(inside.shape, dtype=np.uint8)
    body_centre = _body_centre_x(inside)
    first = objects[keep[0] - 1]
    joined = labelled[first] == keep[0]
    if len(keep) == 1 or _crosses_midline(joined, body_centre - first[2].start):
        right = _split_joined(joined)
        out[first][right] = RIGHT
        out[first][joined & ~right] = LEFT
        rest = keep[1:]
    else:
        rest = keep
    for index in rest:
        box = objects[index - 1]
        component = labelled[box] == index
        centroid_x = np.nonzero(component)[2].mean() + box[2].start
        region = out[box]
        region[component & (region == 0)] = RIGHT if centroid_x < body_centre else LEFT
    return out


def _body_centre_x(inside: np.ndarray) -> float:
    columns = np.nonzero(inside.any(axis=(0, 1)))[0]
    return float(columns[0] + columns[-1]) / 2 if columns.size else inside.shape[2] / 2


def _crosses_midline(component: np.ndarray, centre_x: float) -> bool:
    """Whether a component holds a substantial share of lung on both sides of the mid-line."""
    columns = component.sum(axis=(0, 1))
    x = np.arange(columns.size)
    left_share = columns[x >= centre_x].sum() / max(columns.sum(), 1)
    return 0.25 < left_share < 0.75


def _split_joined(joined: np.ndarray) -> np.ndarray:
    """Right-lung part of a joined mass: per slice, left of the least-populated column in the middle."""
    right = np.zeros_like(joined)
    for z in np.nonzero(joined.any(axis=(1, 2)))[0]:
        columns = joined[z].sum(axis=0)
        xs = np.nonzero(columns)[0]
        lo, hi = xs[0], xs[-1]
        width = hi - lo
        if width < 4:
            continue
        middle = slice(lo + int(0.3 * width), lo + int(0.7 * width) + 1)
        cut = middle.start + int(np.argmin(columns[middle]))
        right[z, :, :cut] = joined[z, :, :cut]
    # Slices where the mass lies on one side only follow the overall split.
    return right


def _fill_holes(lung: np.ndarray, pixel_mm2: float) -> np.ndarray:
    """Fill 3-D enclosed holes and small 2-D holes (vessels) of one lung."""
    filled = lung | _holes(lung, ndimage.generate_binary_structure(3, 1), z_faces=True)
    holes2d = _holes(filled, _PLANE, z_faces=False)
    if holes2d.any():
        labelled, _ = ndimage.label(holes2d, structure=_PLANE)
        small = np.bincount(labelled.ravel()) * pixel_mm2 < SMALL_HOLE_MM2
        small[0] = False
        filled |= small[labelled]
    return filled


def _pleural_recovery(
    lung: np.ndarray, allowed: np.ndarray, side: int, spacing: tuple[float, float, float]
) -> np.ndarray:
    """Voxels of the lung's 3-D convex hull that are dense lung at the pleura (see module doc)."""
    # Medial is towards high x for the right lung (low x indices), low x for the left: lung must lie
    # medial to a recovered voxel along its row (else it is heart or mediastinum).
    if side == RIGHT:
        medial = np.maximum.accumulate(lung[:, :, ::-1], axis=2)[:, :, ::-1]
    else:
        medial = np.maximum.accumulate(lung, axis=2)
    # Lung must also lie above and below it in its (y, x) column: under the diaphragm dome (liver,
    # spleen) and under the heart there is none.
    below = np.maximum.accumulate(lung, axis=0)
    above = np.maximum.accumulate(lung[::-1], axis=0)[::-1]
    candidates = allowed & ~lung & medial & below & above
    points = np.argwhere(candidates)
    recovered = np.zeros_like(lung)
    if not len(points):
        return recovered
    # A 3-D hull, not one per slice: a large subpleural consolidation flattens the slice's own outline
    # (the per-slice hull then cuts its chord through the lesion), while the slices above and below
    # still carry the lung's convex rib-cage surface across it.
    inside = _in_convex_hull_3d(lung, points, np.asarray(spacing, dtype=np.float32))
    recovered[tuple(points[inside].T)] = True
    # Keep what touches the lung: the hull may also reach past a gap.
    labelled, n = ndimage.label(recovered)
    touching = np.zeros(n + 1, dtype=bool)
    touching[labelled[ndimage.binary_dilation(lung) & recovered]] = True
    touching[0] = False
    return touching[labelled]


def _in_convex_hull_3d(mask: np.ndarray, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Which of `points` (z, y, x indices) lie inside the convex hull of the 3-D `mask` (in mm)."""
    return _beyond_convex_hull_mm(mask, points, spacing) <= 0.5 * float(spacing[1:].min())  # half a pixel


def _beyond_convex_hull_mm(mask: np.ndarray, points: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """How far (mm) each of `points` (z, y, x indices) lies outside the convex hull of the 3-D `mask`:
    the largest distance beyond any facet's plane (<= 0 inside; a lower bound of the true distance
    outside, equal to it opposite a facet). +inf for every point when the mask has no volume."""
    surface = _row_ends(mask)
    beyond = np.full(len(points), np.inf, dtype=np.float32)
    if len(surface) < 4:
        return beyond
    try:
        hull = ConvexHull(surface * spacing)
    except QhullError:  # flat: no volume
        return beyond
    normals, offsets = hull.equations[:, :3].astype(np.float32), hull.equations[:, 3].astype(np.float32)
    step = max(1, 2_000_000 // len(normals))  # bounds the (points x facets) block in memory
    for start in range(0, len(points), step):
        block = points[start : start + step].astype(np.float32) * spacing
        beyond[start : start + step] = (block @ normals.T + offsets).max(axis=1)
    return beyond


def _row_ends(mask: np.ndarray) -> np.ndarray:
    """The first and last voxel (z, y, x indices) of `mask` along each row: every voxel lies between the two
    of its row, so they span the same convex hull as the whole mask, with far fewer points for Qhull (and no
    3-D erosion to find the surface)."""
    zs, ys = np.nonzero(mask.any(axis=2))
    first = mask.argmax(axis=2)[zs, ys]
    last = mask.shape[2] - 1 - mask[:, :, ::-1].argmax(axis=2)[zs, ys]
    return np.concatenate([np.stack([zs, ys, first], axis=1), np.stack([zs, ys, last], axis=1)])
