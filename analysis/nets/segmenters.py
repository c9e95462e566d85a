"""Segmenter objects that plug into `analysis.pipeline.run.run_pipeline` (lung_segmenter / infection_segmenter).

Each holds a network (a trained one from the registry, or any module of the same shape: tests pass a
tiny random one) and its metadata, and works on a whole CTVolume:

    lungs = LungNetSegmenter.from_weights(model_dir)(volume)              # uint8 (z, y, x): 0/1 right/2 left
    infection = InfectionNetSegmenter.from_weights(model_dir)(volume, lungs)  # uint8: 0/1 GGO/2 consolidation
    p_abnormal = SliceClassifier.from_weights(model_dir)(volume, lungs)   # float32 (z,)

`info` (alias `model_info`) is the ModelInfo the pipeline records on the AnalysisRun. Inference runs under
torch.inference_mode, channels_last, in batches of slices; infection and classifier only look at
slices that hold lung.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch import nn

from analysis.nets.architectures import (
    CLASSIFIER_MODEL,
    EXPECTED_VERSIONS,
    INFECTION_MODEL,
    LUNG_MODEL,
    build_network,
)
from analysis.nets.preprocess import AIR_HU, Box, crop, lung_box, resize, uncrop, window
from analysis.nets.registry import WeightMetadata, load_weights
from analysis.pipeline.result import ModelInfo
from analysis.pipeline.volume import CTVolume


def _prepare_network(net: nn.Module) -> nn.Module:
    net.eval()
    for param in net.parameters():
        param.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)


def _load(name: str, directory: Path | None) -> tuple[nn.Module, WeightMetadata, ModelInfo]:
    loaded = load_weights(name, directory, version=EXPECTED_VERSIONS[name])
    net = build_network(loaded.metadata.architecture)
    net.load_state_dict(loaded.state_dict)
    return net, loaded.metadata, loaded.model_info


class _NetStage:
    """Common parts: the network, its input size and window, and what to record about it."""

    stage = ""

    def __init__(
        self, net: nn.Module, metadata: WeightMetadata, *, model_info: ModelInfo | None = None, batch_size: int = 16
    ) -> None:
        self.net = _prepare_network(net)
        self.metadata = metadata
        self.size = int(metadata.input["size"])
        self.hu_window = tuple(metadata.input["window"])
        self.batch_size = batch_size
        # `info` is what analysis.pipeline (segment_lungs / segment_infection) records on the result.
        self.info = model_info or ModelInfo(
            stage=self.stage, name=metadata.name, version=metadata.version, sha256=metadata.sha256, kind="network"
        )
        self.warnings: list[str] = []

    @property
    def model_info(self) -> ModelInfo:
        return self.info

    @classmethod
    def from_weights(cls, directory: Path | None = None, name: str | None = None, **kwargs):
        """Load verified weights (sha256 and version checked) from `directory` (shipped weights by default)."""
        net, metadata, info = _load(name or cls.default_name, directory)
        return cls(net, metadata, model_info=info, **kwargs)

    def _inputs(self, hu: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(window(hu, self.hu_window))[:, None]
        return resize(x, self.size).contiguous(memory_format=torch.channels_last)

    def _logits(self, hu: np.ndarray) -> torch.Tensor:
        """Network output for (n, h, w) HU slices at the network's size."""
        return self.net(self._inputs(hu))


class LungNetSegmenter(_NetStage):
    """Whole-slice U-Net -> 0 background, 1 right lung, 2 left lung, on the volume's grid."""

    stage = "lungs"
    default_name = LUNG_MODEL

    # Connected pieces of lung smaller than this share of the largest are noise (bowel gas, a stray pixel).
    min_component_share = 0.05

    @torch.inference_mode()
    def __call__(self, volume: CTVolume) -> np.ndarray:
        hu = volume.hu
        n, h, w = hu.shape
        low = torch.empty((n, 3, self.size, self.size)).contiguous(memory_format=torch.channels_last)
        for start in range(0, n, self.batch_size):
            low[start : start + self.batch_size] = self._logits(hu[start : start + self.batch_size])
        keep = self._keep_mask(low.argmax(1).numpy())
        labels = np.zeros((n, h, w), dtype=np.uint8)
        if not keep.any():
            return labels
        # Upsample the logits only over the lungs' box (a third of the image): it is the costly step.
        ys, xs = np.flatnonzero(keep.any(axis=(0, 2))), np.flatnonzero(keep.any(axis=(0, 1)))
        ly0, ly1 = max(ys[0] - 1, 0), min(ys[-1] + 2, self.size)
        lx0, lx1 = max(xs[0] - 1, 0), min(xs[-1] + 2, self.size)
        fy0, fy1 = round(ly0 * h / self.size), round(ly1 * h / self.size)
        fx0, fx1 = round(lx0 * w / self.size), round(lx1 * w / self.size)
        keep_full = (
            resize(
                torch.from_numpy(keep[:, None, ly0:ly1, lx0:lx1].astype(np.float32)),
                (fy1 - fy0, fx1 - fx0),
                labels=True,
            )[:, 0].numpy()
            > 0
        )
        for start in range(0, n, self.batch_size):
            part = slice(start, start + self.batch_size)
            full = resize(low[part, :, ly0:ly1, lx0:lx1], (fy1 - fy0, fx1 - fx0))
            labels[part, fy0:fy1, fx0:fx1] = np.where(keep_full[part], full.argmax(1).numpy(), 0)
        return labels

    def _keep_mask(self, low_labels: np.ndarray) -> np.ndarray:
        """Low-resolution mask of the lung components worth keeping (3-D), one pixel wider for the upsampling."""
        foreground = low_labels > 0
        components, count = ndimage.label(foreground)
        if count == 0:
            return foreground
        sizes = np.bincount(components.ravel())[1:]
        kept = np.flatnonzero(sizes >= self.min_component_share * sizes.max()) + 1
        keep = np.isin(components, kept)
        return ndimage.binary_dilation(keep, iterations=1)


class _LungCropStage(_NetStage):
    """A network that sees the square box around the study's lungs, one slice at a time."""

    def _slices_with_lung(self, lungs: np.ndarray) -> np.ndarray:
        return np.flatnonzero(lungs.reshape(lungs.shape[0], -1).any(axis=1))

    def crop_inputs(self, volume: CTVolume, lungs: np.ndarray) -> tuple[np.ndarray, Box | None, torch.Tensor]:
        """(z indices, box, network input (n, 1, size, size)) of the slices holding lung."""
        if lungs.shape != volume.shape:
            raise ValueError(f"lung mask {lungs.shape} does not match the volume {volume.shape}")
        zs = self._slices_with_lung(lungs)
        box = lung_box(lungs)
        if box is None:
            return zs, None, torch.empty((0, 1, self.size, self.size))
        return zs, box, self._inputs(crop(volume.hu[zs], box, AIR_HU))


class InfectionNetSegmenter(_LungCropStage):
    """Lung-cropped U-Net -> 0 none, 1 GGO, 2 consolidation; only inside the lung mask."""

    stage = "infection"
    default_name = INFECTION_MODEL

    def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
        return self.segment_slices(volume, lungs, self._slices_with_lung(lungs))

    @torch.inference_mode()
    def segment_slices(self, volume: CTVolume, lungs: np.ndarray, zs: np.ndarray) -> np.ndarray:
        """Labels of the slices `zs` only (the others stay 0), cropped to the whole study's lung box as
        `__call__` crops them, so a slice reads the same either way."""
        labels = np.zeros(volume.shape, dtype=np.uint8)
        if lungs.shape != volume.shape:
            raise ValueError(f"lung mask {lungs.shape} does not match the volume {volume.shape}")
        box = lung_box(lungs)
        if box is None:
            return labels
        h, w = volume.shape[1:]
        for start in range(0, len(zs), self.batch_size):
            batch = zs[start : start + self.batch_size]
            logits = self._logits(crop(volume.hu[batch], box, AIR_HU)).contiguous(memory_format=torch.channels_last)
            crop_labels = infection_labels(resize(logits, box.side)).numpy()
            labels[batch] = uncrop(crop_labels, box, (h, w))
        labels[lungs == 0] = 0
        return labels

    @torch.inference_mode()
    def segment_planes(self, hu_planes: list[np.ndarray]) -> list[np.ndarray]:
        """Label 2-D HU planes that are already cropped to the lungs (any size): each is padded to a square."""
        out = []
        for plane in hu_planes:
            h, w = plane.shape
            side = max(h, w)
            box = Box(-(side - h) // 2, -(side - w) // 2, side)
            square = crop(plane[None], box, AIR_HU)
            logits = self._logits(square)
            labels = infection_labels(resize(logits, side)).numpy()
            out.append(uncrop(labels, box, (h, w))[0])
        return out


def infection_labels(logits: torch.Tensor) -> torch.Tensor:
    """0 none, 1 GGO, 2 consolidation from the infection network's logits (n, 3, h, w): shape (n, h, w).

    A pixel is infected where P(GGO) + P(consolidation) > P(none), then of the likelier kind. A plain
    argmax over the three classes calls background a pixel whose probability is split between the two
    kinds (faint haze the network half calls consolidation), although it is more likely infected than
    not. Each of the five MedSeg folds gains 0.001-0.009 binary Dice by it (model card).
    """
    # P(none) < 0.5 is e^l0 < e^l1 + e^l2: compared on the logits, no softmax over the full-size maps.
    infected = torch.logaddexp(logits[:, 1], logits[:, 2]) > logits[:, 0]
    kind = 1 + (logits[:, 2] > logits[:, 1]).to(torch.uint8)
    return torch.where(infected, kind, torch.zeros_like(kind))


def mirrored_logits(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """The classifier's logit for each view of `batch` and for its left-right mirror image: shape (2, n).

    The one definition of how slices are read, shared by the pipeline and the training's calibration.
    """
    return net(torch.cat([batch, batch.flip(-1)]))[:, 0].reshape(2, len(batch))


class SliceClassifier(_LungCropStage):
    """Lung-cropped ResNet -> P(abnormal) per slice (0 for slices without lung). `net.layer4` is the Grad-CAM layer."""

    stage = "classifier"
    default_name = CLASSIFIER_MODEL
    gradcam_layer = "layer4"

    @torch.inference_mode()
    def __call__(self, volume: CTVolume, lungs: np.ndarray) -> np.ndarray:
        """P(abnormal) per slice: the mean of the network's reading of each slice and of its mirror image.

        Half of the training views were mirrored left-right, so both readings are in distribution, and
        their mean is steadier than either: P001 slice AUC 0.891 (one reading 0.878), cap001 0.946
        (0.925); normal slices read positive fall from 24 % / 11 % to 19 % / 9 % (model card). Each
        reading's logit is first shifted by the weights' calibrated `logit_offset`.
        """
        probs = np.zeros(volume.shape[0], dtype=np.float32)
        zs, _, inputs = self.crop_inputs(volume, lungs)
        offset = float(self.metadata.logit_offset)
        for start in range(0, len(inputs), self.batch_size * 2):
            batch = inputs[start : start + self.batch_size * 2]
            readings = torch.sigmoid(mirrored_logits(self.net, batch) - offset)
            probs[zs[start : start + len(batch)]] = readings.mean(0).numpy()
        return probs

    def heat_maps(
        self,
        volume: CTVolume,
        lungs: np.ndarray,
        slices: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Grad-CAM heat maps in [0, 1] (float32, the volume's shape) of `slices` (default: every slice
        with lung), from MONAI's GradCAM on `gradcam_layer`, mapped back to the full slice, 0 outside the lungs.

        `weights` (one per z index, in [0, 1]; the pipeline passes P(abnormal)) scale each slice's map:
        MONAI scales every map to [0, 1] on its own, so without them a barely positive slice would weigh
        as much as a clearly abnormal one and the corona score would jump with the slice threshold.
        """
        from monai.visualize import GradCAM

        heat = np.zeros(volume.shape, dtype=np.float32)
        zs, box, inputs = self.crop_inputs(volume, lungs)
        if box is None or not len(zs):
            return heat
        if slices is not None:
            keep = np.isin(zs, slices)
            zs, inputs = zs[keep], inputs[keep]
        # One GradCAM per classifier: each one hooks into its layer, and a worker lives for many scans.
        cam = self.__dict__.get("_cam")
        if cam is None:
            cam = self._cam = GradCAM(nn_module=self.net, target_layers=self.gradcam_layer)
        h, w = volume.shape[1:]
        for start in range(0, len(zs), self.batch_size):
            batch = inputs[start : start + self.batch_size].clone().requires_grad_(True)
            with torch.enable_grad():
                maps = cam(x=batch, class_idx=0)  # (n, 1, size, size), each scaled to [0, 1] by MONAI
            maps = resize(torch.as_tensor(maps).float(), box.side).numpy()[:, 0]
            batch_z = zs[start : start + len(batch)]
            if weights is not None:
                maps *= np.clip(np.asarray(weights, dtype=np.float32)[batch_z], 0.0, 1.0)[:, None, None]
            heat[batch_z] = uncrop(maps, box, (h, w))
        heat[lungs == 0] = 0
        return np.clip(heat, 0.0, 1.0)


def load_segmenters(directory: Path | None = None, *, only_defaults: bool = False) -> dict[str, _NetStage]:
    """Every stage whose verified weights are in `directory`: {"lungs": ..., "infection": ..., "classifier": ...}.

    A missing stage is left out (the pipeline then uses its classical method); an altered or
    wrong-version file raises ModelFileError rather than falling back silently. `only_defaults`
    keeps the stages whose metadata says `pipeline_default` (they beat the classical method on the
    measured targets): what the worker should pass to run_pipeline.
    """
    from analysis.nets.registry import read_metadata, weight_paths

    found: dict[str, _NetStage] = {}
    for cls in (LungNetSegmenter, InfectionNetSegmenter, SliceClassifier):
        pt_path, json_path = weight_paths(cls.default_name, directory)
        if not (pt_path.exists() or json_path.exists()):
            continue
        if only_defaults and not read_metadata(cls.default_name, directory).pipeline_default:
            continue
        found[cls.stage] = cls.from_weights(directory)
    return found


def pipeline_stages(directory: Path | None = None, *, defaults_only: bool = True) -> dict[str, object]:
    """The stages run_pipeline gets: {"lungs", "infection", "classifier"}, each present when its weights are.

    The lung network guides the classical lung mask (it vetoes abdominal gas the air mask took in and
    decides about dense lung next to it) and the infection network is completed by the HU baseline's
    dense cores: alone, each network measured worse than these combinations (model card). With
    `defaults_only`, the infection network only vetoes the HU baseline's dense pieces in which it sees no
    lesion (vessels) unless its metadata says `pipeline_default`, and
    the lung network only vetoes gas unless its metadata says so (the shipped lung network's does: it
    also recovers dense lung); the classifier replaces nothing (it adds heat maps and the corona score),
    so it is always in.
    """
    from analysis.pipeline.infection import BaselineWithNetworkVeto, NetworkWithDenseCores
    from analysis.pipeline.lungs import NetworkGuidedLungSegmenter

    nets = load_segmenters(directory)
    stages: dict[str, object] = {}
    lungs, infection = nets.get("lungs"), nets.get("infection")
    if lungs is not None:
        recover = not defaults_only or lungs.metadata.pipeline_default
        stages["lungs"] = NetworkGuidedLungSegmenter(lungs, recover_dense=recover)
    if infection is not None:
        if not defaults_only or infection.metadata.pipeline_default:
            stages["infection"] = NetworkWithDenseCores(infection)
        else:  # the HU baseline stays the reader; the network vetoes its dense pieces without a lesion
            stages["infection"] = BaselineWithNetworkVeto(infection)
    if "classifier" in nets:
        stages["classifier"] = nets["classifier"]
    return stages
