"""`manage.py evaluate-slices IMAGES_DIR MASKS_DIR [--out DIR] [--json]`: Dice of the infection network on 2-D slices.

Slices laid out like medseg-slices/train (images/N.jpg, masks/N.png with 0 bg, 1 GGO, 2 consolidation).
Prints per-image and mean Dice (binary infection, GGO, consolidation); --out writes the predicted masks
as PNG under the same names; --fold K/N scores only the test part of the N-fold split that
`train --data medseg2d:DIR,fold=K/N` trained without. Needs no database.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def _fmt(value: float | None) -> str:
    return "  -  " if value is None else f"{value:.3f}"


class Command(BaseCommand):
    help = "Dice of the infection network (or the HU baseline) on a folder of 2-D slices with masks."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser) -> None:
        parser.add_argument("images_dir", type=Path)
        parser.add_argument("masks_dir", type=Path)
        parser.add_argument("--out", type=Path, default=None, help="write predicted masks (PNG, 0/1/2) here")
        parser.add_argument("--json", action="store_true", help="print one JSON document")
        parser.add_argument("--model-dir", type=Path, default=None, help="weights folder (default MODEL_DIR)")
        parser.add_argument("--method", choices=["network", "combined", "baseline"], default="network")
        parser.add_argument("--fold", default=None, metavar="K/N", help="only the test part of fold K of N")
        parser.add_argument("--threads", type=int, default=0)

    def handle(self, *args, **options) -> None:
        from analysis.nets.registry import ModelFileError
        from analysis.training.datasets import DatasetError
        from analysis.training.evaluation import evaluate_slices

        if options["threads"]:
            import torch

            torch.set_num_threads(options["threads"])
        fold = None
        if options["fold"]:
            if not re.fullmatch(r"\d+/\d+", options["fold"]):
                raise CommandError("--fold must be K/N, e.g. 0/5")
            fold = tuple(int(v) for v in options["fold"].split("/"))
        try:
            result = evaluate_slices(
                options["images_dir"],
                options["masks_dir"],
                model_dir=options["model_dir"] or Path(settings.MODEL_DIR),
                method=options["method"],
                fold=fold,
                out_dir=options["out"],
            )
        except (DatasetError, ModelFileError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if options["json"]:
            self.stdout.write(json.dumps(result, indent=2))
            return
        self.stdout.write(f"{'image':>10}  infection   ggo    consolidation")
        for row in result["per_image"]:
            self.stdout.write(
                f"{row['image']:>10}  {_fmt(row['infection'])}    {_fmt(row['ggo'])}   {_fmt(row['consolidation'])}"
            )
        mean, pooled = result["mean_dice"], result["pooled_dice"]
        self.stdout.write(
            f"{'mean':>10}  {_fmt(mean['infection'])}    {_fmt(mean['ggo'])}   {_fmt(mean['consolidation'])}"
        )
        self.stdout.write(
            f"{'pooled':>10}  {_fmt(pooled['infection'])}    {_fmt(pooled['ggo'])}   {_fmt(pooled['consolidation'])}"
        )
        self.stdout.write(
            f"{result['images']} images, {result['model']['name']} {result['model']['version']}, "
            f"{result['seconds']:.1f} s"
        )
