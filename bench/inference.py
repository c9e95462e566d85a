"""Inference time of the networks on a 64-slice 512x512 study; prints JSON.

    python bench/inference.py [--threads 2] [--repeats 3] [--model-dir DIR]

Uses the weights in --model-dir (the shipped ones by default); without weights, freshly initialised
networks of the same architecture (the time is the same). The study is a phantom (analysis.phantoms)
reconstructed at 64 slices of 512x512; the lung mask given to the infection network is the lung
network's own output, as in the pipeline. Budget: lungs + infection <= 3 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()

    import numpy as np
    import torch

    from analysis.nets.architectures import (
        INFECTION_MODEL,
        LUNG_MODEL,
        build_network,
        infection_architecture,
        lung_architecture,
    )
    from analysis.nets.registry import WeightMetadata, weight_paths
    from analysis.nets.segmenters import InfectionNetSegmenter, LungNetSegmenter
    from analysis.phantoms import Severity, make_phantom, random_spec

    torch.set_num_threads(args.threads)
    phantom = make_phantom(
        random_spec(5, Severity.MODERATE), slice_thickness_mm=270 / 64, pixel_spacing_mm=0.75, matrix=512
    )
    volume = phantom.volume

    def stage(cls, name, arch, size):
        if weight_paths(name, args.model_dir)[0].exists():
            return cls.from_weights(args.model_dir), "shipped weights"
        meta = WeightMetadata(
            name=name,
            version="1.0",
            stage=cls.stage,
            architecture=arch,
            classes=[],
            input={"size": size, "window": [-1000.0, 250.0]},
        )
        return cls(build_network(arch), meta), "random initialisation (no weights found)"

    lungs_net, lungs_source = stage(LungNetSegmenter, LUNG_MODEL, lung_architecture(), 160)
    infection_net, infection_source = stage(InfectionNetSegmenter, INFECTION_MODEL, infection_architecture(), 224)
    lungs = lungs_net(volume)  # warm-up (allocator, kernels)
    infection_lungs = lungs if lungs.any() else phantom.lungs
    infection_net(volume, infection_lungs)
    timings = {"lungs": [], "infection": [], "total": []}
    for _ in range(args.repeats):
        started = time.perf_counter()
        lungs = lungs_net(volume)
        mid = time.perf_counter()
        infection_net(volume, lungs if lungs.any() else phantom.lungs)
        end = time.perf_counter()
        timings["lungs"].append(mid - started)
        timings["infection"].append(end - mid)
        timings["total"].append(end - started)
    lung_slices = int(np.count_nonzero(infection_lungs.reshape(volume.shape[0], -1).any(1)))
    print(
        json.dumps(
            {
                "study": {"slices": volume.shape[0], "matrix": list(volume.shape[1:]), "slices_with_lung": lung_slices},
                "threads": args.threads,
                "cpu_count": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
                "torch": torch.__version__,
                "weights": {"lungs": lungs_source, "infection": infection_source},
                "seconds_median": {k: round(float(np.median(v)), 3) for k, v in timings.items()},
                "seconds_all": {k: [round(x, 3) for x in v] for k, v in timings.items()},
                "budget_seconds": 3.0,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
