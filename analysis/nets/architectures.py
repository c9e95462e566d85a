"""The three networks, built from MONAI classes by a plain dict (stored in each weight file's metadata).

All are 2-D and small on purpose: a 64-slice study must go through lungs and infection in a few
seconds on two CPU cores. Lungs: U-Net on the whole slice at 160x160 -> background/right/left.
Infection: U-Net on the lung-cropped slice at 224x224 -> background/GGO/consolidation.
Classifier: ResNet (one basic block per stage) on the lung-cropped slice at 128x128 -> logit of
P(abnormal slice); its last stage is the Grad-CAM target.
"""

from __future__ import annotations

from typing import Any

from monai.networks.nets import UNet
from monai.networks.nets.resnet import ResNet
from torch import nn

LUNG_MODEL = "lungs-unet2d"
INFECTION_MODEL = "infection-unet2d"
CLASSIFIER_MODEL = "slice-resnet2d"
# The versions this code's pre-processing is written for: weights of another version are refused.
EXPECTED_VERSIONS = {LUNG_MODEL: "1.0", INFECTION_MODEL: "1.0", CLASSIFIER_MODEL: "1.0"}

LUNG_CLASSES = ["background", "right", "left"]
INFECTION_CLASSES = ["background", "ggo", "consolidation"]
CLASSIFIER_CLASSES = ["normal", "abnormal"]

# HU window mapped to [0, 1]: the MedSeg 8-bit slices saturate near +250 HU (estimated), so does this.
HU_WINDOW = (-1000.0, 250.0)


def _unet3(width: int) -> dict[str, Any]:
    """Four-level 2-D U-Net with three output classes (both segmentation networks)."""
    return {
        "kind": "unet",
        "in_channels": 1,
        "out_channels": 3,
        "channels": [width, 2 * width, 4 * width, 8 * width],
        "strides": [2, 2, 2],
        "num_res_units": 1,
    }


def lung_architecture(width: int = 8) -> dict[str, Any]:
    return _unet3(width)


def infection_architecture(width: int = 16) -> dict[str, Any]:
    return _unet3(width)


def classifier_architecture(width: int = 16) -> dict[str, Any]:
    return {
        "kind": "resnet",
        "in_channels": 1,
        "layers": [1, 1, 1, 1],
        "block_inplanes": [width, 2 * width, 4 * width, 8 * width],
    }


def build_network(architecture: dict[str, Any]) -> nn.Module:
    """A freshly initialised network of the given architecture (see the *_architecture helpers)."""
    arch = dict(architecture)
    kind = arch.pop("kind")
    if kind == "unet":
        return UNet(
            spatial_dims=2,
            in_channels=arch["in_channels"],
            out_channels=arch["out_channels"],
            channels=tuple(arch["channels"]),
            strides=tuple(arch["strides"]),
            num_res_units=arch.get("num_res_units", 1),
        )
    if kind == "resnet":
        return ResNet(
            block="basic",
            layers=list(arch["layers"]),
            block_inplanes=list(arch["block_inplanes"]),
            spatial_dims=2,
            n_input_channels=arch["in_channels"],
            conv1_t_size=7,
            conv1_t_stride=2,
            num_classes=1,
        )
    raise ValueError(f"unknown network kind {kind!r}")
