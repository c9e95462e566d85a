"""Versioned weight files: `<name>.pt` (a state dict) beside `<name>.json` (its metadata and sha256).

Every load checks the weight file's sha256 against the metadata and the metadata's version against
the version the code expects, and refuses a mismatch with a `ModelFileError` that says what to do:
a result must never be attributed to weights other than the ones that produced it.

The directory is an argument (the shipped `analysis/nets/weights/` by default; a deployment passes
settings.MODEL_DIR): this module does not import Django.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from analysis.pipeline.result import ModelInfo

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
# Bump when the metadata layout changes in a way older readers cannot follow.
METADATA_FORMAT = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class ModelFileError(RuntimeError):
    """A weight file is missing, altered, or of a version this code does not accept; the message says which."""


@dataclass(frozen=True)
class WeightMetadata:
    """What one weight file is: enough to rebuild the network, prepare its input and cite its training."""

    name: str
    version: str
    stage: str  # "lungs" | "infection" | "classifier"
    architecture: dict[str, Any]  # keyword arguments of analysis.nets.architectures.build_network
    classes: list[str]  # output channel names, index = label value
    input: dict[str, Any]  # window (HU), size (pixels), cropping
    training_data: list[str] = field(default_factory=list)
    date: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""
    dtype: str = "float16"
    format: int = METADATA_FORMAT
    # True only when the measured targets beat the classical / baseline method (see MODEL_CARD.md):
    # then the worker uses this network by default.
    pipeline_default: bool = False
    # Slice classifier only: subtracted from the logit before the sigmoid, so that P(abnormal) = 0.5 sits
    # at the operating point the training run chose on its validation normal slices (trainer.calibrate_logit_offset).
    logit_offset: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeightMetadata:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ModelFileError(f"unknown metadata fields {sorted(unknown)}: written by a newer version?")
        return cls(**data)


@dataclass
class LoadedWeights:
    """A verified state dict (float32) with its metadata and the ModelInfo to record on the AnalysisRun."""

    state_dict: dict[str, torch.Tensor]
    metadata: WeightMetadata
    path: Path

    @property
    def model_info(self) -> ModelInfo:
        return ModelInfo(
            stage=self.metadata.stage,
            name=self.metadata.name,
            version=self.metadata.version,
            sha256=self.metadata.sha256,
            kind="network",
        )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weight_paths(name: str, directory: Path | None = None) -> tuple[Path, Path]:
    """(`<name>.pt`, `<name>.json`) in `directory` (the shipped weights by default)."""
    if not _NAME.match(name):
        raise ModelFileError(f"{name!r} is not a valid model name (lower-case letters, digits, '.', '_', '-')")
    directory = Path(directory) if directory is not None else WEIGHTS_DIR
    return directory / f"{name}.pt", directory / f"{name}.json"


def save_weights(
    state_dict: dict[str, torch.Tensor], metadata: WeightMetadata, directory: Path, *, half: bool = True
) -> WeightMetadata:
    """Write the weights (fp16 when `half`: they are small and inference casts back) and metadata with its sha256."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pt_path, json_path = weight_paths(metadata.name, directory)
    stored = {
        key: (value.detach().to("cpu").half() if half and value.is_floating_point() else value.detach().to("cpu"))
        for key, value in state_dict.items()
    }
    torch.save(stored, pt_path)
    data = asdict(metadata)
    data.update(sha256=sha256_of(pt_path), dtype="float16" if half else "float32", format=METADATA_FORMAT)
    final = WeightMetadata(**data)
    json_path.write_text(final.to_json())
    return final


def read_metadata(name: str, directory: Path | None = None) -> WeightMetadata:
    _, json_path = weight_paths(name, directory)
    if not json_path.is_file():
        raise ModelFileError(f"no metadata for model {name!r}: {json_path.name} is missing in {json_path.parent}")
    try:
        data = json.loads(json_path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{json_path.name} is not valid JSON ({exc})") from exc
    metadata = WeightMetadata.from_dict(data)
    if metadata.name != name:
        raise ModelFileError(f"{json_path.name} describes model {metadata.name!r}, not {name!r}")
    if metadata.format > METADATA_FORMAT:
        raise ModelFileError(
            f"{json_path.name} has metadata format {metadata.format}; this code reads <= {METADATA_FORMAT}"
        )
    return metadata


def load_weights(name: str, directory: Path | None = None, *, version: str | None = None) -> LoadedWeights:
    """Load `<name>.pt` after checking its sha256 (always) and its version (when `version` is given).

    `version` is the version the caller's code was written for; a weight file of another version
    is refused rather than silently used. Raises ModelFileError.
    """
    pt_path, json_path = weight_paths(name, directory)
    metadata = read_metadata(name, directory)
    if version is not None and metadata.version != version:
        raise ModelFileError(
            f"model {name!r} in {json_path.parent} has version {metadata.version}, but this code expects {version}: "
            "install the matching weights or update the code"
        )
    if not pt_path.is_file():
        raise ModelFileError(f"weights of model {name!r} are missing: {pt_path.name} is not in {pt_path.parent}")
    actual = sha256_of(pt_path)
    if actual != metadata.sha256:
        raise ModelFileError(
            f"sha256 of {pt_path.name} is {actual}, but {json_path.name} records {metadata.sha256 or '(none)'}: "
            "the weight file was altered or does not belong to this metadata; refusing to load it"
        )
    try:
        stored = torch.load(pt_path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt archive
        raise ModelFileError(f"{pt_path.name} is not a readable weight file ({exc})") from exc
    state = {key: value.float() if value.is_floating_point() else value for key, value in stored.items()}
    return LoadedWeights(state_dict=state, metadata=metadata, path=pt_path)


def available_models(directory: Path | None = None) -> list[WeightMetadata]:
    """Metadata of every `<name>.json` with its `.pt` in `directory` (not verified: load_weights does that)."""
    directory = Path(directory) if directory is not None else WEIGHTS_DIR
    found = []
    for json_path in sorted(directory.glob("*.json")):
        if json_path.with_suffix(".pt").is_file():
            try:
                found.append(read_metadata(json_path.stem, directory))
            except ModelFileError:
                continue
    return found


def update_metadata(name: str, directory: Path, **changes: Any) -> WeightMetadata:
    """Rewrite `<name>.json` with `changes` (measured metrics, pipeline_default); the weights and sha256 stay."""
    if "sha256" in changes or "name" in changes:
        raise ModelFileError("sha256 and name describe the weight file itself and cannot be changed")
    metadata = read_metadata(name, directory)
    data = asdict(metadata) | changes
    updated = WeightMetadata.from_dict(data)
    weight_paths(name, directory)[1].write_text(updated.to_json())
    return updated
