"""The MedSeg cross-validation protocol of the model card, run end to end: optional pre-training, then
for each fold and seed a fine-tune on the fold's 40 labelled slices and the Dice on its 10 held-out ones.

No Django: `python -m analysis.training.crossval` runs it on any machine with the training packages,
a GPU machine included (`--device cuda`), where the source scans need not be: `prepare` writes the
pre-training samples to one .npz that travels instead. Fold jobs run in parallel worker processes,
each with one CPU thread, and every finished job is appended to OUT/results.jsonl at once, so a run
that is stopped keeps what it measured.

    python -m analysis.training.crossval prepare --data synthetic:CT/normal001 ... --out pretrain.npz
    python -m analysis.training.crossval run --medseg CT/medseg-slices/train --init runs/pretrain \\
        --out runs/cv --seeds 0 1 --workers 4
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import torch

from analysis.nets.architectures import EXPECTED_VERSIONS, INFECTION_MODEL
from analysis.nets.registry import ModelFileError, load_weights
from analysis.training.datasets import (
    DatasetError,
    SliceSet,
    build_slice_set,
    load_slice_set,
    load_spec,
    parse_spec,
    read_medseg2d,
    save_slice_set,
    split_validation,
)
from analysis.training.evaluation import evaluate_slices
from analysis.training.trainer import TrainConfig, check_ema, train_network

FOLDS = 5


@dataclass(frozen=True)
class Recipe:
    """What decides a fine-tune (the model card's protocol by default) and its pre-training, if run here."""

    epochs: int = 120
    steps: int = 10
    lr: float = 2e-3
    width: int = 0
    copy_paste: float = 0.0
    pretrain_epochs: int = 12
    diffuse: float = 0.0
    ema: float = 0.0


@dataclass(frozen=True)
class FoldJob:
    medseg: Path
    init_dir: Path
    out_dir: Path
    fold: int
    seed: int
    recipe: Recipe
    device: str = "cpu"
    folds: int = FOLDS


def _quiet() -> dict[str, Any]:
    return {"log": lambda *_: None, "stream": io.StringIO()}


def load_sources(sources: list[str], cache: Path | None = None) -> SliceSet:
    """One slice set (infection task) from prepared .npz files and data specs (e.g. phantom:16) together."""
    sets = []
    for source in sources:
        if source.endswith(".npz"):
            sets.append(load_slice_set(Path(source)))
        else:
            sets.append(build_slice_set(load_spec(parse_spec(source), cache_dir=cache), "infection"))
    return SliceSet.concat(sets)


def pretrain(sources: list[str], out_dir: Path, recipe: Recipe, *, device: str, seed: int = 0) -> dict[str, Any]:
    """Label-free pre-training (synthetic lesions drawn on the fly into host slices); best weights in out_dir."""
    torch.set_num_threads(2)
    started = time.perf_counter()
    train_set, val_set = split_validation(load_sources(sources))
    config = TrainConfig(
        task="infection",
        epochs=recipe.pretrain_epochs,
        seed=seed,
        width=recipe.width,
        diffuse=recipe.diffuse,
        training_data=[Path(s).name if s.endswith(".npz") else s for s in sources],
    )
    history = train_network(config, train_set, val_set, out_dir, device=device, **_quiet())
    best = max(history, key=lambda r: r.metrics["dice"])
    return {
        "pretrain": str(out_dir),
        "best_epoch": best.epoch,
        "val": best.metrics,
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_fold(job: FoldJob) -> dict[str, Any]:
    """Fine-tune on the fold's training part (six slices choose the epoch), score the held-out part."""
    torch.set_num_threads(1)
    started = time.perf_counter()
    images, masks = job.medseg / "images", job.medseg / "masks"
    planes = read_medseg2d(images, masks, fold=(job.fold, job.folds), part="train")
    train_set, val_set = split_validation(build_slice_set([planes], "infection"))
    recipe = job.recipe
    config = TrainConfig(
        task="infection",
        epochs=recipe.epochs,
        steps_per_epoch=recipe.steps,
        lr=recipe.lr,
        seed=job.seed,
        width=recipe.width,
        copy_paste=recipe.copy_paste,
        ema=recipe.ema,
        training_data=[f"medseg2d:{job.medseg},fold={job.fold}/{job.folds},train"],
    )
    history = train_network(
        config, train_set, val_set, job.out_dir, init_from=job.init_dir, device=job.device, **_quiet()
    )
    best = max(history, key=lambda r: r.metrics["dice"])
    scored = evaluate_slices(images, masks, model_dir=job.out_dir, fold=(job.fold, job.folds))
    return {
        "fold": job.fold,
        "seed": job.seed,
        "best_epoch": best.epoch,
        "mean_dice": scored["mean_dice"],
        "pooled_dice": scored["pooled_dice"],
        "per_image": scored["per_image"],
        "seconds": round(time.perf_counter() - started, 1),
    }


def summarise(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean binary infection Dice per seed over the folds it completed, and the fold x seed table."""
    table: dict[int, dict[int, float]] = {}
    for r in results:
        table.setdefault(r["seed"], {})[r["fold"]] = r["mean_dice"]["infection"]
    per_seed = {seed: float(np.mean(list(folds.values()))) for seed, folds in table.items()}
    complete = [v for seed, v in per_seed.items() if len(table[seed]) == FOLDS]
    return {
        "dice_by_seed_and_fold": {s: {f: round(d, 3) for f, d in sorted(v.items())} for s, v in sorted(table.items())},
        "mean_by_seed": {s: round(v, 3) for s, v in sorted(per_seed.items())},
        "mean_over_complete_seeds": round(float(np.mean(complete)), 3) if complete else None,
    }


def _check_inputs(medseg: Path, init: str | None, recipe: Recipe) -> str | None:
    """What is wrong with the slices, the starting weights or the recipe, before any worker trains (None: nothing)."""
    try:
        check_ema(recipe.ema)
    except ValueError as exc:
        return str(exc)
    try:
        read_medseg2d(medseg / "images", medseg / "masks")
        if init is not None:
            loaded = load_weights(INFECTION_MODEL, Path(init), version=EXPECTED_VERSIONS[INFECTION_MODEL])
            wanted = TrainConfig(task="infection", width=recipe.width).architecture()
            if loaded.metadata.architecture != wanted:
                return (
                    f"--init {init}: the weights have channels {loaded.metadata.architecture.get('channels')}, "
                    f"--width {recipe.width or 'default'} asks for {wanted['channels']}"
                )
    except (DatasetError, ModelFileError) as exc:
        return str(exc)
    return None


def _run(args: argparse.Namespace) -> int:
    recipe = Recipe(
        epochs=args.epochs,
        steps=args.steps,
        lr=args.lr,
        width=args.width,
        copy_paste=args.copy_paste,
        pretrain_epochs=args.pretrain_epochs,
        diffuse=args.diffuse,
        ema=args.ema,
    )
    problem = _check_inputs(Path(args.medseg), None if args.pretrain_data else args.init, recipe)
    if problem:  # said before anything is written
        print(f"error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "results.jsonl"
    (out / "recipe.json").write_text(json.dumps({**asdict(recipe), "device": args.device}, indent=1))
    init_dir = Path(args.init) if args.init else out / "pretrain"
    if args.pretrain_data:
        try:
            info = pretrain(args.pretrain_data, init_dir, recipe, device=args.device)
        except DatasetError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        with log_path.open("a") as f:
            f.write(json.dumps(info) + "\n")
        print(json.dumps(info), flush=True)
    elif not args.init:
        print("give --init (pre-trained weights) or --pretrain-data (samples to pre-train on)", file=sys.stderr)
        return 2
    jobs = [
        FoldJob(Path(args.medseg), init_dir, out / f"seed{seed}-fold{fold}", fold, seed, recipe, args.device)
        for seed in args.seeds
        for fold in args.folds
    ]
    results = []
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        futures = {pool.submit(run_fold, job): job for job in jobs}
        for future in as_completed(futures):
            result = future.result()
            results.append(result)
            with log_path.open("a") as f:
                f.write(json.dumps(result) + "\n")
            print(
                f"seed {result['seed']} fold {result['fold']}: Dice {result['mean_dice']['infection']:.3f} "
                f"(epoch {result['best_epoch']}, {result['seconds']:.0f} s)",
                flush=True,
            )
    summary = summarise(results)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary), flush=True)
    return 0


def _prepare(args: argparse.Namespace) -> int:
    try:
        data = load_sources(args.data, args.cache)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    save_slice_set(Path(args.out), data)
    print(f"{len(data)} samples from {len(args.data)} spec(s) written to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis.training.crossval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="write pre-training samples (infection task) to one .npz")
    prep.add_argument("--data", nargs="+", required=True, help="data specs, as for manage.py train")
    prep.add_argument("--out", required=True, type=Path)
    prep.add_argument("--cache", type=Path, default=None, help="folder for decoded DICOM series")
    run = sub.add_parser("run", help="pre-train (optional), then fine-tune and score every fold and seed")
    run.add_argument("--medseg", required=True, help="folder with images/ and masks/ (medseg-slices/train)")
    run.add_argument("--init", help="pre-trained infection weights to fine-tune from")
    run.add_argument(
        "--pretrain-data", nargs="+", help="prepared .npz files and data specs to pre-train on (instead of --init)"
    )
    run.add_argument("--out", required=True)
    run.add_argument("--seeds", type=int, nargs="+", default=[0])
    run.add_argument("--folds", type=int, nargs="+", default=list(range(FOLDS)))
    run.add_argument("--workers", type=int, default=2)
    run.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    run.add_argument("--epochs", type=int, default=120)
    run.add_argument("--steps", type=int, default=10)
    run.add_argument("--lr", type=float, default=2e-3)
    run.add_argument("--width", type=int, default=0)
    run.add_argument("--copy-paste", type=float, default=0.0)
    run.add_argument("--pretrain-epochs", type=int, default=12)
    run.add_argument("--diffuse", type=float, default=0.0)
    run.add_argument("--ema", type=float, default=0.0, help="fine-tune: decay of the weights' moving average (0: off)")
    args = parser.parse_args(argv)
    return _run(args) if args.command == "run" else _prepare(args)


if __name__ == "__main__":
    sys.exit(main())
