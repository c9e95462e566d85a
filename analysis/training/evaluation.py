"""Measurements behind `manage.py evaluate-slices` and `manage.py evaluate-series` (no database needed).

evaluate_slices: the infection network on 2-D lung-cropped slices with masks (MedSeg layout), Dice per
image for binary infection, GGO and consolidation, and their means; optionally writes the predicted
masks as PNG (0 bg, 1 GGO, 2 consolidation) under the images' names.

evaluate_series: a DICOM series through lungs -> infection (-> slice classifier), the per-slice
infected share of the lung as the score of infection presence, and its ROC AUC against a slice-label
CSV (P001_slice_labels.csv layout); also the POI of the whole scan and of the slices labelled normal.
The classical lungs + HU-band baseline of analysis.pipeline can be measured the same way for comparison.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from analysis.pipeline.infection import HUBandBaseline, add_touching_consolidation
from analysis.pipeline.slice_evidence import fuse_slice_readings, lesion_areas_cm2
from analysis.pipeline.volume import CTVolume, load_volume
from analysis.training.datasets import read_medseg2d, read_slice_labels
from analysis.training.trainer import auc, dice


def _dice_or_none(pred: np.ndarray, truth: np.ndarray) -> float | None:
    """Dice, or None when the class is absent from both (it says nothing about the method)."""
    if not pred.any() and not truth.any():
        return None
    return dice(pred, truth)


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def slice_dice(pred: np.ndarray, truth: np.ndarray) -> dict[str, float | None]:
    return {
        "infection": _dice_or_none(pred > 0, truth > 0),
        "ggo": _dice_or_none(pred == 1, truth == 1),
        "consolidation": _dice_or_none(pred == 2, truth == 2),
    }


def baseline_planes(hu_planes: list[np.ndarray], pixel_mm: float = 0.8) -> list[np.ndarray]:
    """HU-band baseline on lung-cropped 2-D planes, inside a rough 2-D lung mask (air not touching the border)."""
    from scipy import ndimage

    baseline = HUBandBaseline()
    out = []
    for plane in hu_planes:
        air = plane < -400
        labels, _ = ndimage.label(air)
        border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
        lungs = air & ~np.isin(labels, border[border > 0])
        # Dense lesions are holes in the aerated lung: close and fill row-wise so subpleural ones count too.
        lungs = ndimage.binary_closing(lungs, iterations=int(8 / pixel_mm)) | lungs
        lungs = ndimage.binary_fill_holes(lungs)
        volume = CTVolume(hu=np.clip(plane, -1024, 3000).astype(np.int16)[None], spacing=(1.0, pixel_mm, pixel_mm))
        out.append(baseline(volume, lungs[None].astype(np.uint8))[0])
    return out


def evaluate_slices(
    images_dir: Path,
    masks_dir: Path,
    *,
    model_dir: Path | None = None,
    method: str = "network",
    fold: tuple[int, int] | None = None,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Per-image and mean Dice of the infection network on a folder of 2-D slices.

    `method`: "network" (alone), "combined" (completed by the HU baseline's dense cores, as
    analysis.nets.segmenters.pipeline_stages runs it) or "baseline" (the HU band alone).
    """
    planes = read_medseg2d(images_dir, masks_dir, fold=fold, part="test")
    started = time.perf_counter()
    if method in ("network", "combined"):
        from analysis.nets.segmenters import InfectionNetSegmenter

        segmenter = InfectionNetSegmenter.from_weights(model_dir)
        predictions = segmenter.segment_planes(planes.images)
        model = {"name": segmenter.info.name, "version": segmenter.info.version, "sha256": segmenter.info.sha256}
        if method == "combined":
            # As the pipeline's combination runs it: the baseline's dense pieces touching a network lesion join it.
            predictions = [
                add_touching_consolidation(pred[None], dense[None])[0]
                for pred, dense in zip(predictions, baseline_planes(planes.images), strict=True)
            ]
            model["name"] += f"+{HUBandBaseline.info.name}"
    elif method == "baseline":
        predictions = baseline_planes(planes.images)
        model = {"name": HUBandBaseline.info.name, "version": HUBandBaseline.info.version, "sha256": ""}
    else:
        raise ValueError(f"unknown method {method!r}: network, combined or baseline")
    seconds = time.perf_counter() - started
    per_image = []
    for name, pred, truth in zip(planes.ids, predictions, planes.masks, strict=True):
        per_image.append({"image": name, **slice_dice(pred, truth)})
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, pred in zip(planes.ids, predictions, strict=True):
            Image.fromarray(pred.astype(np.uint8)).save(out_dir / f"{name}.png")
    pooled_pred = np.concatenate([p.ravel() for p in predictions])
    pooled_truth = np.concatenate([t.ravel() for t in planes.masks])
    return {
        "model": model,
        "fold": None if fold is None else f"{fold[0]}/{fold[1]}",
        "images": len(per_image),
        "seconds": round(seconds, 2),
        "mean_dice": {key: _mean([r[key] for r in per_image]) for key in ("infection", "ggo", "consolidation")},
        "pooled_dice": slice_dice(pooled_pred, pooled_truth),
        "per_image": per_image,
    }


@dataclass
class SeriesAnalysis:
    volume: CTVolume
    lungs: np.ndarray
    infection: np.ndarray
    classifier: np.ndarray | None
    models: list[dict[str, str]]
    seconds: dict[str, float]


def analyse_series(volume: CTVolume, *, model_dir: Path | None, method: str) -> SeriesAnalysis:
    """Lungs and infection (and the classifier when its weights exist) of one volume by `method`."""
    from analysis.pipeline.lungs import ClassicalLungSegmenter

    seconds = {}
    classifier = None
    if method == "network":
        from analysis.nets.segmenters import pipeline_stages

        # As the worker runs them once they are the default (lung network guiding the classical mask,
        # infection network with the baseline's dense cores).
        stages = pipeline_stages(model_dir, defaults_only=False)
        lung_segmenter = stages.get("lungs") or ClassicalLungSegmenter()
        infection_segmenter = stages.get("infection")
        if infection_segmenter is None:
            raise ValueError("no infection network weights found: train one or give --model-dir")
        classifier = stages.get("classifier")
    elif method == "baseline":
        lung_segmenter, infection_segmenter = ClassicalLungSegmenter(), HUBandBaseline()
    else:
        raise ValueError(f"unknown method {method!r}: network or baseline")
    started = time.perf_counter()
    lungs = lung_segmenter(volume)
    seconds["lungs"] = time.perf_counter() - started
    started = time.perf_counter()
    infection = np.where(lungs > 0, infection_segmenter(volume, lungs), 0).astype(np.uint8)
    seconds["infection"] = time.perf_counter() - started
    probs = None
    if classifier is not None:
        started = time.perf_counter()
        probs = classifier(volume, lungs)
        seconds["classifier"] = time.perf_counter() - started
    models = [
        {"stage": m.stage, "name": m.name, "version": m.version, "sha256": m.sha256, "kind": m.kind}
        for m in (lung_segmenter.info, infection_segmenter.info, *([classifier.info] if classifier else []))
    ]
    return SeriesAnalysis(volume, lungs, infection, probs, models, {k: round(v, 2) for k, v in seconds.items()})


def evaluate_series(
    dicom_dir: Path, labels_csv: Path | None, *, model_dir: Path | None = None, method: str = "network"
) -> dict[str, Any]:
    """Slice-level AUC of infection presence (and POI) of one DICOM series against its slice-label CSV."""
    volume = load_volume(Path(dicom_dir))
    analysis = analyse_series(volume, model_dir=model_dir, method=method)
    lungs, infection = analysis.lungs > 0, analysis.infection > 0
    n = volume.shape[0]
    lung_area = lungs.reshape(n, -1).sum(1)
    infected_area = infection.reshape(n, -1).sum(1)
    share = np.where(lung_area > 0, infected_area / np.maximum(lung_area, 1), 0.0)
    result: dict[str, Any] = {
        "series": Path(dicom_dir).name,
        "method": method,
        "models": analysis.models,
        "seconds": analysis.seconds,
        "slices": n,
        "poi": float(infection.sum() / max(lungs.sum(), 1)),
        "lung_volume_ml": float(lungs.sum() * volume.voxel_volume_ml),
    }
    if labels_csv is not None:
        labels = read_slice_labels(Path(labels_csv), volume)
        known = labels >= 0
        normal = labels == 0
        result.update(
            {
                "labelled_slices": int(known.sum()),
                "infected_slices": int((labels == 1).sum()),
                "auc_infected_share": auc(share[known], labels[known]),
                "poi_in_normal_slices": float(infection[normal].sum() / max(lungs[normal].sum(), 1)),
                "poi_in_infected_slices": float(infection[labels == 1].sum() / max(lungs[labels == 1].sum(), 1)),
            }
        )
        if analysis.classifier is not None:
            result["auc_classifier"] = auc(analysis.classifier[known], labels[known])
            # What the pipeline reports per slice: the classifier fused with the slice's lesion area.
            fused = fuse_slice_readings(analysis.classifier, lesion_areas_cm2(infection, volume.pixel_area_mm2))
            result["auc_slice_reading"] = auc(fused[known], labels[known])
    return result


# Phantom seeds for evaluation: far from the training seeds (phantom:N trains on 7000..).
EVAL_PHANTOM_SEED = 9100


def evaluate_phantoms(count: int, *, model_dir: Path | None = None, method: str = "network") -> dict[str, Any]:
    """Lungs and infection against the exact truth of `count` held-out phantoms (moderate and severe).

    Reports lung Dice, the share of consolidated voxels that the lung mask includes (a threshold
    misses them), infection Dice and the POI error in percentage points.
    """
    from analysis.phantoms import Severity, make_phantom, random_spec

    rows = []
    for i in range(count):
        severity = Severity.SEVERE if i % 2 == 0 else Severity.MODERATE
        phantom = make_phantom(
            random_spec(EVAL_PHANTOM_SEED + i, severity), slice_thickness_mm=5.0, pixel_spacing_mm=0.8, matrix=448
        )
        analysis = analyse_series(phantom.volume, model_dir=model_dir, method=method)
        lungs, truth_lungs = analysis.lungs, phantom.lungs
        consolidated = phantom.infection == 2
        poi = float((analysis.infection > 0).sum() / max((lungs > 0).sum(), 1))
        rows.append(
            {
                "phantom": f"{severity} seed {EVAL_PHANTOM_SEED + i}",
                "lung_dice": dice(lungs > 0, truth_lungs > 0),
                "lung_side_dice": (dice(lungs == 1, truth_lungs == 1) + dice(lungs == 2, truth_lungs == 2)) / 2,
                "consolidation_in_lung_mask": float((lungs[consolidated] > 0).mean()) if consolidated.any() else None,
                "infection_dice": dice(analysis.infection > 0, phantom.infection > 0),
                "poi": poi,
                "poi_truth": phantom.truth.poi,
                "seconds": analysis.seconds,
            }
        )
    keys = ("lung_dice", "lung_side_dice", "consolidation_in_lung_mask", "infection_dice")
    return {
        "method": method,
        "models": analysis.models if count else [],
        "phantoms": rows,
        "mean": {key: _mean([r[key] for r in rows]) for key in keys}
        | {"poi_abs_error_pp": float(np.mean([abs(r["poi"] - r["poi_truth"]) * 100 for r in rows]))},
    }
