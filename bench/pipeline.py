"""Time each pipeline stage as the worker runs it (shipped networks) on two studies; prints JSON.

    python bench/pipeline.py [--repeats 3] [--threads 2] [--ctdata ../shared/ctdata] [--combined]

--combined times the opt-in combination of the lung and infection networks with the classical rules
(analysis.nets.segmenters.pipeline_stages) instead of the worker's default stages.

Studies: a 64-slice 512x512 5 mm phantom (analysis.phantoms, 320 mm scan) and a ~150-slice 2 mm
real scan (COVID-CT-MD P001, 148 slices; skipped with a note when the data is absent). Reports the
median of the repeats per stage and in total, and the peak resident memory of the process.
Goals on a 2-core machine: <= 5 s (64 slices, 5 mm) and <= 12 s (150 slices, 2 mm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "covidsite.settings")


def _pipeline(combined: bool):
    from analysis.execute import default_pipeline

    if not combined:
        return default_pipeline
    from analysis.nets.segmenters import pipeline_stages
    from analysis.pipeline.run import run_pipeline

    stages = pipeline_stages(defaults_only=False)
    return lambda volume: run_pipeline(
        volume,
        lung_segmenter=stages["lungs"],
        infection_segmenter=stages["infection"],
        classifier=stages.get("classifier"),
    )


def _time_study(name: str, volume, repeats: int, combined: bool = False) -> dict:
    default_pipeline = _pipeline(combined)
    default_pipeline(volume)  # warm-up: loads the networks once, as a long-running worker does
    stages: dict[str, list[float]] = {}
    totals = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = default_pipeline(volume)
        totals.append(time.perf_counter() - started)
        for stage, seconds in result.timings.items():
            stages.setdefault(stage, []).append(seconds)
    both = result.region("both")
    return {
        "study": name,
        "slices": volume.shape[0],
        "matrix": list(volume.shape[1:]),
        "spacing_mm": [round(s, 3) for s in volume.spacing],
        "models": [f"{m.stage}: {m.name} {m.version} ({m.kind})" for m in result.models],
        "seconds_median": {k: round(statistics.median(v), 3) for k, v in stages.items()}
        | {"total": round(statistics.median(totals), 3)},
        "seconds_all_totals": [round(t, 3) for t in totals],
        "poi_percent": round(100 * both.poi, 2),
        "lung_volume_ml": round(both.lung_volume_ml),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (a worker's setting)")
    parser.add_argument("--ctdata", type=Path, default=ROOT.parent / "shared" / "ctdata")
    parser.add_argument("--combined", action="store_true", help="time the opt-in network combination")
    args = parser.parse_args()

    import django

    django.setup()
    import torch

    from analysis.phantoms import Severity, make_phantom, random_spec
    from analysis.pipeline.volume import load_volume

    torch.set_num_threads(args.threads)
    studies = []
    phantom = make_phantom(
        random_spec(5, Severity.MODERATE),
        slice_thickness_mm=5.0,
        pixel_spacing_mm=0.75,
        matrix=512,
        scan_length_mm=320.0,
    )
    studies.append(_time_study("phantom 64 x 512 x 512, 5 mm", phantom.volume, args.repeats, args.combined))
    notes = []
    p001 = args.ctdata / "covid-ct-md" / "P001"
    if p001.exists():
        started = time.perf_counter()
        volume = load_volume(p001)
        load_seconds = time.perf_counter() - started
        study = _time_study("COVID-CT-MD P001, 2 mm", volume, args.repeats, args.combined)
        study["seconds_load_dicom"] = round(load_seconds, 3)
        studies.append(study)
    else:
        notes.append(f"{p001} is missing: the 2 mm real study was not timed")
    print(
        json.dumps(
            {
                "cpu_count": os.cpu_count(),
                "threads": args.threads,
                "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "repeats": args.repeats,
                "studies": studies,
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "goals_seconds": {"64 slices 5 mm": 5.0, "150 slices 2 mm": 12.0},
                "notes": notes,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
