"""`manage.py evaluate-series DICOM_DIR [LABELS_CSV] [--json]`: slice-level AUC of infection presence.

`manage.py evaluate-series phantom:N`: instead, lungs and infection against the exact truth of N held-out
phantoms (lung Dice, share of consolidation inside the lung mask, infection Dice, POI error).

Runs lungs -> infection (-> slice classifier) on one DICOM series and scores each slice by the share of
its lung the infection network marks; with a slice-label CSV (P001_slice_labels.csv layout) prints the
ROC AUC of that score (and of the classifier's probability) against the `infected` column, and the POI
of the slices labelled normal. Without a CSV (a normal scan) it prints the POI. --method baseline
measures the classical lungs + HU-band baseline instead. Needs no database.
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Slice-level AUC of infection presence (and POI) on a DICOM series against a slice-label CSV."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser) -> None:
        parser.add_argument("dicom_dir", type=Path)
        parser.add_argument("labels_csv", type=Path, nargs="?", default=None)
        parser.add_argument("--json", action="store_true", help="print one JSON document")
        parser.add_argument("--model-dir", type=Path, default=None, help="weights folder (default MODEL_DIR)")
        parser.add_argument("--method", choices=["network", "baseline"], default="network")
        parser.add_argument("--threads", type=int, default=0)

    def handle(self, *args, **options) -> None:
        from analysis.nets.registry import ModelFileError
        from analysis.pipeline.errors import PipelineError
        from analysis.pipeline.volume import VolumeError
        from analysis.training.datasets import DatasetError
        from analysis.training.evaluation import evaluate_phantoms, evaluate_series

        if options["threads"]:
            import torch

            torch.set_num_threads(options["threads"])
        model_dir = options["model_dir"] or Path(settings.MODEL_DIR)
        if str(options["dicom_dir"]).startswith("phantom:"):
            count = str(options["dicom_dir"]).partition(":")[2]
            if not count.isdigit():
                raise CommandError("phantom:N needs a number of phantoms")
            result = evaluate_phantoms(int(count), model_dir=model_dir, method=options["method"])
            if options["json"]:
                self.stdout.write(json.dumps(result, indent=2))
            else:
                for row in result["phantoms"]:
                    self.stdout.write(json.dumps(row))
                self.stdout.write("mean: " + json.dumps(result["mean"]))
            return
        if options["labels_csv"] is not None and not options["labels_csv"].is_file():
            raise CommandError(f"{options['labels_csv']} is not a file")
        try:
            result = evaluate_series(
                options["dicom_dir"],
                options["labels_csv"],
                model_dir=model_dir,
                method=options["method"],
            )
        except (DatasetError, ModelFileError, VolumeError, PipelineError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        models = ", ".join(f"{m['stage']}: {m['name']} {m['version']}" for m in result["models"])
        self.stdout.write(f"{result['series']}: {result['slices']} slices ({models})")
        self.stdout.write(f"POI {100 * result['poi']:.2f} % of {result['lung_volume_ml']:.0f} mL lung")
        if "auc_infected_share" in result:
            self.stdout.write(f"{result['labelled_slices']} labelled slices, {result['infected_slices']} infected")
            self.stdout.write(f"AUC (infected share of the lung per slice): {result['auc_infected_share']:.3f}")
            if "auc_classifier" in result:
                self.stdout.write(f"AUC (slice classifier): {result['auc_classifier']:.3f}")
                self.stdout.write(f"AUC (slice reading, classifier + lesion area): {result['auc_slice_reading']:.3f}")
            self.stdout.write(
                f"POI in slices labelled normal: {100 * result['poi_in_normal_slices']:.2f} %; "
                f"in infected slices: {100 * result['poi_in_infected_slices']:.2f} %"
            )
        self.stdout.write("seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items()))
