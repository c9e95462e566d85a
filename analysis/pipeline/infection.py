"""Infection segmentation inside the lungs: 1 = ground-glass opacity (GGO), 2 = consolidation.

Until a trained network is registered, `HUBandBaseline` does the work and says so (ModelInfo
kind="baseline"): it is a density rule, not a learned model. Inside the lungs, after a light in-plane
smoothing against noise, voxels in the GGO band (-700..-300 HU) or the consolidation band
(-300..+100 HU) are candidates; a candidate must also reach half way from aerated lung (-850 HU) to
the core of the lesion around it (the local maximum in the lung, within ~10 mm, of a grey opening that removes
vessels; capped at -300 HU so the ground-glass halo of a consolidation stays in), which splits a thick
slice's partial-volume shell where the lesion covers half a voxel, as the truth does; a per-slice
morphological opening (radius ~3.5 mm) removes what is thin (vessels, airway walls, the partial-volume
rim at the pleura and fissures), dense voxels near the hilum are vessels and bronchi, and 3-D components
below MIN_COMPONENT_ML are dropped as noise. Anything dense is counted, so effusion, atelectasis or
fibrosis inside the lung mask reads as infection: the baseline does not know the cause.

`NetworkWithDenseCores` runs a trained network and completes it with the baseline's consolidation where
the two meet: the network finds faint ground glass that no density band separates from lung, while it
under-reads the dense core of large consolidations, which the density rule gets right. Dense pieces
that touch no network lesion (vessels, mostly) are not added.

`BaselineWithNetworkVeto` is what the worker runs while the network is not the default: the HU baseline,
less its dense pieces (mean above DENSE_PIECE_MEAN_HU) in which the network sees no lesion at all. Those
are vessel segments thick enough to survive the opening beyond the hilar band, which the density rule
cannot tell from a small consolidation. Faint pieces stay: vetoing them too took true partial-volume ground
glass from the 10 mm phantom (model card).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from analysis.pipeline.errors import PipelineError
from analysis.pipeline.result import ModelInfo, combined_info, info_of
from analysis.pipeline.volume import CTVolume

GGO, CONSOLIDATION = 1, 2
# Bands (low, high] in HU. -700 sits half way between aerated lung (~ -850) and typical GGO (~ -550),
# so partial-volume edges split evenly; it also keeps dependent (posterior) normal lung out.
GGO_BAND = (-700.0, -300.0)
CONSOLIDATION_BAND = (-300.0, 100.0)
SMOOTH_SIGMA_MM = 0.8  # in-plane Gaussian against quantum noise
OPENING_RADIUS_MM = 3.5  # structures thinner than ~7 mm (vessels, walls) are not infection
MIN_COMPONENT_ML = 0.03
# Edges: a voxel counts when it is at least half way from aerated lung to the core of the lesion within
# CORE_REACH_MM (a full-width-at-half-maximum rule), so a thick slice's partial-volume shell splits
# where the lesion covers half of the voxel, as in the truth, whatever the lesion's own density.
AERATED_LUNG_HU = -850.0
CORE_REACH_MM = 6.0
CORE_CAP_HU = -300.0
# Dense (consolidation-band) voxels this close (in plane) to the mediastinum are hilar vessels and bronchi.
HILAR_MM = 30.0
# A baseline piece (3-D component) this dense on average, touching no network lesion, is vessel or wall.
DENSE_PIECE_MEAN_HU = -500.0


@dataclass
class InfectionSegmentation:
    """Labels (uint8, 1 GGO, 2 consolidation) and the method that produced them."""

    labels: np.ndarray
    model: ModelInfo


class HUBandBaseline:
    """Density-band baseline (see module doc): `__call__(volume, lungs) -> uint8 labels`."""

    info = ModelInfo(stage="infection", name="hu-band-baseline", version="1.0", kind="baseline")

    def __init__(
        self,
        ggo_band: tuple[float, float] = GGO_BAND,
        consolidation_band: tuple[float, float] = CONSOLIDATION_BAND,
        opening_radius_mm: float = OPENING_RADIUS_MM,
        min_component_ml: float = MIN_COMPONENT_ML,
        hilar_mm: float = HILAR_MM,
    ) -> None:
        if not ggo_band[0] < ggo_band[1] <= consolidation_band[0] < consolidation_band[1]:
            raise ValueError("bands must be increasing: GGO below consolidation")
        self.ggo_band = ggo_band
        self.consolidation_band = consolidation_band
        self.opening_radius_mm = opening_radius_mm
        self.min_component_ml = min_component_ml
        self.hilar_mm = hilar_mm

    def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
        out = np.zeros(volume.shape, dtype=np.uint8)
        inside = lungs > 0
        if not inside.any():
            return out
        box = ndimage.find_objects(inside.astype(np.uint8))[0]
        lung = inside[box]
        _, sy, sx = volume.spacing
        hu = ndimage.gaussian_filter(
            volume.hu[box].astype(np.float32), sigma=(0.0, SMOOTH_SIGMA_MM / sy, SMOOTH_SIGMA_MM / sx)
        )
        candidate = lung & (hu > self.ggo_band[0]) & (hu <= self.consolidation_band[1])
        candidate &= hu >= _half_maximum(hu, lung, volume.spacing, self.opening_radius_mm)
        if self.hilar_mm > 0:
            candidate &= ~(_hilar_band(lungs[box], self.hilar_mm, (sy, sx)) & (hu > self.consolidation_band[0]))
        candidate = _open_in_plane(candidate, self.opening_radius_mm, (sy, sx)) & lung
        candidate = _drop_small(candidate, self.min_component_ml / volume.voxel_volume_ml)
        labels = out[box]
        labels[candidate] = GGO
        labels[candidate & (hu > self.consolidation_band[0])] = CONSOLIDATION
        return out


class NetworkWithDenseCores:
    """A trained infection network completed by the baseline's consolidation that touches its lesions."""

    def __init__(self, network: Callable[[CTVolume, np.ndarray], np.ndarray], baseline: HUBandBaseline | None = None):
        self.network = network
        self.baseline = baseline or HUBandBaseline()
        net = info_of(network, "infection")
        self.info = combined_info("infection", f"{net.name}+{self.baseline.info.name}", net)

    def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
        labels = np.where(lungs > 0, np.asarray(self.network(volume, lungs)), 0).astype(np.uint8)
        return add_touching_consolidation(labels, self.baseline(volume, lungs))


class BaselineWithNetworkVeto:
    """The HU baseline without its dense pieces in which a trained network sees no lesion (module doc)."""

    def __init__(self, network: Callable[[CTVolume, np.ndarray], np.ndarray], baseline: HUBandBaseline | None = None):
        self.network = network
        self.baseline = baseline or HUBandBaseline()
        net = info_of(network, "infection")
        # Still a density rule (kind "baseline", so the run warns as before); the network only vetoes.
        self.info = ModelInfo(
            stage="infection",
            name=f"{self.baseline.info.name}+{net.name} veto",
            version=net.version,
            sha256=net.sha256,
            kind="baseline",
        )

    def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
        labels = self.baseline(volume, lungs)
        if not labels.any():
            return labels
        # One voxel of margin, so that a network lesion just beyond the pieces' box touches them.
        box = tuple(
            slice(max(b.start - 1, 0), b.stop + 1) for b in ndimage.find_objects((labels > 0).astype(np.uint8))[0]
        )
        pieces, n = ndimage.label(labels[box] > 0, structure=np.ones((3, 3, 3), dtype=bool))
        dense = np.flatnonzero(_dense_pieces(pieces, n, volume.hu[box]))
        if not len(dense):
            return labels
        # The network reads as few slices as decide: first each dense piece's widest slice (a lesion is
        # confirmed there), then all slices, with their neighbours, of the pieces still unconfirmed (a
        # vessel segment spans a few). The result is what reading the whole study would give.
        z0, nz = box[0].start, pieces.shape[0]
        area = np.bincount((np.arange(nz)[:, None, None] * (n + 1) + pieces).ravel(), minlength=nz * (n + 1))
        widest = area.reshape(nz, n + 1)[:, dense].argmax(axis=0)
        network = np.zeros(volume.shape, dtype=np.uint8)
        read = np.zeros(volume.shape[0], dtype=bool)
        has_lung = (lungs > 0).any(axis=(1, 2))

        def read_slices(wanted: np.ndarray) -> None:
            zs = np.flatnonzero(wanted & has_lung & ~read)
            if not len(zs):
                return
            subset = getattr(self.network, "segment_slices", None)  # a shipped network reads only these
            if subset is None:  # any other callable reads the whole study, once
                zs = np.flatnonzero(has_lung)
            found = np.asarray(subset(volume, lungs, zs) if subset else self.network(volume, lungs))
            network[zs] = np.where(lungs[zs] > 0, found[zs], 0)
            read[zs] = True

        first = np.zeros_like(read)
        first[z0 + widest] = True
        read_slices(first)
        touching = _touching(pieces, n, network[box])
        open_ = dense[~touching[dense]]
        if len(open_):
            wanted = np.zeros_like(read)
            wanted[box[0]] = np.isin(pieces, open_).any(axis=(1, 2))
            read_slices(ndimage.binary_dilation(wanted))
            touching = _touching(pieces, n, network[box])
        drop = np.zeros(n + 1, dtype=bool)
        drop[dense[~touching[dense]]] = True
        out = labels.copy()
        out[box][drop[pieces]] = 0
        return out


def _touching(pieces: np.ndarray, n: int, network: np.ndarray) -> np.ndarray:
    """Per piece label (0..n): whether the piece has a voxel next to (sharing a face with) or on a voxel
    `network` labels."""
    touching = np.zeros(n + 1, dtype=bool)
    touching[pieces[ndimage.binary_dilation(network > 0) & (pieces > 0)]] = True
    touching[0] = False
    return touching


def _dense_pieces(pieces: np.ndarray, n: int, hu: np.ndarray, mean_hu: float = DENSE_PIECE_MEAN_HU) -> np.ndarray:
    """Per piece label (0..n): whether the piece's mean HU is above `mean_hu` (never the background, 0)."""
    sums = np.bincount(pieces.ravel(), weights=hu.ravel().astype(np.float64), minlength=n + 1)
    dense = sums > mean_hu * np.bincount(pieces.ravel(), minlength=n + 1)
    dense[0] = False
    return dense


def add_touching_consolidation(labels: np.ndarray, baseline: np.ndarray) -> np.ndarray:
    """`labels` with the baseline's consolidation pieces (3-D, 26-connected) that touch a labelled voxel."""
    dense = baseline == CONSOLIDATION
    if not dense.any():
        return labels
    pieces, n = ndimage.label(dense, structure=np.ones((3, 3, 3), dtype=bool))
    out = labels.copy()
    out[_touching(pieces, n, labels)[pieces]] = CONSOLIDATION
    return out


def segment_infection(
    volume: CTVolume,
    lungs: np.ndarray,
    segmenter: Callable[[CTVolume, np.ndarray], np.ndarray] | None = None,
) -> InfectionSegmentation:
    """Infection labels (1 GGO, 2 consolidation) inside `lungs`, by `segmenter` (a network) or the HU baseline.

    Whatever the segmenter returns is clipped to the lung mask.
    """
    segmenter = segmenter or HUBandBaseline()
    if lungs.shape != volume.shape:
        raise PipelineError(f"lung mask shape {lungs.shape} does not match the volume {volume.shape}")
    labels = np.asarray(segmenter(volume, lungs))
    if labels.shape != volume.shape:
        raise PipelineError(f"the infection segmenter returned shape {labels.shape} for a volume of {volume.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > CONSOLIDATION):
        raise PipelineError("the infection segmenter must return labels 0 (none), 1 (GGO) and 2 (consolidation)")
    labels = np.where(lungs > 0, labels, 0).astype(np.uint8)
    labels = drop_craniocaudal_partial_volume(labels, lungs > 0)
    info = info_of(segmenter, "infection")
    return InfectionSegmentation(labels=labels, model=info)


def drop_craniocaudal_partial_volume(labels: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """Infection at the lungs' craniocaudal edge (no lung in the slice above or below) is kept only where
    it continues into the lung there.

    A slice that cuts the diaphragm dome or an apex obliquely averages lung with the liver, spleen or
    chest wall beyond it: that edge looks like ground glass, the more so the thicker the slice
    (measured: normal002 read 1.35 % at 10 mm slabs, 0.83 % without it; 0.34 % / 0.32 % at 2 mm). An
    opacity resting on the diaphragm continues upwards into the lung and stays.
    """
    infected = labels > 0
    above, below = np.zeros_like(lungs), np.zeros_like(lungs)
    above[:-1], below[1:] = lungs[1:], lungs[:-1]
    infected_above, infected_below = np.zeros_like(infected), np.zeros_like(infected)
    infected_above[:-1], infected_below[1:] = infected[1:], infected[:-1]
    at_edge = ~(above & below)
    continues = (above & infected_above) | (below & infected_below)
    return np.where(infected & at_edge & ~continues, 0, labels).astype(labels.dtype)


def _open_in_plane(mask: np.ndarray, radius_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Per-slice opening with an octagon of `radius_mm` (alternating 3x3 cross and square steps: fast)."""
    radius_px = max(1, round(radius_mm / ((pixel_mm[0] + pixel_mm[1]) / 2)))
    cross = ndimage.generate_binary_structure(2, 1)[np.newaxis]
    square = ndimage.generate_binary_structure(2, 2)[np.newaxis]
    steps = [cross if i % 2 == 0 else square for i in range(radius_px)]
    out = mask
    for structure in steps:
        out = ndimage.binary_erosion(out, structure=structure)
    for structure in reversed(steps):
        out = ndimage.binary_dilation(out, structure=structure)
    return out


def _half_maximum(
    hu: np.ndarray, lung: np.ndarray, spacing: tuple[float, float, float], opening_radius_mm: float
) -> np.ndarray:
    """Per voxel, half way between aerated lung and the nearby lesion core's HU (see module doc).

    The core is looked for in the lung only: the chest wall, heart or diaphragm next to a subpleural
    ground glass would otherwise be its "core" and raise its edge to -575 HU, taking a fifth of it away.
    """
    sz, sy, sx = spacing
    pixel = (sy + sx) / 2
    hu = np.where(lung, hu, np.float32(AERATED_LUNG_HU))
    # Grey opening first, so thin bright structures (vessels) do not raise the core level of the GGO
    # they cross; then the local maximum: the HU of the core of the lesion a voxel belongs to.
    opening = 2 * round(opening_radius_mm / pixel) + 1
    core = ndimage.minimum_filter(hu, size=(1, opening, opening))
    reach = opening_radius_mm + CORE_REACH_MM
    in_plane = 2 * round(reach / pixel) + 1
    through = 2 * max(1, round(CORE_REACH_MM / sz)) + 1
    core = ndimage.maximum_filter(core, size=(through, in_plane, in_plane))
    return (np.minimum(core, CORE_CAP_HU) + AERATED_LUNG_HU) / 2


def _hilar_band(lungs: np.ndarray, width_mm: float, pixel_mm: tuple[float, float]) -> np.ndarray:
    """Lung voxels near the hilum: within `width_mm` (in plane) of the mediastinum, in the middle half of
    their lung's front-to-back extent in that slice (posterior, paravertebral lung is not hilum, and
    dependent consolidation lies there).

    The mediastinum of a slice is what lies between the two lungs: inside their convex hull, outside
    both, and between the lungs' centres from side to side. The distance is measured in the plane, not
    along the row from the lung's medial-most pixel: below the main bronchi the lower lobes reach behind
    the hilum to the spine, so along those rows the hilar arteries lie 40-50 mm from the "medial edge"
    and their cross-sections (round, 8-10 mm, so the opening keeps them) were read as consolidation.
    """
    band = np.zeros(lungs.shape, dtype=bool)
    # The hull and the distance are smooth at the scale of millimetres: work on ~2 mm pixels (fast).
    step = max(1, int(2.0 // min(pixel_mm)))
    coarse = lungs[:, ::step, ::step]
    x = np.arange(coarse.shape[2])
    y = np.arange(lungs.shape[1])[:, None]
    sampling = (pixel_mm[0] * step, pixel_mm[1] * step)
    for z in range(lungs.shape[0]):
        plane = coarse[z]
        if not (plane == 1).any() or not (plane == 2).any():
            continue
        centres = sorted((np.nonzero(plane == 1)[1].mean(), np.nonzero(plane == 2)[1].mean()))
        between = _filled_hull(plane > 0) & (plane == 0) & ((x > centres[0]) & (x < centres[1]))[None, :]
        if not between.any():
            continue
        near = ndimage.distance_transform_edt(~between, sampling=sampling) < width_mm
        near = np.repeat(np.repeat(near, step, axis=0), step, axis=1)[: lungs.shape[1], : lungs.shape[2]]
        for label in (1, 2):
            lung = lungs[z] == label
            rows = np.flatnonzero(lung.any(axis=1))
            if not len(rows):
                continue
            quarter = (rows[-1] - rows[0]) / 4
            middle = (y >= rows[0] + quarter) & (y <= rows[-1] - quarter)
            band[z] |= lung & near & middle
    return band


def _filled_hull(mask: np.ndarray) -> np.ndarray:
    """The convex hull of a 2-D mask, filled row by row between the hull's edges."""
    rows = np.flatnonzero(mask.any(axis=1))
    first = np.argmax(mask[rows], axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[rows, ::-1], axis=1)
    points = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(np.float64)
    try:  # each row's outermost pixels span the same hull as the whole mask
        corners = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # too few or collinear points: the mask is its own hull
        return mask.copy()
    y0, x0 = corners[:, 0], corners[:, 1]
    y1, x1 = np.roll(corners, -1, axis=0).T
    span = np.arange(rows[0], rows[-1] + 1, dtype=np.float64)[:, None]
    crossing = (span >= np.minimum(y0, y1)) & (span <= np.maximum(y0, y1)) & (y0 != y1)
    x_at = x0 + (span - y0) * (x1 - x0) / np.where(y0 != y1, y1 - y0, 1.0)
    low = np.where(crossing, x_at, np.inf).min(axis=1)
    high = np.where(crossing, x_at, -np.inf).max(axis=1)
    x = np.arange(mask.shape[1])
    filled = np.zeros(mask.shape, dtype=bool)
    filled[rows[0] : rows[-1] + 1] = (x >= np.ceil(low - 1e-6)[:, None]) & (x <= np.floor(high + 1e-6)[:, None])
    return filled | mask


def _drop_small(mask: np.ndarray, min_voxels: float) -> np.ndarray:
    labelled, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return mask
    keep = np.bincount(labelled.ravel()) >= min_voxels
    keep[0] = False
    return keep[labelled]
