"""Dataset readers and the 2-D slice sets the networks train on.

A data SPEC names a source and its kind (the train command's --data):

    medseg2d:DIR[,fold=K/N,train|test]  2-D slices laid out like medseg-slices/train: DIR/images/N.jpg
                                        (8-bit, lung-cropped) + DIR/masks/N.png (0 bg, 1 GGO, 2 consolidation);
                                        optionally one part of a deterministic N-fold split
    nifti:DIR                           NIfTI volumes with masks: the COVID-19 CT lung and infection
                                        segmentation dataset (Ma et al.: COVID-19-CT-Seg_20cases/,
                                        Infection_Mask/, Lung_Mask/) or MedSeg volumes (rp_im/, rp_msk/,
                                        rp_lung_msk/)
    dicomlabels:DIR,CSV                 a DICOM series with a slice-label CSV (P001_slice_labels.csv layout):
                                        slice labels for the classifier, classical lung masks for the lung net
    synthetic:DIR[,CSV]                 a real DICOM series whose (non-infected, when CSV is given) slices
                                        receive synthetic lesions with exact masks (analysis.training.lesions)
    phantom:N                           N synthetic chest CTs (analysis.phantoms) with exact masks

8-bit MedSeg slices are mapped to HU by estimating their export window: the median over the folder's
pictures of the aerated-lung histogram peak is taken as -850 HU and of the soft-tissue peak as +40 HU
(`estimate_hu`; on medseg-slices/train: 8-bit 44 -> -850 HU, 214 -> +40 HU, so 0..255 ~ -1080..+255 HU);
training adds intensity augmentation (HU scale and offset jitter) on top.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from analysis.nets.preprocess import AIR_HU, Box, crop, lung_box, resize
from analysis.pipeline.volume import CTVolume, VolumeError, load_nifti, load_volume

TASKS = ("lungs", "infection", "classifier")
LUNG_VIEW = 160  # whole-slice view of the lung network
CROP_VIEW = 256  # lung-cropped working view of the infection network and classifier (resized to their input)
LUNG_PEAK_HU, SOFT_PEAK_HU = -850.0, 40.0
# An inserted lesion smaller than this (pixels of the 256 view, ~2 mm^2 each) does not make a slice abnormal.
MIN_ABNORMAL_PIXELS = 12


class DatasetError(ValueError):
    """A data SPEC or a dataset on disk cannot be used; the message says why."""


@dataclass
class Case:
    """One volume with whatever ground truth its source has (None where it has none)."""

    name: str
    volume: CTVolume
    lungs: np.ndarray | None = None  # uint8 1 right / 2 left
    infection: np.ndarray | None = None  # uint8 1 GGO / 2 consolidation
    slice_labels: np.ndarray | None = None  # int8 per slice: 1 infected, 0 not, -1 unknown
    host: bool = False  # synthetic lesions are drawn into its slices without infection


@dataclass
class Planes:
    """2-D lung-cropped HU images with infection masks (no lung masks, unknown pixel size and orientation)."""

    name: str
    images: list[np.ndarray]
    masks: list[np.ndarray]
    ids: list[str]


@dataclass
class SliceSet:
    """The 2-D samples of one task at its working size."""

    images: np.ndarray  # (n, S, S) float32 HU
    labels: np.ndarray  # (n, S, S) uint8: lungs 0/1/2 or infection 0/1/2
    lungs: np.ndarray  # (n, S, S) bool: where lesions may be drawn (all False when unknown)
    abnormal: np.ndarray  # (n,) float32: 1 infected slice, 0 normal, -1 unknown
    synthesize: np.ndarray  # (n,) bool: draw lesions into this slice on the fly
    pixel_mm: np.ndarray  # (n,) float32: pixel size in the working view (nan when unknown)
    free_orientation: np.ndarray  # (n,) bool: stored in an arbitrary orientation (random 90-degree turns)
    groups: list[str] = field(default_factory=list)  # case of each sample
    # z index in its case (-1 for 2-D planes) and slice spacing in mm (nan when unknown): which samples
    # are neighbouring slices that thick-slab augmentation may average.
    z: np.ndarray | None = None
    slice_mm: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.z is None:
            self.z = np.full(n, -1, np.int32)
        if self.slice_mm is None:
            self.slice_mm = np.full(n, np.nan, np.float32)

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def concat(cls, sets: Sequence[SliceSet]) -> SliceSet:
        sets = [s for s in sets if len(s)]
        if not sets:
            raise DatasetError("no training samples: the data specs gave nothing usable for this task")
        return cls(
            images=np.concatenate([s.images for s in sets]),
            labels=np.concatenate([s.labels for s in sets]),
            lungs=np.concatenate([s.lungs for s in sets]),
            abnormal=np.concatenate([s.abnormal for s in sets]),
            synthesize=np.concatenate([s.synthesize for s in sets]),
            pixel_mm=np.concatenate([s.pixel_mm for s in sets]),
            free_orientation=np.concatenate([s.free_orientation for s in sets]),
            groups=[g for s in sets for g in s.groups],
            z=np.concatenate([s.z for s in sets]),
            slice_mm=np.concatenate([s.slice_mm for s in sets]),
        )

    def subset(self, index: np.ndarray) -> SliceSet:
        return SliceSet(
            images=self.images[index],
            labels=self.labels[index],
            lungs=self.lungs[index],
            abnormal=self.abnormal[index],
            synthesize=self.synthesize[index],
            pixel_mm=self.pixel_mm[index],
            free_orientation=self.free_orientation[index],
            groups=[self.groups[i] for i in index],
            z=self.z[index],
            slice_mm=self.slice_mm[index],
        )


# --- readers -------------------------------------------------------------------------------------


def histogram_peaks(image: np.ndarray) -> tuple[int, int]:
    """(aerated-lung peak, soft-tissue peak) of an 8-bit lung-window picture's histogram."""
    hist = np.bincount(image.ravel().astype(np.int64), minlength=256)[:256].astype(np.float64)
    hist = np.convolve(hist, np.ones(9) / 9, mode="same")
    lung_peak = int(np.argmax(hist[5:128])) + 5  # the darkest pixels (<5) are airways and padding
    soft_peak = int(np.argmax(hist[128:250])) + 128
    return lung_peak, soft_peak


def estimate_hu(image: np.ndarray, peaks: tuple[float, float] | None = None) -> np.ndarray:
    """Map an 8-bit lung-window picture to approximate HU: its lung peak -> -850 HU, soft-tissue peak -> +40 HU.

    `peaks` are the dataset's (one export window for all its pictures); without them the picture's own.
    """
    lung_peak, soft_peak = peaks if peaks is not None else histogram_peaks(image)
    if soft_peak - lung_peak < 60:  # no usable soft-tissue peak: fall back to the typical MedSeg window
        lung_peak, soft_peak = 44, 214
    scale = (SOFT_PEAK_HU - LUNG_PEAK_HU) / (soft_peak - lung_peak)
    return (image.astype(np.float32) - lung_peak) * scale + LUNG_PEAK_HU


def fold_indices(n: int, fold: int, folds: int, seed: int = 2020) -> np.ndarray:
    """Indices of the test part of `fold` in a deterministic `folds`-way split of n items."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[fold::folds])


def read_medseg2d(
    images_dir: Path, masks_dir: Path, *, fold: tuple[int, int] | None = None, part: str = "train"
) -> Planes:
    """Images N.jpg/.png and masks N.png with the same stem; with `fold` (K, N) only that fold's part."""
    images_dir, masks_dir = Path(images_dir), Path(masks_dir)
    if not images_dir.is_dir() or not masks_dir.is_dir():
        raise DatasetError(f"{images_dir} and {masks_dir} must be folders of images and masks")
    masks = {p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() == ".png"}
    files = sorted(
        (p for p in images_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.stem in masks),
        key=lambda p: (int(p.stem) if p.stem.isdigit() else 10**9, p.stem),
    )
    if not files:
        raise DatasetError(f"no image in {images_dir} has a mask of the same name in {masks_dir}")
    all_files = files
    if fold is not None:
        k, n = fold
        test = set(fold_indices(len(files), k, n).tolist())
        files = [f for i, f in enumerate(files) if (i in test) == (part == "test")]
    pictures, labels = [], []
    for path in files:
        image = np.array(Image.open(path).convert("L"))
        mask = np.array(Image.open(masks[path.stem]))
        if mask.ndim == 3:
            mask = mask[..., 0]
        if mask.shape != image.shape:
            raise DatasetError(f"{path.name}: mask {mask.shape} and image {image.shape} differ in size")
        if mask.max() > 2:
            raise DatasetError(f"{masks[path.stem].name}: values must be 0, 1 (GGO), 2 (consolidation)")
        pictures.append(image)
        labels.append(mask.astype(np.uint8))
    # One window for the folder: the median of the pictures' peaks (a heavily infected slice's "lung"
    # peak is its ground glass, so single pictures mislead), estimated on every picture of the folder
    # so that each fold part gets the same mapping.
    all_pictures = pictures if fold is None else [np.array(Image.open(p).convert("L")) for p in all_files]
    peaks = np.median(np.array([histogram_peaks(p) for p in all_pictures]), axis=0)
    images = [estimate_hu(p, (float(peaks[0]), float(peaks[1]))) for p in pictures]
    return Planes(name=f"medseg2d:{images_dir.parent.name}", images=images, masks=labels, ids=[f.stem for f in files])


def read_slice_labels(csv_path: Path, volume: CTVolume) -> np.ndarray:
    """Per-slice infected flags (1/0, -1 where the CSV has no row) matched by SOPInstanceUID."""
    if volume.slice_uids is None:
        raise DatasetError("slice labels need a DICOM series (its SOPInstanceUIDs)")
    with open(csv_path, newline="") as handle:
        rows = {row["sop_instance_uid"]: int(row["infected"]) for row in csv.DictReader(handle)}
    if not rows:
        raise DatasetError(f"{Path(csv_path).name} has no rows")
    labels = np.array([rows.get(uid, -1) for uid in volume.slice_uids], dtype=np.int8)
    if (labels >= 0).sum() == 0:
        raise DatasetError(f"no SOPInstanceUID of {Path(csv_path).name} belongs to this series")
    return labels


def _read_mask(path: Path, volume: CTVolume) -> np.ndarray:
    import SimpleITK as sitk

    image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    mask = sitk.GetArrayFromImage(image).astype(np.int16)
    if mask.shape != volume.shape:
        raise DatasetError(f"{path.name}: mask {mask.shape} does not match its image {volume.shape}")
    return mask


def _sides_by_position(lung_mask: np.ndarray) -> np.ndarray:
    """Relabel a lung mask so 1 is the right lung (low x) and 2 the left, whatever the source's values."""
    out = np.zeros(lung_mask.shape, np.uint8)
    values = [v for v in np.unique(lung_mask) if v > 0]
    if len(values) == 2:
        xs = {v: np.nonzero(lung_mask == v)[2].mean() for v in values}
        right, left = sorted(values, key=lambda v: xs[v])
        out[lung_mask == right], out[lung_mask == left] = 1, 2
    else:  # one value for both lungs: split at the body's mid-line
        fg = lung_mask > 0
        mid = (np.nonzero(fg)[2].min() + np.nonzero(fg)[2].max()) / 2 if fg.any() else 0
        xs = np.arange(lung_mask.shape[2])[None, None, :]
        out[fg & (xs < mid)], out[fg & (xs >= mid)] = 1, 2
    return out


def _infection_classes(mask: np.ndarray, volume: CTVolume, *, binary: bool) -> np.ndarray:
    """1 GGO / 2 consolidation. A binary infection mask is split by density (> -300 HU: consolidation)."""
    if binary:
        infected = mask > 0
        return np.where(infected, np.where(volume.hu > -300, 2, 1), 0).astype(np.uint8)
    out = np.zeros(mask.shape, np.uint8)  # MedSeg volumes: 1 GGO, 2 consolidation, 3 effusion (not infection)
    out[mask == 1], out[mask == 2] = 1, 2
    return out


def read_nifti_cases(root: Path) -> list[Case]:
    """Volumes with lung and infection masks in the Ma et al. 20-case layout or the MedSeg volume layout."""
    root = Path(root)
    layouts = [
        ("COVID-19-CT-Seg_20cases", "Infection_Mask", "Lung_Mask", True),  # Ma et al.: binary infection
        ("rp_im", "rp_msk", "rp_lung_msk", False),  # MedSeg volumes: 1 GGO, 2 consolidation, 3 effusion
    ]
    found = [layout for layout in layouts if (root / layout[0]).is_dir()]
    if not found:
        raise DatasetError(f"{root} has neither COVID-19-CT-Seg_20cases/ (Ma et al.) nor rp_im/ (MedSeg volumes)")
    image_dir, infection_dir, lung_dir, binary = found[0]
    cases = []
    for path in sorted((root / image_dir).glob("*.nii*")):
        try:
            volume = load_nifti(path)
        except VolumeError as exc:  # some public cases are 8-bit pictures, not HU
            print(f"skipping {path.name}: {exc}")
            continue
        infection = lungs = None
        if (root / infection_dir / path.name).exists():
            infection = _infection_classes(_read_mask(root / infection_dir / path.name, volume), volume, binary=binary)
        if (root / lung_dir / path.name).exists():
            lungs = _sides_by_position(_read_mask(root / lung_dir / path.name, volume))
        if infection is None and lungs is None:
            continue
        slice_labels = None if infection is None else infection.reshape(len(infection), -1).any(1).astype(np.int8)
        cases.append(
            Case(name=f"nifti:{path.name}", volume=volume, lungs=lungs, infection=infection, slice_labels=slice_labels)
        )
    if not cases:
        raise DatasetError(f"no usable volume with masks under {root}")
    return cases


def classical_lungs(volume: CTVolume) -> np.ndarray:
    """Training lung masks from the pipeline's classical method (it keeps consolidated lung, see its doc)."""
    from analysis.pipeline.lungs import ClassicalLungSegmenter

    return ClassicalLungSegmenter()(volume)


def read_dicom_case(directory: Path, csv_path: Path | None, *, host: bool, cache_dir: Path | None) -> Case:
    """A DICOM series with classical lung masks (cached: they take seconds) and optional slice labels."""
    directory = Path(directory)
    key = hashlib.sha1(f"{directory.resolve()}|{csv_path}".encode()).hexdigest()[:16]
    cached = Path(cache_dir) / f"dicom-{directory.name}-{key}.npz" if cache_dir else None
    if cached is not None and cached.exists():
        data = np.load(cached, allow_pickle=False)
        volume = CTVolume(hu=data["hu"], spacing=tuple(data["spacing"].tolist()))
        lungs, slice_labels = data["lungs"], data["slice_labels"]
    else:
        try:
            volume = load_volume(directory)
        except VolumeError as exc:
            raise DatasetError(f"{directory}: {exc}") from exc
        lungs = classical_lungs(volume)
        slice_labels = (
            read_slice_labels(Path(csv_path), volume)
            if csv_path
            else np.full(volume.shape[0], -1 if not host else 0, np.int8)
        )
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, hu=volume.hu, spacing=np.array(volume.spacing), lungs=lungs, slice_labels=slice_labels)
    return Case(name=f"dicom:{directory.name}", volume=volume, lungs=lungs, slice_labels=slice_labels, host=host)


def phantom_cases(n: int, seed: int = 7000) -> list[Case]:
    """n synthetic scans of mixed severity and slice thickness (2.5, 5, 10 mm; 256 matrix) with exact masks."""
    from analysis.phantoms import Severity, make_phantom, random_spec

    severities = [Severity.NORMAL, Severity.MILD, Severity.MODERATE, Severity.SEVERE]
    cases = []
    for i in range(n):
        phantom = make_phantom(
            random_spec(seed + i, severities[i % 4]),
            slice_thickness_mm=(2.5, 5.0, 10.0)[i % 3],
            pixel_spacing_mm=1.4,
            matrix=256,
        )
        infection = phantom.infection
        cases.append(
            Case(
                name=f"phantom:{seed + i}",
                volume=phantom.volume,
                lungs=phantom.lungs,
                infection=infection,
                slice_labels=infection.reshape(len(infection), -1).any(1).astype(np.int8),
            )
        )
    return cases


@dataclass(frozen=True)
class DataSpec:
    kind: str
    args: tuple[str, ...]
    options: dict[str, str]

    def __str__(self) -> str:
        return f"{self.kind}:{','.join(self.args)}"


_KINDS = ("medseg2d", "nifti", "dicomlabels", "synthetic", "phantom")


def parse_spec(text: str) -> DataSpec:
    """`kind:arg[,arg...][,key=value...]` -> DataSpec; raises DatasetError naming what is wrong."""
    kind, sep, rest = text.partition(":")
    if not sep or kind not in _KINDS or not rest:
        raise DatasetError(f"data spec {text!r} must be KIND:ARGS with KIND one of {', '.join(_KINDS)}")
    args, options = [], {}
    for part in rest.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            options[key] = value
        elif part in ("train", "test"):
            options["part"] = part
        else:
            args.append(part)
    expected = {"medseg2d": (1, 1), "nifti": (1, 1), "dicomlabels": (2, 2), "synthetic": (1, 2), "phantom": (1, 1)}
    low, high = expected[kind]
    if not low <= len(args) <= high:
        raise DatasetError(f"data spec {text!r}: {kind} takes {low}..{high} argument(s), got {len(args)}")
    if kind == "phantom" and not args[0].isdigit():
        raise DatasetError(f"data spec {text!r}: phantom:N needs a number of phantoms")
    if "fold" in options and not re.fullmatch(r"\d+/\d+", options["fold"]):
        raise DatasetError(f"data spec {text!r}: fold must be K/N, e.g. fold=0/5")
    return DataSpec(kind=kind, args=tuple(args), options=options)


def load_spec(spec: DataSpec, *, cache_dir: Path | None = None) -> list[Case | Planes]:
    """Read what a spec names (paths are checked: a missing one raises DatasetError)."""
    if spec.kind == "phantom":
        return phantom_cases(int(spec.args[0]), seed=int(spec.options.get("seed", 7000)))
    paths = [Path(a) for a in spec.args]
    for path in paths:
        if not path.exists():
            raise DatasetError(f"{spec}: {path} does not exist")
    if spec.kind == "medseg2d":
        fold = None
        if "fold" in spec.options:
            k, n = (int(v) for v in spec.options["fold"].split("/"))
            fold = (k, n)
        part = spec.options.get("part", "train")
        return [read_medseg2d(paths[0] / "images", paths[0] / "masks", fold=fold, part=part)]
    if spec.kind == "nifti":
        return list(read_nifti_cases(paths[0]))
    if spec.kind == "dicomlabels":
        return [read_dicom_case(paths[0], paths[1], host=False, cache_dir=cache_dir)]
    return [read_dicom_case(paths[0], paths[1] if len(paths) > 1 else None, host=True, cache_dir=cache_dir)]


# --- slice sets ----------------------------------------------------------------------------------


def _resize_stack(stack: np.ndarray, size: int, *, labels: bool) -> np.ndarray:
    tensor = torch.from_numpy(np.ascontiguousarray(stack, dtype=np.float32))[:, None]
    out = resize(tensor, size, labels=labels)[:, 0].numpy()
    return out.astype(np.uint8) if labels else out


def case_slices(case: Case, task: str) -> SliceSet | None:
    """The slices of a case usable for `task` at its working view (None when the case has nothing for it)."""
    volume = case.volume
    n = volume.shape[0]
    if case.lungs is None:
        return None
    has_lung = case.lungs.reshape(n, -1).any(1)
    labels_known = case.slice_labels if case.slice_labels is not None else np.full(n, -1, np.int8)
    if task == "lungs":
        keep = np.arange(n)  # slices without lung teach the network to say so
        size = LUNG_VIEW
        images = _resize_stack(volume.hu[keep], size, labels=False)
        labels = _resize_stack(case.lungs[keep], size, labels=True)
        lungs = labels > 0
        pixel = volume.spacing[1] * volume.shape[1] / size
    else:
        box = lung_box(case.lungs)
        if box is None:
            return None
        if case.infection is not None:
            keep = np.flatnonzero(has_lung)
            truth = case.infection
        elif task == "classifier" and (labels_known >= 0).any() and not case.host:
            keep = np.flatnonzero(has_lung & (labels_known >= 0))
            truth = None
        elif case.host:
            keep = np.flatnonzero(has_lung & (labels_known <= 0))  # hosts: only slices known (or assumed) normal
            truth = None
        else:
            return None
        size = CROP_VIEW
        images = _resize_stack(crop(volume.hu[keep], box, AIR_HU), size, labels=False)
        lungs = _resize_stack(crop(case.lungs[keep], box, 0), size, labels=True) > 0
        labels = (
            _resize_stack(crop(truth[keep], box, 0), size, labels=True)
            if truth is not None
            else np.zeros(images.shape, np.uint8)
        )
        pixel = volume.spacing[1] * box.side / size
    count = len(keep)
    if case.infection is not None:
        abnormal = case.infection[keep].reshape(count, -1).any(1).astype(np.float32)
    elif case.host:
        abnormal = np.zeros(count, np.float32)
    else:
        abnormal = labels_known[keep].astype(np.float32)
    return SliceSet(
        images=images.astype(np.float32),
        labels=labels,
        lungs=lungs,
        abnormal=abnormal,
        synthesize=np.full(count, case.host),
        pixel_mm=np.full(count, pixel, np.float32),
        free_orientation=np.zeros(count, bool),
        groups=[case.name] * count,
        z=np.asarray(keep, np.int32),
        slice_mm=np.full(count, volume.spacing[0], np.float32),
    )


def plane_slices(planes: Planes, task: str) -> SliceSet | None:
    """MedSeg-like 2-D planes at the cropped working view (not usable for the lung network: no lung masks)."""
    if task == "lungs" or not planes.images:
        return None
    images, labels = [], []
    for image, mask in zip(planes.images, planes.masks, strict=True):
        h, w = image.shape
        side = max(h, w)
        box = Box(-(side - h) // 2, -(side - w) // 2, side)
        images.append(_resize_stack(crop(image[None], box, AIR_HU), CROP_VIEW, labels=False)[0])
        labels.append(_resize_stack(crop(mask[None], box, 0), CROP_VIEW, labels=True)[0])
    count = len(images)
    labels_arr = np.stack(labels)
    return SliceSet(
        images=np.stack(images).astype(np.float32),
        labels=labels_arr,
        lungs=np.zeros(labels_arr.shape, bool),
        abnormal=labels_arr.reshape(count, -1).any(1).astype(np.float32),
        synthesize=np.zeros(count, bool),
        pixel_mm=np.full(count, np.nan, np.float32),
        free_orientation=np.ones(count, bool),
        groups=[f"{planes.name}/{i}" for i in planes.ids],
    )


def build_slice_set(sources: Sequence[Case | Planes], task: str) -> SliceSet:
    """All usable slices of all sources for `task`."""
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r}: one of {', '.join(TASKS)}")
    sets = []
    for source in sources:
        part = plane_slices(source, task) if isinstance(source, Planes) else case_slices(source, task)
        if part is not None:
            sets.append(part)
    return SliceSet.concat(sets)


def save_slice_set(path: Path, data: SliceSet) -> None:
    """Write a slice set to one compressed .npz (HU rounded to whole units), e.g. to train where the
    source scans are not: a machine with a GPU gets the prepared samples, not the DICOM series."""
    np.savez_compressed(
        path,
        images=np.clip(np.rint(data.images), -32768, 32767).astype(np.int16),
        labels=data.labels,
        lungs=data.lungs,
        abnormal=data.abnormal,
        synthesize=data.synthesize,
        pixel_mm=data.pixel_mm,
        free_orientation=data.free_orientation,
        groups=np.array(data.groups, dtype=str),
        z=data.z,
        slice_mm=data.slice_mm,
    )


def load_slice_set(path: Path) -> SliceSet:
    """A slice set written by save_slice_set; a file that is not one raises DatasetError naming what is missing."""
    try:
        with np.load(path, allow_pickle=False) as f:
            fields = {key: f[key] for key in f.files}
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: not a readable slice-set file ({exc})") from exc
    missing = {"images", "labels", "lungs", "abnormal", "synthesize", "pixel_mm", "free_orientation", "groups"}
    missing -= fields.keys()
    if missing:
        raise DatasetError(f"{path}: not a slice-set file, missing {', '.join(sorted(missing))}")
    return SliceSet(
        images=fields["images"].astype(np.float32),
        labels=fields["labels"],
        lungs=fields["lungs"],
        abnormal=fields["abnormal"],
        synthesize=fields["synthesize"],
        pixel_mm=fields["pixel_mm"],
        free_orientation=fields["free_orientation"],
        groups=[str(g) for g in fields["groups"]],
        z=fields.get("z"),
        slice_mm=fields.get("slice_mm"),
    )


def split_validation(data: SliceSet, *, block: int = 8, every: int = 6) -> tuple[SliceSet, SliceSet]:
    """(train, validation): from each volume, every `every`-th block of `block` neighbouring slices validates.

    Blocks, not single slices, so neighbours of a validation slice do not train. Single 2-D planes
    (MedSeg) all train when there are volumes to validate on (they are few and precious); without
    volumes, every `every`-th plane validates.
    """
    groups = np.array(data.groups)
    val = np.zeros(len(data), bool)
    has_volumes = False
    for name in dict.fromkeys(data.groups):
        members = np.flatnonzero(groups == name)
        if len(members) > 1:
            has_volumes = True
            position = np.arange(len(members))
            val[members[(position // block) % every == every - 1]] = True
    if not has_volumes:
        val[np.arange(len(data)) % every == every - 1] = True
    if val.all() or not val.any():
        raise DatasetError("too little data to set a validation part aside: give more slices or --val-data")
    return data.subset(np.flatnonzero(~val)), data.subset(np.flatnonzero(val))
