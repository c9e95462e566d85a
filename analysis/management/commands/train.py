"""`manage.py train {lungs,infection,classifier} --data SPEC... --out DIR`: train a network (no database needed).

    manage.py train infection --data synthetic:CT_DIR medseg2d:SLICES_DIR phantom:8 --out runs/inf --epochs 20
    manage.py train infection ... --out runs/inf --resume            # continue runs/inf/checkpoint.pt
    manage.py train infection ... --out runs/site --resume shipped   # fine-tune the shipped weights
    manage.py train infection ... --out runs/site --resume runs/inf  # fine-tune weights in another folder

Data SPECs are documented in analysis/training/datasets.py. Prints a progress bar per epoch and
the validation metrics after it; the best epoch's weights land in OUT/<model>.pt + .json.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Train the lung, infection or slice-classifier network on data SPECs (see analysis/training/datasets.py)."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser) -> None:
        parser.add_argument("task", choices=["lungs", "infection", "classifier"])
        parser.add_argument(
            "--data",
            nargs="+",
            required=True,
            metavar="SPEC",
            help="medseg2d:DIR[,fold=K/N,train|test] nifti:DIR dicomlabels:DIR,CSV synthetic:DIR[,CSV] phantom:N",
        )
        parser.add_argument(
            "--val-data",
            nargs="+",
            default=None,
            metavar="SPEC",
            help="validate on these instead of blocks of slices set aside from --data",
        )
        parser.add_argument("--out", required=True, type=Path, help="folder for checkpoint.pt and the best weights")
        parser.add_argument("--epochs", type=int, default=10)
        parser.add_argument(
            "--resume",
            nargs="?",
            const="auto",
            default=None,
            metavar="FROM",
            help="no value: continue OUT/checkpoint.pt (or fine-tune the shipped weights when "
            "there is none); 'shipped' or a weights folder: fine-tune those weights",
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--batch-size", type=int, default=16)
        parser.add_argument("--steps", type=int, default=0, help="batches per epoch (0: one pass, at most 80)")
        parser.add_argument("--lr", type=float, default=2e-3)
        parser.add_argument("--width", type=int, default=0, help="channels of the first level (0: default)")
        parser.add_argument(
            "--slab-mm",
            type=float,
            default=0.0,
            help="thick-slab augmentation: average neighbouring slices into slabs up to this thick (0: off)",
        )
        parser.add_argument(
            "--slab-p", type=float, default=0.35, help="share of volume samples averaged into slabs (with --slab-mm)"
        )
        parser.add_argument(
            "--real-share",
            type=float,
            default=0.0,
            help="share of each batch from real slice-labelled scans (dicomlabels; 0: by their count)",
        )
        parser.add_argument(
            "--p-synthetic", type=float, default=0.7, help="share of host slices that receive synthetic lesions"
        )
        parser.add_argument(
            "--copy-paste",
            type=float,
            default=0.0,
            help="share of labelled 2-D planes (medseg2d) that also receive another plane's real lesions",
        )
        parser.add_argument(
            "--ema",
            type=float,
            default=0.0,
            help="score and save an exponential moving average of the weights, decay per step (0: off; e.g. 0.99)",
        )
        parser.add_argument(
            "--diffuse",
            type=float,
            default=0.0,
            help="share of lesioned host slices that also get a diffuse opacity (large ground glass, "
            "crazy paving, dependent consolidation)",
        )
        parser.add_argument("--size", type=int, default=0, help="network input size (0: the task's default)")
        parser.add_argument(
            "--specificity",
            type=float,
            default=0.9,
            help="classifier: share of the validation normal slices calibrated to read P(abnormal) <= 0.5",
        )
        parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
        parser.add_argument(
            "--device",
            default="auto",
            help="where the network trains: cpu, cuda (or cuda:N) or auto (a GPU when there is one; default)",
        )
        parser.add_argument(
            "--cache",
            type=Path,
            default=None,
            help="folder for decoded DICOM series and their lung masks (default VAR_DIR/training-cache)",
        )

    def handle(self, *args, **options) -> None:
        import torch

        from analysis.training.datasets import DatasetError, build_slice_set, load_spec, parse_spec, split_validation
        from analysis.training.trainer import CHECKPOINT, TrainConfig, check_ema, train_network

        if options["threads"]:
            torch.set_num_threads(options["threads"])
        if options["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        if not 0.0 <= options["diffuse"] <= 1.0:
            raise CommandError(f"--diffuse is a share of slices, between 0 and 1, not {options['diffuse']}")
        try:
            check_ema(options["ema"])
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        if not 0.0 < options["specificity"] < 1.0:
            raise CommandError(f"--specificity must lie between 0 and 1, not {options['specificity']}")
        task, out = options["task"], options["out"]
        cache = options["cache"] or Path(settings.VAR_DIR) / "training-cache"
        try:
            specs = [parse_spec(text) for text in options["data"]]
            val_specs = [parse_spec(text) for text in options["val_data"] or []]
            sources = [item for spec in specs for item in load_spec(spec, cache_dir=cache)]
            data = build_slice_set(sources, task)
            if val_specs:
                val_sources = [item for spec in val_specs for item in load_spec(spec, cache_dir=cache)]
                train_set, val_set = data, build_slice_set(val_sources, task)
            else:
                train_set, val_set = split_validation(data)
        except DatasetError as exc:
            raise CommandError(str(exc)) from exc

        resume, init_from = False, None
        if options["resume"] == "auto":
            if (out / CHECKPOINT).exists():
                resume = True
            else:
                init_from = Path(settings.MODEL_DIR)
        elif options["resume"] == "shipped":
            init_from = Path(settings.MODEL_DIR)
        elif options["resume"]:
            init_from = Path(options["resume"])
            if not init_from.is_dir():
                raise CommandError(f"--resume {init_from}: not a folder with weights")

        config = TrainConfig(
            task=task,
            epochs=options["epochs"],
            batch_size=options["batch_size"],
            steps_per_epoch=options["steps"],
            lr=options["lr"],
            seed=options["seed"],
            width=options["width"],
            slab_mm=options["slab_mm"],
            slab_p=options["slab_p"],
            p_synthetic=options["p_synthetic"],
            real_share=options["real_share"],
            size=options["size"],
            specificity=options["specificity"],
            diffuse=options["diffuse"],
            copy_paste=options["copy_paste"],
            ema=options["ema"],
            training_data=[str(spec) + "".join(f",{k}={v}" for k, v in spec.options.items()) for spec in specs],
        )
        from analysis.nets.registry import ModelFileError

        try:
            history = train_network(
                config,
                train_set,
                val_set,
                out,
                resume=resume,
                init_from=init_from,
                device=options["device"],
                log=self.stdout.write,
                stream=self.stdout._out,
            )
        except (ModelFileError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if history:
            key = "auc" if task == "classifier" else "dice"
            best = max(history, key=lambda r: r.metrics[key] if r.metrics[key] == r.metrics[key] else -1)
            self.stdout.write(f"best epoch {best.epoch}: {key} {best.metrics[key]:.4f}; weights in {out}")
