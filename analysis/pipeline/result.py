"""The pipeline's output: plain dataclasses, JSON-ready through `to_dict`.

This is the contract between the pure pipeline and everything that stores or shows its results
(Celery task, `manage.py analyse --json`, API). Volumes are in mL, areas in mm^2, lengths in mm,
POI as a fraction in [0, 1], HU as float.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Regions, in display order: the whole lungs, each lung, then the six zones
# (equal thirds of each lung's craniocaudal extent).
REGIONS: tuple[str, ...] = (
    "both",
    "right",
    "left",
    "right_upper",
    "right_middle",
    "right_lower",
    "left_upper",
    "left_middle",
    "left_lower",
)
ZONES: tuple[str, ...] = REGIONS[3:]
# What the sub-lung regions are, recorded with every result: zones, not lobes. Lobes need a lobe
# segmentation model, which the pipeline does not have yet; a lobe model would add its own regions.
REGION_SCHEME = {
    "kind": "zones",
    "lobes": False,
    "definition": "upper, middle and lower third of each lung's craniocaudal extent; no lobe model",
}

LUNG_LABELS = {1: "right", 2: "left"}
INFECTION_LABELS = {1: "ggo", 2: "consolidation"}


@dataclass(frozen=True)
class ModelInfo:
    """What produced one stage's output: a trained network or a named classical method."""

    stage: str  # "lungs", "infection", "classifier"
    name: str
    version: str
    sha256: str = ""  # empty for classical methods
    kind: str = "network"  # "network" | "classical" | "baseline"


def info_of(component: object, stage: str) -> ModelInfo:
    """The ModelInfo a segmenter carries, or one named after its class when it has none."""
    return getattr(component, "info", None) or ModelInfo(stage=stage, name=type(component).__name__, version="")


def combined_info(stage: str, name: str, network: ModelInfo) -> ModelInfo:
    """A network combined with a classical rule, recorded as `name` with the network's version and sha256."""
    return ModelInfo(stage=stage, name=name, version=network.version, sha256=network.sha256, kind="network")


@dataclass(frozen=True)
class RegionResult:
    region: str
    lung_volume_ml: float
    infection_volume_ml: float
    ggo_volume_ml: float
    consolidation_volume_ml: float
    poi: float  # infection volume / lung volume, 0..1
    ihu: float | None  # mean HU inside the infection; None when there is none
    severity_score: int | None  # 0-5 CT severity score (zones, and lungs/both as the sum)


@dataclass(frozen=True)
class OpacityResult:
    index: int
    volume_ml: float
    longest_diameter_mm: float  # 3-D
    longest_axial_diameter_mm: float  # in plane, on the slice where it is longest
    centroid_voxel: tuple[float, float, float]  # (z, y, x) index
    centroid_mm: tuple[float, float, float]  # (x, y, z) LPS mm
    mean_hu: float
    kind: str  # "ggo" | "consolidation" | "mixed"
    slice_first: int
    slice_last: int
    zone: str  # one of ZONES


@dataclass(frozen=True)
class SliceResult:
    index: int
    sop_instance_uid: str | None
    z_mm: float
    lung_area_mm2: float
    infection_area_mm2: float
    ggo_area_mm2: float
    consolidation_area_mm2: float
    # P(abnormal slice), as CoronaResult.slice_reading says; None without a slice classifier
    abnormal_probability: float | None = None


@dataclass(frozen=True)
class CoronaResult:
    """The slice classifier's read-outs (heat-map system): see analysis.pipeline.corona."""

    slice_threshold: float  # P(abnormal) above which a slice is positive
    positive_slices: int
    slices_with_lung: int
    positive_ratio: float  # positive slices / slices with lung
    corona_score_ml: float  # sum of the Grad-CAM heat map x voxel volume
    heat_slab_mm: float  # thickness of the slabs the heat maps were computed on (analysis.pipeline.heatmaps)
    # What P(abnormal) per slice is: "classifier" alone or "classifier+lesion-area" (analysis.pipeline.slice_evidence)
    slice_reading: str = "classifier"


@dataclass
class PipelineResult:
    """Everything one analysis computes. Label maps share the input volume's (z, y, x) grid."""

    pipeline_version: str
    models: list[ModelInfo]
    timings: dict[str, float]  # seconds per stage
    regions: list[RegionResult]  # one per REGIONS entry, in that order
    opacities: list[OpacityResult]
    slices: list[SliceResult]
    spacing: tuple[float, float, float]
    lungs: np.ndarray = field(repr=False)  # uint8: 0 background, 1 right lung, 2 left lung
    infection: np.ndarray = field(repr=False)  # uint8: 0 none, 1 GGO, 2 consolidation
    warnings: list[str] = field(default_factory=list)
    corona: CoronaResult | None = None  # None when no slice classifier ran
    heat_map: np.ndarray | None = field(default=None, repr=False)  # float32 0..1, 0 outside positive slices

    def region(self, name: str) -> RegionResult:
        for region in self.regions:
            if region.region == name:
                return region
        raise KeyError(name)

    @property
    def ct_severity_score(self) -> int:
        """Total CT severity score: sum of the six zones' 0-5 scores (0-30)."""
        return sum(r.severity_score or 0 for r in self.regions if r.region in ZONES)

    def to_dict(self) -> dict:
        """JSON-ready summary (no label maps)."""
        return {
            "pipeline_version": self.pipeline_version,
            "models": [asdict(m) for m in self.models],
            "timings": self.timings,
            "spacing_mm": list(self.spacing),
            "ct_severity_score": self.ct_severity_score,
            "region_scheme": REGION_SCHEME,
            "regions": [asdict(r) for r in self.regions],
            "opacities": [asdict(o) for o in self.opacities],
            "slices": [asdict(s) for s in self.slices],
            "corona": asdict(self.corona) if self.corona else None,
            # DICOM input: the per-slice areas again, keyed by SOPInstanceUID (what viewers and reports name).
            "slices_by_sop_instance_uid": {
                s.sop_instance_uid: {
                    "lung_area_mm2": s.lung_area_mm2,
                    "infection_area_mm2": s.infection_area_mm2,
                    "ggo_area_mm2": s.ggo_area_mm2,
                    "consolidation_area_mm2": s.consolidation_area_mm2,
                    "abnormal_probability": s.abnormal_probability,
                }
                for s in self.slices
                if s.sop_instance_uid
            },
            "warnings": list(self.warnings),
        }
