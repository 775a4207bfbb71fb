"""Blacklight against pixelguard's query attacks, and its false positives on clean images.

Every query an attack sends goes through :class:`~pixelguard.serve.blacklight.BlacklightDetector`
exactly as ``pixelguard serve --stateful blacklight`` checks it (the image as the uint8
PNG a client would send), in the order the attack sends them. Each image is attacked on
its own, so every query belongs to it; the detector is shared by all images of an attack
(one server, many queries) and reset between attacks. For each attack: the success rate
and queries as usual, the query at which the detector first flags each image (median and
worst), and whether the attack had already succeeded by then. False positives: the first
``--clean`` MNIST test images sent once each, in order, by 50 keys.

Example:
    python benchmarks/bench_blacklight.py --n-images 20 --budget 500 --pixels 10
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, set_threads  # noqa: E402
from bench_pixel import SHARED_DATASETS, build_task  # noqa: E402
from pixelguard.attacks import create_attack  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.models.base import ClassifierWrapper  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402
from pixelguard.serve.blacklight import BlacklightDetector  # noqa: E402


def as_uint8(x: torch.Tensor) -> np.ndarray:
    """Canonical images as the uint8 HxWxC arrays a PNG carries: (N, H, W, C)."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


class Watched(ClassifierWrapper):
    """A Classifier that shows every image it is asked about to a detector, in order."""

    def __init__(self, model: TorchClassifier, detector: BlacklightDetector) -> None:
        super().__init__(model)
        self.detector = detector
        self.flags: list[bool] = []

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        for image in as_uint8(x):
            self.flags.append(self.detector.check("attacker", image))
        return self.model.predict(x)


ATTACKS = {
    "sparse-bayes": lambda k, b: create_attack("sparse-bayes", pixels=k, budget=b),
    "sparse-rs": lambda k, b: create_attack("sparse-rs", pixels=k, budget=b, min_batch=1),
    "pixel-de": lambda k, b: create_attack(
        "pixel-de", pixels=k, population=20, generations=max(1, b // 20 - 2), budget=b
    ),
    "label-only": lambda k, b: create_attack("label-only", max_pixels=k, budget=b),
}


def run_attack(name: str, task: Any, k: int, budget: int) -> dict[str, Any]:
    """Attack each image alone behind one shared detector; first detection per image."""
    detector = BlacklightDetector()
    model = TorchClassifier(task.module, task.input_shape, output="logits")
    rows = []
    for i in range(task.x.shape[0]):
        watched = Watched(model, detector)
        result = ATTACKS[name](k, budget).run(watched, task.x[i : i + 1], task.y[i : i + 1])
        flags = watched.flags[: int(result.queries[0])]  # the attack's own queries
        first = next((q + 1 for q, f in enumerate(flags) if f), None)
        rows.append(
            {
                "success": bool(result.success[0]),
                "queries": int(result.queries[0]),
                "first_detection": first,
                "fooled_before_detection": bool(result.success[0])
                and (first is None or int(result.queries[0]) < first),
            }
        )
    detected = [r["first_detection"] for r in rows if r["first_detection"] is not None]
    return {
        "attack": name,
        "images": len(rows),
        "fooled": sum(r["success"] for r in rows),
        "detected": len(detected),
        "median_first_detection": float(np.median(detected)) if detected else None,
        "worst_first_detection": max(detected) if detected else None,
        "fooled_before_detection": sum(r["fooled_before_detection"] for r in rows),
        "per_image": rows,
    }


def false_positives(images: torch.Tensor) -> dict[str, Any]:
    """Clean images sent once each, in order: how many the detector flags."""
    detector = BlacklightDetector()
    start = time.perf_counter()
    flagged = sum(
        detector.check(f"user{i % 50}", image) for i, image in enumerate(as_uint8(images))
    )
    seconds = time.perf_counter() - start
    return {
        "images": int(images.shape[0]),
        "flagged": int(flagged),
        "ms_per_check": round(1000 * seconds / max(1, images.shape[0]), 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-images", type=int, default=20)
    parser.add_argument("--pixels", type=int, default=10)
    parser.add_argument("--budget", type=int, default=500)
    parser.add_argument(
        "--clean", type=int, default=10_000, help="clean images for false positives"
    )
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-out/blacklight"))
    args = parser.parse_args(argv)
    set_threads(args.threads)
    task = build_task("mnist", args.n_images, 0, quick=False)
    results: dict[str, Any] = {
        "command": " ".join(["python", "benchmarks/bench_blacklight.py", *(argv or sys.argv[1:])]),
        "machine": describe_machine(),
        "pixels": args.pixels,
        "budget": args.budget,
        "attacks": [
            run_attack(name, task, args.pixels, args.budget) for name in args.attacks.split(",")
        ],
    }
    mnist = load_data(str(SHARED_DATASETS / "mnist"), split="test")
    results["false_positives"] = false_positives(mnist.x[: args.clean])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"MNIST, k = {args.pixels}, budget {args.budget}, {args.n_images} images, each alone")
    print(
        "| attack | fooled | detected | median / worst query of first detection | fooled before detection |"
    )
    print("|---|---|---|---|---|")
    for r in results["attacks"]:
        print(
            f"| {r['attack']} | {r['fooled']}/{r['images']} | {r['detected']}/{r['images']} | "
            f"{r['median_first_detection']} / {r['worst_first_detection']} | "
            f"{r['fooled_before_detection']} |"
        )
    fp = results["false_positives"]
    print(
        f"false positives: {fp['flagged']} of {fp['images']} clean MNIST test images ({fp['ms_per_check']} ms per check)"
    )
    return results


if __name__ == "__main__":
    main()
