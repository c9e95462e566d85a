"""`manage.py analyse PATH [--json] [--out DIR]`: the worker's pipeline (shipped networks) on one series, no database.

PATH is a folder holding one DICOM series or a NIfTI file. Without --json a short summary is printed;
--json prints the full result (per-slice areas are keyed by SOPInstanceUID for DICOM input); --out
writes lungs.nii.gz, infection.nii.gz and, when the slice classifier ran, heatmap.nii.gz (Grad-CAM,
0..255 for 0..1) on the input's grid.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Analyse one CT series (a DICOM folder or a NIfTI file) and print the measurements."
    requires_system_checks: list[str] = []  # a command-line tool: it needs no database or checks

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="folder with one DICOM series, or a .nii/.nii.gz file")
        parser.add_argument("--json", action="store_true", help="print the whole result as JSON")
        parser.add_argument("--out", type=Path, help="folder to write lungs.nii.gz and infection.nii.gz into")

    def handle(self, *args, path: Path, json: bool = False, out: Path | None = None, **options) -> None:
        # Torch-free, but heavy: imported here so `manage.py help` stays fast.
        import numpy as np

        from analysis.execute import default_pipeline
        from analysis.pipeline.errors import PipelineError
        from analysis.pipeline.volume import VolumeError, load_volume, write_label_nifti

        if not path.exists():
            raise CommandError(f"{path} does not exist")
        try:
            volume = load_volume(path)
            result = default_pipeline(volume, progress=self._progress if not json else None)
        except (VolumeError, PipelineError) as exc:
            raise CommandError(f"cannot analyse {path.name}: {exc}") from exc

        if out is not None:
            write_label_nifti(result.lungs, volume, out / "lungs.nii.gz")
            write_label_nifti(result.infection, volume, out / "infection.nii.gz")
            if result.heat_map is not None:
                heat = np.rint(np.clip(result.heat_map, 0.0, 1.0) * 255).astype(np.uint8)
                write_label_nifti(heat, volume, out / "heatmap.nii.gz")
        if json:
            self.stdout.write(_dumps(result.to_dict()))
            return
        corona = result.corona
        both = result.region("both")
        self.stdout.write(
            f"lungs {both.lung_volume_ml:.0f} mL, infection {both.infection_volume_ml:.1f} mL "
            f"(POI {100 * both.poi:.2f} %, iHU {'-' if both.ihu is None else f'{both.ihu:.0f}'}), "
            f"CT severity score {result.ct_severity_score}/30, {len(result.opacities)} opacities"
        )
        if corona is not None:
            self.stdout.write(
                f"corona score {corona.corona_score_ml:.0f} mL, {corona.positive_slices} of "
                f"{corona.slices_with_lung} lung slices abnormal ({100 * corona.positive_ratio:.0f} %)"
            )
        for warning in result.warnings:
            self.stdout.write(self.style.WARNING(f"warning: {warning}"))
        if out is not None:
            self.stdout.write(f"label maps written to {out}")

    def _progress(self, stage: str, percent: int) -> None:
        self.stderr.write(f"{percent:3d}% {stage}")


def _dumps(data: dict) -> str:
    return json.dumps(data, indent=2)
