"""Training loop for the three networks: seeded, validated every epoch, checkpointed, resumable.

`train_network` draws batches from a SliceSet (drawing synthetic lesions on the fly into host
slices), augments them (small rotations and scaling; for the cropped views also 90-degree turns,
flips and HU/contrast jitter, which covers the unknown window of 8-bit MedSeg slices), trains with
cross-entropy + soft Dice (segmentation) or binary cross-entropy (classifier), scores the fixed
validation set after every epoch and keeps:

    OUT/checkpoint.pt   network + optimiser + epoch + history (what --resume continues from)
    OUT/<name>.pt/.json the best epoch's weights with metadata and sha256 (analysis.nets.registry)

Every random choice comes from generators seeded by (seed, epoch, step): the same command gives
the same weights, and a resumed run continues exactly where a full run would have gone.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from analysis.nets.architectures import (
    CLASSIFIER_CLASSES,
    CLASSIFIER_MODEL,
    EXPECTED_VERSIONS,
    HU_WINDOW,
    INFECTION_CLASSES,
    INFECTION_MODEL,
    LUNG_CLASSES,
    LUNG_MODEL,
    build_network,
    classifier_architecture,
    infection_architecture,
    lung_architecture,
)
from analysis.nets.preprocess import resize
from analysis.nets.registry import WeightMetadata, load_weights, save_weights
from analysis.nets.segmenters import infection_labels, mirrored_logits
from analysis.training.datasets import CROP_VIEW, LUNG_VIEW, MIN_ABNORMAL_PIXELS, SliceSet
from analysis.training.lesions import LesionStyle, insert_lesions

NET_SIZE = {"lungs": 160, "infection": 224, "classifier": 128}
MODEL_NAME = {"lungs": LUNG_MODEL, "infection": INFECTION_MODEL, "classifier": CLASSIFIER_MODEL}
CLASSES = {"lungs": LUNG_CLASSES, "infection": INFECTION_CLASSES, "classifier": CLASSIFIER_CLASSES}
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """Everything that decides the result of a run (stored in the checkpoint and the metadata)."""

    task: str
    epochs: int = 10
    batch_size: int = 16
    steps_per_epoch: int = 0  # 0: one pass over the training slices, at most 80 batches
    lr: float = 2e-3
    seed: int = 0
    width: int = 0  # 0: the architecture's default width
    p_synthetic: float = 0.7  # share of host slices that receive lesions
    # Thick-slab augmentation: average k neighbouring slices (k random, slab up to this many mm; 0: off)
    # so that 5-10 mm reconstructions look familiar to a network trained on thin slices.
    slab_mm: float = 0.0
    slab_p: float = 0.35  # share of samples averaged into slabs: most stay thin (see slab_members)
    real_share: float = 0.0  # share of each batch drawn from real slice-labelled scans (0: by count)
    size: int = 0  # network input size (0: the task's default)
    # Classifier: share of the validation normal slices that must read P(abnormal) <= 0.5 (calibrate_logit_offset).
    specificity: float = 0.9
    diffuse: float = 0.0  # share of lesioned host slices that also get a diffuse opacity (LesionStyle.p_diffuse)
    copy_paste: float = 0.0  # share of labelled 2-D planes that receive another plane's real lesions (paste_lesions)
    # Decay per step of an exponential moving average of the weights (0: off). On, each epoch is scored and
    # saved with the averaged weights: a few validation slices then choose among smoothed networks rather
    # than the step-to-step noise of a small fine-tune.
    ema: float = 0.0
    training_data: list[str] = field(default_factory=list)

    def architecture(self) -> dict[str, Any]:
        builders = {
            "lungs": lung_architecture,
            "infection": infection_architecture,
            "classifier": classifier_architecture,
        }
        return builders[self.task](self.width) if self.width else builders[self.task]()

    def input_size(self) -> int:
        return self.size or NET_SIZE[self.task]


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    metrics: dict[str, float]
    seconds: float


# Share of each batch drawn from real 2-D slices with masks (MedSeg): they are few but the only real lesions.
PLANES_SHARE = 0.4


def sampling_weights(data: SliceSet, real_share: float = 0.0) -> np.ndarray:
    """Probability of drawing each sample: 2-D planes get PLANES_SHARE together, real slice-labelled scans
    `real_share` together (when > 0), the rest share the remainder."""
    planes = np.array(["medseg2d:" in g for g in data.groups])
    # Real scans labelled per slice: neither lesion hosts nor volumes with masks (their labels are all real).
    real = np.array([g.startswith("dicom:") for g in data.groups]) & ~data.synthesize
    shares = {"planes": (planes, PLANES_SHARE), "real": (real & ~planes, real_share)}
    weights = np.ones(len(data))
    rest = np.ones(len(data), bool)
    taken = 0.0
    for mask, share in shares.values():
        if share > 0 and mask.any() and not mask.all():
            weights[mask] = share / mask.sum()
            rest &= ~mask
            taken += share
    if rest.any() and taken < 1:
        weights[rest] = (1 - taken) / rest.sum()
    return weights / weights.sum()


def slab_members(
    data: SliceSet, index: int, rng: np.random.Generator, slab_mm: float, slab_p: float = 0.35
) -> np.ndarray:
    """`index` and, for a share `slab_p` of the samples, up to k-1 neighbouring slices of the same scan
    (k random in 2..slab_mm / spacing).

    Only a share: averaging also smooths the noise, and 2-D planes (MedSeg, mostly abnormal) cannot be
    averaged, so slabbing everything teaches "noisy = abnormal" (measured: every normal slice positive).
    """
    spacing = float(data.slice_mm[index])
    if slab_mm <= 0 or np.isnan(spacing) or data.z[index] < 0 or rng.random() >= slab_p:
        return np.array([index])
    kmax = int(slab_mm / spacing + 1e-6)
    if kmax < 2:
        return np.array([index])
    k = int(rng.integers(2, kmax + 1))
    first = index - int(rng.integers(k))
    members = [
        i
        for i in range(first, first + k)
        if 0 <= i < len(data) and data.groups[i] == data.groups[index] and data.z[i] - data.z[index] == i - index
    ]
    return np.array(members)


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([abs(int(k)) for k in keys])


# --- batches -------------------------------------------------------------------------------------


def _sample(
    data: SliceSet,
    index: int,
    task: str,
    rng: np.random.Generator,
    p_synthetic: float,
    slab_mm: float = 0.0,
    slab_p: float = 0.35,
    style: LesionStyle | None = None,
    copy_paste: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, float]:
    """(HU image, labels, abnormal) of one sample, with synthetic lesions drawn when it is a host slice.

    With `slab_mm`, the image may be the mean of neighbouring slices (a thick slab); its infection
    labels are the majority of theirs, and the classifier's label is abnormal when any of them is."""
    image, labels, abnormal = data.images[index], data.labels[index], float(data.abnormal[index])
    members = slab_members(data, index, rng, slab_mm, slab_p)
    if len(members) > 1:
        image = data.images[members].mean(0)
        if task == "infection":
            # A slab voxel is infected where most of its slices are (the phantoms' truth rule), and
            # consolidation where that is the most common infected class: a union would teach the
            # network to paint every partial-volume edge of a thick slab.
            stack = data.labels[members]
            infected = (stack > 0).mean(0) >= 0.5
            dense = (stack == 2).sum(0) >= (stack == 1).sum(0)
            labels = np.where(infected, np.where(dense, 2, 1), 0).astype(labels.dtype)
        flags = data.abnormal[members]
        abnormal = 1.0 if (flags > 0.5).any() else abnormal
    if data.synthesize[index] and data.lungs[index].any() and rng.random() < p_synthetic:
        base = image
        image, lesion = insert_lesions(image, data.lungs[index], float(data.pixel_mm[index]), rng, style)
        if len(members) > 1 and task == "infection":
            image, lesion = lesions_through_slab(
                base, image, lesion, float(data.pixel_mm[index]), float(data.slice_mm[index]), len(members), rng
            )
        if task != "lungs":
            labels = lesion  # host slices are normal: the drawn lesions are all their infection
        if (lesion > 0).sum() >= MIN_ABNORMAL_PIXELS:
            abnormal = 1.0
    elif task == "infection" and copy_paste > 0 and data.z[index] < 0 and rng.random() < copy_paste:
        donors = np.flatnonzero((data.z < 0) & data.labels.reshape(len(data), -1).any(1))
        donors = donors[donors != index]
        if len(donors):
            donor = int(rng.choice(donors))
            image, labels = paste_lesions(image, labels, data.images[donor], data.labels[donor], rng)
            abnormal = 1.0 if (labels > 0).sum() >= MIN_ABNORMAL_PIXELS else abnormal
    return image, labels, abnormal


PASTE_LUNG_HU = -500.0  # a pasted lesion pixel lands only on aerated lung (or on the plane's own lesions)
OUTSIDE_AIR_HU = -950.0  # air outside the body (and the crop's padding) is darker than aerated lung


def paste_lesions(
    image: np.ndarray, labels: np.ndarray, donor_image: np.ndarray, donor_labels: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Copy-paste augmentation: the donor plane's lesion pixels, turned and flipped at random, into this plane.

    Only where this plane is aerated lung (air not reaching the picture's edge, which is outside the body)
    or already lesion, so that no lesion lands on the chest wall, mediastinum or padding; the pasted
    pixels take the donor's HU and labels."""
    k, flip = int(rng.integers(4)), rng.random() < 0.5
    d_img, d_lab = np.rot90(donor_image, k), np.rot90(donor_labels, k)
    if flip:
        d_img, d_lab = d_img[:, ::-1], d_lab[:, ::-1]
    pieces, _ = ndimage.label(image < OUTSIDE_AIR_HU)
    edge = np.unique(np.concatenate([pieces[0], pieces[-1], pieces[:, 0], pieces[:, -1]]))
    # grown by 2 pixels: the resized padding's edge has lung-like HU
    outside = ndimage.binary_dilation(np.isin(pieces, edge[edge > 0]), iterations=2)
    lung = (image < PASTE_LUNG_HU) & ~outside
    paste = (d_lab > 0) & (lung | (labels > 0))
    return np.where(paste, d_img, image).astype(image.dtype), np.where(paste, d_lab, labels).astype(labels.dtype)


def lesions_through_slab(
    base: np.ndarray,
    lesioned: np.ndarray,
    lesion: np.ndarray,
    pixel_mm: float,
    slice_mm: float,
    k: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn 2-D lesions drawn on a slab of `k` slices into the slab of 3-D lesions: (image, labels).

    Each lesion is taken as a ball whose widest section is the drawn one (radius: the drawn shape's
    inradius), centred somewhere in the slab; each slice of the slab holds that ball's section there,
    the slab image averages them (a partial-volume edge, as a thick reconstruction has) and a pixel
    is labelled where at least half of the slices hold the lesion (the phantoms' truth rule).
    """
    inside = lesion > 0
    depth = ndimage.distance_transform_edt(inside) * pixel_mm
    pieces, n = ndimage.label(inside)
    if n == 0:
        return lesioned, lesion
    inradius = np.concatenate([[0.0], ndimage.maximum(depth, pieces, index=np.arange(1, n + 1))])[pieces]
    centre = rng.uniform(0.0, k * slice_mm)
    covered = np.zeros(lesion.shape, np.float32)
    for dz in (np.arange(k) + 0.5) * slice_mm - centre:
        shrink = inradius - np.sqrt(np.maximum(inradius**2 - dz**2, 0.0))
        covered += inside & (inradius >= abs(dz)) & (depth > shrink)
    covered /= k
    image = base + (lesioned - base) * covered
    return image.astype(np.float32), np.where(covered >= 0.5, lesion, 0).astype(lesion.dtype)


def _augment(
    images: torch.Tensor, labels: torch.Tensor, task: str, rng: np.random.Generator, free: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random affine (all tasks), 90-degree turns and flips (cropped views), HU/contrast jitter (cropped views)."""
    n = images.shape[0]
    if task != "lungs":
        # The cropped views may come in any orientation (MedSeg slices are turned): turn and flip all of them.
        for i in range(n):
            k = int(rng.integers(4)) if free[i] or rng.random() < 0.5 else 0
            flip = rng.random() < 0.5
            img, lab = torch.rot90(images[i], k, (-2, -1)), torch.rot90(labels[i], k, (-2, -1))
            if flip:
                img, lab = img.flip(-1), lab.flip(-1)
            images[i], labels[i] = img, lab
    angle = torch.from_numpy(rng.uniform(-0.2, 0.2, n)).float()
    scale = torch.from_numpy(rng.uniform(0.85, 1.18, n)).float()
    shift = torch.from_numpy(rng.uniform(-0.06, 0.06, (n, 2))).float()
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    labels = F.grid_sample(labels.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    return images, labels


def _intensity_jitter(hu: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """HU scale/offset about -400 HU and a little noise: covers windows estimated from 8-bit pictures."""
    n = hu.shape[0]
    scale = torch.from_numpy(rng.uniform(0.88, 1.12, (n, 1, 1, 1))).float()
    offset = torch.from_numpy(rng.uniform(-50, 50, (n, 1, 1, 1))).float()
    noise = torch.from_numpy(rng.normal(0, 1, hu.shape) * rng.uniform(0, 15, (n, 1, 1, 1))).float()
    return (hu + 400.0) * scale - 400.0 + offset + noise


def _to_input(hu: torch.Tensor) -> torch.Tensor:
    lo, hi = HU_WINDOW
    return ((hu - lo) / (hi - lo)).clamp(0.0, 1.0)


def make_batch(
    data: SliceSet,
    indices: np.ndarray,
    task: str,
    rng: np.random.Generator,
    *,
    p_synthetic: float,
    augment: bool,
    slab_mm: float = 0.0,
    slab_p: float = 0.35,
    size: int = 0,
    style: LesionStyle | None = None,
    copy_paste: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(network input (n,1,S,S), labels (n,S,S) long, abnormal (n,) float) for the given samples."""
    images, labels, abnormal = [], [], []
    for index in indices:
        image, label, flag = _sample(data, int(index), task, rng, p_synthetic, slab_mm, slab_p, style, copy_paste)
        images.append(image)
        labels.append(label)
        abnormal.append(flag)
    hu = torch.from_numpy(np.stack(images).astype(np.float32))[:, None]
    lab = torch.from_numpy(np.stack(labels).astype(np.int64))[:, None]
    if augment:
        hu, lab = _augment(hu, lab, task, rng, data.free_orientation[indices])
        if task != "lungs":
            hu = _intensity_jitter(hu, rng)
    size = size or NET_SIZE[task]
    x = resize(_to_input(hu), size)
    lab = resize(lab.float(), size, labels=True).long()[:, 0]
    return x.contiguous(memory_format=torch.channels_last), lab, torch.tensor(abnormal, dtype=torch.float32)


def fixed_validation(
    data: SliceSet, task: str, seed: int, batch_size: int, size: int = 0
) -> list[tuple[torch.Tensor, ...]]:
    """The validation batches, drawn once (lesions included) so every epoch is scored on the same pixels."""
    batches = []
    for start in range(0, len(data), batch_size):
        indices = np.arange(start, min(start + batch_size, len(data)))
        rng = _rng(seed, 99991, start)
        batches.append(make_batch(data, indices, task, rng, p_synthetic=0.0, augment=False, size=size))
    if any(data.synthesize):  # host slices count twice: as they are and with lesions (the positives)
        synth = np.flatnonzero(data.synthesize)
        for start in range(0, len(synth), batch_size):
            indices = synth[start : start + batch_size]
            rng = _rng(seed, 77773, start)
            batches.append(make_batch(data, indices, task, rng, p_synthetic=1.0, augment=False, size=size))
    return batches


# --- loss and metrics ----------------------------------------------------------------------------


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy + soft Dice over the foreground classes (batch-level, so empty slices do not divide by 0)."""
    ce = F.cross_entropy(logits, labels)
    probs = logits.softmax(1)
    onehot = F.one_hot(labels, logits.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)[1:]
    denom = (probs + onehot).sum(dims)[1:]
    dice = (2 * inter + 1.0) / (denom + 1.0)
    return ce + (1 - dice).mean()


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean arrays (1.0 when both are empty)."""
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties half); nan when one class is missing."""
    pos, neg = scores[labels > 0.5], scores[labels <= 0.5]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    values = np.concatenate([pos, neg])[order]
    # Average ranks for ties.
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


@torch.inference_mode()
def evaluate(net: nn.Module, batches: list[tuple[torch.Tensor, ...]], task: str) -> dict[str, float]:
    net.eval()
    if task == "classifier":
        scores, labels = [], []
        for x, _, abnormal in batches:
            scores.append(torch.sigmoid(net(x)[:, 0]).cpu().numpy())
            labels.append(abnormal.cpu().numpy())
        s, y = np.concatenate(scores), np.concatenate(labels)
        known = y >= 0
        return {"auc": auc(s[known], y[known]), "accuracy": float(((s[known] > 0.5) == (y[known] > 0.5)).mean())}
    preds, truths = [], []
    for x, lab, _ in batches:
        logits = net(x)
        labels = infection_labels(logits) if task == "infection" else logits.argmax(1)
        preds.append(labels.cpu().numpy().astype(np.uint8))
        truths.append(lab.cpu().numpy().astype(np.uint8))
    p, t = np.concatenate(preds), np.concatenate(truths)
    if task == "lungs":
        right, left = dice(p == 1, t == 1), dice(p == 2, t == 2)
        return {"dice": (right + left) / 2, "dice_right": right, "dice_left": left}
    normal = ~t.reshape(len(t), -1).any(1)
    false_share = float((p[normal] > 0).mean()) if normal.any() else 0.0
    return {
        "dice": dice(p > 0, t > 0),
        "dice_ggo": dice(p == 1, t == 1),
        "dice_consolidation": dice(p == 2, t == 2),
        "normal_slice_infected_share": false_share,
    }


# Fewer validation normal slices than this: the quantile would be noise, the offset stays 0.
MIN_CALIBRATION_SLICES = 20


@torch.inference_mode()
def calibrate_logit_offset(
    net: nn.Module, batches: list[tuple[torch.Tensor, ...]], specificity: float
) -> tuple[float, int]:
    """(logit offset, number of normal slices used) that puts P(abnormal) = 0.5 at `specificity` on the
    normal slices of `batches`, read as the pipeline reads them (each view and its mirror image).

    Why: seeds of the same recipe rank slices alike (AUC within a few points) but their outputs sit
    at very different levels (measured: one seed read 19 % of a normal scan's slices positive, another
    99 %), and the positive share, the *suspected* flag and the heat-map weights all read P against
    fixed levels. The mean of the two readings, sigmoid(a - o) + sigmoid(b - o) = 1 exactly when
    o = (a + b) / 2, so the offset is a quantile of the mean logit over the normal slices.
    """
    if not 0.0 < specificity < 1.0:
        raise ValueError(f"specificity must lie between 0 and 1, not {specificity}")
    net.eval()
    means = []
    for x, _, abnormal in batches:
        normal = abnormal == 0
        if normal.any():
            means.append(mirrored_logits(net, x[normal]).mean(0).numpy())
    values = np.concatenate(means) if means else np.zeros(0)
    if len(values) < MIN_CALIBRATION_SLICES:
        return 0.0, len(values)
    return float(np.quantile(values, specificity, method="higher")), len(values)


def calibrate_saved_classifier(
    out_dir: Path, batches: list[tuple[torch.Tensor, ...]], specificity: float
) -> WeightMetadata:
    """Rewrite the best classifier weights in `out_dir` with their calibrated logit offset (see above)."""
    loaded = load_weights(MODEL_NAME["classifier"], out_dir, version=EXPECTED_VERSIONS[MODEL_NAME["classifier"]])
    net = build_network(loaded.metadata.architecture)
    net.load_state_dict(loaded.state_dict)
    net = net.to(memory_format=torch.channels_last)
    offset, count = calibrate_logit_offset(net, batches, specificity)
    metrics = dict(loaded.metadata.metrics)
    metrics["calibration"] = {"specificity": specificity, "normal_slices": count, "logit_offset": offset}
    return save_weights(loaded.state_dict, replace(loaded.metadata, logit_offset=offset, metrics=metrics), out_dir)


# --- the run -------------------------------------------------------------------------------------


def _progress(prefix: str, step: int, total: int, loss: float, started: float, stream) -> None:
    """A bar redrawn in place on a terminal; in a log file, a line at each quarter of the epoch."""
    width = 24
    done = int(width * step / total)
    elapsed = time.perf_counter() - started
    text = f"{prefix} [{'#' * done}{'.' * (width - done)}] {step}/{total} loss {loss:.4f} {elapsed:.0f}s"
    tty = getattr(stream, "isatty", lambda: False)()
    if tty:
        stream.write("\r" + text + ("\n" if step == total else ""))
    elif step == total or step * 4 // total != (step - 1) * 4 // total:
        stream.write(text + "\n")
    stream.flush()


def resolve_device(name: str) -> torch.device:
    """ "auto" -> the GPU when torch sees one, else the CPU; "cuda" without a GPU is refused by name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but torch sees no GPU on this machine (use cpu or auto)")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r}: cpu, cuda or auto")
    return torch.device(name)


def _on_cpu(value: Any) -> Any:
    """A state dict (nested) with every tensor on the CPU: checkpoints resume on any machine."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _on_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_on_cpu(v) for v in value]
    return value


def train_network(
    config: TrainConfig,
    train_set: SliceSet,
    val_set: SliceSet,
    out_dir: Path,
    *,
    resume: bool = False,
    init_from: Path | None = None,
    stop_after_epoch: int | None = None,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    stream=sys.stdout,
) -> list[EpochRecord]:
    """Train `config.task`; continue from OUT/checkpoint.pt when `resume`, or start from weights in `init_from`.

    `stop_after_epoch` ends this call early (a time-boxed run) on the same schedule: --resume finishes it.
    `device` ("cpu", "cuda", "auto": a GPU when torch sees one) runs the network there; batches are still
    drawn on the CPU, and checkpoints and weights are written as CPU tensors, so either device resumes them.
    """
    task = config.task
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    architecture = config.architecture()
    history: list[EpochRecord] = []
    start_epoch, best = 0, -math.inf
    checkpoint_path = out_dir / CHECKPOINT
    target = resolve_device(device)
    net = build_network(architecture)
    state: dict[str, Any] = {}
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    if resume and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        if state["architecture"] != architecture or state["task"] != task:
            raise ValueError(f"{checkpoint_path} was written for another task or architecture")
        net.load_state_dict(state["model"])
        start_epoch, best = state["epoch"], state["best"]
        history = [EpochRecord(**record) for record in state["history"]]
        log(f"resuming {task} from {checkpoint_path.name} after epoch {start_epoch} (best {best:.4f})")
    elif init_from is not None:
        loaded = load_weights(MODEL_NAME[task], init_from, version=EXPECTED_VERSIONS[MODEL_NAME[task]])
        if loaded.metadata.architecture != architecture:
            raise ValueError(f"weights in {init_from} have another architecture: {loaded.metadata.architecture}")
        net.load_state_dict(loaded.state_dict)
        log(f"fine-tuning {task} from {loaded.path} (sha256 {loaded.metadata.sha256[:12]})")
    # Module.to moves the parameters in place, so the optimiser keeps them; its saved state is loaded after
    # the move because load_state_dict puts that state on the parameters' device.
    net = net.to(target, memory_format=torch.channels_last)
    if state:
        optimizer.load_state_dict(state["optimizer"])
    ema = _averaged(net, config.ema, state.get("ema"))
    steps = config.steps_per_epoch or max(1, min(math.ceil(len(train_set) / config.batch_size), 80))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(steps * (config.epochs - start_epoch), 1), pct_start=0.15
    )
    if start_epoch and state["config"]["epochs"] == config.epochs and state.get("steps") == steps:
        # The same schedule: continue it exactly. Building the scheduler reset the optimiser's learning rate
        # and momentum to the schedule's start, so the optimiser's saved state is loaded again after it.
        scheduler.load_state_dict(state["scheduler"])
        optimizer.load_state_dict(state["optimizer"])
    elif start_epoch:
        log(f"new learning-rate schedule over the remaining {config.epochs - start_epoch} epoch(s)")
    val_batches = [
        tuple(t.to(target) for t in batch)
        for batch in fixed_validation(val_set, task, config.seed, config.batch_size, config.input_size())
    ]
    log(
        f"{task}: {len(train_set)} training slices, {len(val_set)} validation slices, "
        f"{steps} steps of {config.batch_size} per epoch, epochs {start_epoch + 1}..{config.epochs} on {target}"
    )
    weights = sampling_weights(train_set, config.real_share)
    style = LesionStyle(p_diffuse=config.diffuse)
    last_epoch = config.epochs if stop_after_epoch is None else min(config.epochs, stop_after_epoch)
    for epoch in range(start_epoch, last_epoch):
        net.train()
        started = time.perf_counter()
        torch.manual_seed(config.seed * 1000 + epoch)
        losses = []
        for step in range(steps):
            rng = _rng(config.seed, epoch, step)
            indices = rng.choice(len(train_set), config.batch_size, p=weights)
            x, labels, abnormal = make_batch(
                train_set,
                indices,
                task,
                rng,
                p_synthetic=config.p_synthetic,
                augment=True,
                slab_mm=config.slab_mm,
                slab_p=config.slab_p,
                size=config.input_size(),
                style=style,
                copy_paste=config.copy_paste,
            )
            x, labels, abnormal = x.to(target), labels.to(target), abnormal.to(target)
            logits = net(x)
            if task == "classifier":
                known = abnormal >= 0
                loss = F.binary_cross_entropy_with_logits(logits[known, 0], abnormal[known])
            else:
                loss = segmentation_loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(net)
            losses.append(loss.item())
            _progress(f"epoch {epoch + 1}/{config.epochs}", step + 1, steps, float(np.mean(losses)), started, stream)
        scored = net if ema is None else ema.module
        metrics = evaluate(scored, val_batches, task)
        record = EpochRecord(
            epoch=epoch + 1, loss=float(np.mean(losses)), metrics=metrics, seconds=time.perf_counter() - started
        )
        history.append(record)
        primary = metrics["auc" if task == "classifier" else "dice"]
        primary = -1.0 if math.isnan(primary) else primary
        improved = primary > best
        if improved:
            best = primary
            save_weights(scored.state_dict(), _metadata(config, architecture, record), out_dir)
        shown = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        log(
            f"epoch {epoch + 1}/{config.epochs}: loss {record.loss:.4f} val {shown} ({record.seconds:.0f}s)"
            + (" * best, saved" if improved else "")
        )
        torch.save(
            {
                "task": task,
                "architecture": architecture,
                "model": _on_cpu(net.state_dict()),
                "optimizer": _on_cpu(optimizer.state_dict()),
                "scheduler": scheduler.state_dict(),
                "steps": steps,
                "epoch": epoch + 1,
                "best": best,
                "history": [r.__dict__ for r in history],
                "config": dict(config.__dict__),
                "ema": None if ema is None else _on_cpu(ema.state_dict()),
            },
            checkpoint_path,
        )
    if task == "classifier" and history and (out_dir / f"{MODEL_NAME[task]}.pt").exists():
        val_batches = [tuple(t.cpu() for t in batch) for batch in val_batches]
        calibrated = calibrate_saved_classifier(out_dir, val_batches, config.specificity)
        calibration = calibrated.metrics["calibration"]
        log(
            f"calibrated: P(abnormal) = 0.5 at {config.specificity:.0%} of {calibration['normal_slices']} "
            f"validation normal slices (logit offset {calibrated.logit_offset:+.3f})"
        )
    return history


def check_ema(decay: float) -> None:
    """Refuse a decay of the weights' moving average other than 0 (off) or one between 0 and 1."""
    if not 0.0 <= decay < 1.0:
        raise ValueError(f"--ema is a decay per step: 0 (off) or between 0 and 1, not {decay}")


def _averaged(net: nn.Module, decay: float, saved: dict[str, Any] | None) -> AveragedModel | None:
    """The exponential moving average of `net`'s weights (None when `decay` is 0), restored from a checkpoint."""
    check_ema(decay)
    if not decay:
        return None
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(decay))
    if saved is not None:
        ema.load_state_dict(saved)
    return ema


def _metadata(config: TrainConfig, architecture: dict[str, Any], record: EpochRecord) -> WeightMetadata:
    task = config.task
    crop = "whole slice" if task == "lungs" else "square box around the study's lungs (union over slices)"
    return WeightMetadata(
        name=MODEL_NAME[task],
        version=EXPECTED_VERSIONS[MODEL_NAME[task]],
        stage=task,
        architecture=architecture,
        classes=CLASSES[task],
        input={
            "size": config.input_size(),
            "window": list(HU_WINDOW),
            "crop": crop,
            "working_view": LUNG_VIEW if task == "lungs" else CROP_VIEW,
        },
        training_data=list(config.training_data),
        date=date.today().isoformat(),
        metrics={
            "validation": record.metrics,
            "epoch": record.epoch,
            "epochs": config.epochs,
            "seed": config.seed,
            "lr": config.lr,
            "slab_mm": config.slab_mm,
            "real_share": config.real_share,
            "diffuse": config.diffuse,
            "ema": config.ema,
        },
    )
