"""Label maps of analysis runs, stored as compressed .npz files under MEDIA_ROOT.

A label map lives at ``analysis/<run id>/<name>.npz`` (relative to MEDIA_ROOT; that relative path
is what the run row keeps). Files appear atomically: written to a temporary file in the same
folder, then moved into place with ``os.replace``, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings

from .models import AnalysisRun

LABEL_KEY = "labels"
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


class LabelMapError(ValueError):
    """A label map cannot be saved or read; the message says why."""


def label_map_path(run: AnalysisRun, name: str) -> str:
    """Where `name` of `run` is stored, relative to MEDIA_ROOT."""
    if not _NAME.match(name):
        raise LabelMapError(f"label map name must be lower-case letters, digits and '_', got {name!r}")
    if run.pk is None:
        raise LabelMapError("the run must be saved before its label maps")
    return f"analysis/{run.pk}/{name}.npz"


class StagedLabelMap:
    """A label map compressed into a temporary file beside its final place; `commit` moves it there.

    The slow part (compression) happens in `stage_label_map`, outside any database transaction; the
    worker commits (an `os.replace`) while it holds the run's row lock, and discards on failure.
    """

    def __init__(self, relative: str, temporary: Path) -> None:
        self.relative = relative
        self.temporary = temporary

    def commit(self) -> str:
        os.replace(self.temporary, Path(settings.MEDIA_ROOT) / self.relative)
        return self.relative

    def discard(self) -> None:
        self.temporary.unlink(missing_ok=True)


def stage_label_map(run: AnalysisRun, name: str, array: np.ndarray) -> StagedLabelMap:
    """Check and compress a 3-D label map (values 0..255, kept as uint8) of `run` into a temporary file."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise LabelMapError(f"a label map must be 3-D (z, y, x), got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise LabelMapError(f"a label map holds integer labels, got dtype {array.dtype}")
    if array.size and (int(array.min()) < 0 or int(array.max()) > 255):
        raise LabelMapError("label values must lie in 0..255")
    relative = label_map_path(run, name)
    folder = (Path(settings.MEDIA_ROOT) / relative).parent
    folder.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{name}-", suffix=".npz.part", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, **{LABEL_KEY: array.astype(np.uint8, copy=False)})
            stream.flush()
            os.fsync(stream.fileno())
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return StagedLabelMap(relative, Path(temporary))


def save_label_map(run: AnalysisRun, name: str, array: np.ndarray) -> str:
    """Store a 3-D label map for `run` atomically; returns its path relative to MEDIA_ROOT."""
    return stage_label_map(run, name, array).commit()


def load_label_map(path: str) -> np.ndarray:
    """Read a label map saved by `save_label_map`, given its path relative to MEDIA_ROOT."""
    if not path:
        raise LabelMapError("this run has no stored label map")
    root = Path(settings.MEDIA_ROOT).resolve()
    full = (root / path).resolve()
    if not full.is_relative_to(root):
        raise LabelMapError(f"label map path {path!r} points outside the media folder")
    if not full.is_file():
        raise LabelMapError(f"label map {path} is missing from the media folder")
    with np.load(full, allow_pickle=False) as data:
        if LABEL_KEY not in data:
            raise LabelMapError(f"{path} is not a label map (no {LABEL_KEY!r} array)")
        return data[LABEL_KEY]
