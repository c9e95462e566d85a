"""The analysis status of a series as the pages show it and as the polling endpoint returns it."""

from __future__ import annotations

from analysis.choices import RunStatus
from analysis.models import AnalysisRun

# Stage names the pipeline reports, in words a clinician reads on the progress bar.
STAGE_LABELS: dict[str, str] = {
    "load": "Loading images",
    "loading": "Loading images",
    "lungs": "Segmenting lungs",
    "infection": "Segmenting infection",
    "classifier": "Classifying slices",
    "heatmap": "Computing heat maps",
    "measure": "Measuring",
    "measurements": "Measuring",
    "opacities": "Finding opacities",
    "store": "Saving results",
    "done": "Finishing",
    "saving": "Saving results",
}

ACTIVE_STATUSES: tuple[str, ...] = (RunStatus.QUEUED, RunStatus.RUNNING)


def stage_label(stage: str) -> str:
    """A readable name for a pipeline stage (unknown stages are shown as they are, capitalised)."""
    if not stage:
        return ""
    return STAGE_LABELS.get(stage, stage.replace("_", " ").capitalize())


def run_status(run: AnalysisRun | None) -> dict:
    """JSON-ready status of a series' latest run; `status` is "none" when it was never analysed."""
    if run is None:
        return {
            "status": "none",
            "label": "Not analysed",
            "active": False,
            "stage": "",
            "stage_label": "",
            "progress": 0,
            "error": "",
            "poi": None,
            "ihu": None,
            "run_id": None,
        }
    return {
        "status": run.status,
        "label": RunStatus(run.status).label,
        "active": run.status in ACTIVE_STATUSES,
        "stage": run.stage,
        "stage_label": stage_label(run.stage) or ("Waiting for a worker" if run.status == RunStatus.QUEUED else ""),
        "progress": int(run.progress or 0),
        "error": run.error if run.status == RunStatus.FAILED else "",
        "poi": run.poi if run.status == RunStatus.SUCCEEDED else None,
        "ihu": run.ihu if run.status == RunStatus.SUCCEEDED else None,
        "run_id": run.pk,
    }
