"""False positives of the stateful detectors on clean traffic, with and without re-sends.

Real users send distinct photos, and sometimes the same photo again: the very same
file, or the photo saved anew (a JPEG re-encoding). A stateful detector must let both
through. This streams clean MNIST test images through
:class:`~pixelguard.serve.blacklight.BlacklightDetector` and
:class:`~pixelguard.serve.knn.FeatureKnnDetector` exactly as ``pixelguard serve``
checks them (the uint8 pixels the server decodes), spread over 50 keys. The 10,000
test images of MNIST (or ``--task cifar10``) are shuffled (seeded) and halved:

- ``distinct``: the second half, each once;
- ``resent``: the same 5,000, and 1,000 of them sent again 1 to 3 more times, each
  re-send at a random later place in the stream, as the exact same pixels;
- ``re-encoded``: as ``resent``, but each re-send is the photo saved as a JPEG at a
  random quality from 85 to 95 and decoded (other pixels, the same photo).

The k-NN threshold is calibrated on the first half (the target: 0.1%), with the task's
CNN of the other benchmarks as its encoder (its penultimate layer).

Example:
    python benchmarks/bench_stateful_false_positives.py
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, set_threads  # noqa: E402
from bench_pixel import SHARED_DATASETS, build_task  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402
from pixelguard.serve.blacklight import BlacklightDetector  # noqa: E402
from pixelguard.serve.knn import FeatureKnnDetector, calibrate_threshold, penultimate_encoder  # noqa: E402

KEYS = 50


def jpeg_copy(image: np.ndarray, quality: int) -> np.ndarray:
    """``image`` (H, W, C uint8, grey or RGB) saved as a JPEG at ``quality`` and decoded."""
    buffer = io.BytesIO()
    grey = image.shape[2] == 1
    Image.fromarray(image[:, :, 0] if grey else image).save(buffer, format="JPEG", quality=quality)
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())))
    return decoded[:, :, None] if grey else decoded


def test_images(task: str, seed: int) -> np.ndarray:
    """The task's 10,000 test images as uint8 (N, H, W, C), in a seeded random order."""
    source = SHARED_DATASETS / ("mnist" if task == "mnist" else "cifar10-jpg.tar.gz")
    x = load_data(str(source), split="test").x
    x = x[torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))]
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def stream(
    images: np.ndarray, kind: str, resent: int, rng: np.random.Generator
) -> list[tuple[np.ndarray, bool]]:
    """The images in order, with re-sends of ``resent`` of them inserted at random
    later places; each entry is (pixels, whether it is a re-send)."""
    entries: list[tuple[np.ndarray, bool]] = [(im, False) for im in images]
    if kind == "distinct":
        return entries
    inserts: list[tuple[float, np.ndarray]] = []
    for i in rng.choice(len(images), resent, replace=False):
        for _ in range(int(rng.integers(1, 4))):
            copy = (
                images[i] if kind == "resent" else jpeg_copy(images[i], int(rng.integers(85, 96)))
            )
            inserts.append((float(rng.uniform(i + 0.5, len(images))), copy))
    order = [(float(i), im, False) for i, (im, _) in enumerate(entries)]
    order += [(place, im, True) for place, im in inserts]
    order.sort(key=lambda item: item[0])
    return [(im, again) for _, im, again in order]


def run(detector: Any, entries: list[tuple[np.ndarray, bool]]) -> dict[str, Any]:
    """Flags among first sends and among re-sends, and the time per check."""
    flags = {False: 0, True: 0}
    counts = {False: 0, True: 0}
    start = time.perf_counter()
    for n, (image, again) in enumerate(entries):
        counts[again] += 1
        flags[again] += bool(detector.check(f"user{n % KEYS:02d}", image))
    seconds = time.perf_counter() - start
    return {
        "first_sends": counts[False],
        "first_sends_flagged": flags[False],
        "resends": counts[True],
        "resends_flagged": flags[True],
        "ms_per_check": round(1000 * seconds / len(entries), 3),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=["mnist", "cifar10"], default="mnist")
    parser.add_argument("--resent", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--neighbours", type=int, nargs="+", default=[1, 4], help="Blacklight's, one run each"
    )
    parser.add_argument("--streams", nargs="+", default=["distinct", "resent", "re-encoded"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    args.out = args.out or Path(f"bench-out/stateful-fp-{args.task}")
    set_threads(1)
    task = build_task(args.task, 1, args.seed, quick=False)
    model = TorchClassifier(task.module.eval(), task.input_shape)
    images = test_images(args.task, args.seed)
    calibration, streamed = images[:5000], images[5000:]
    encoder = penultimate_encoder(model)
    clean = torch.from_numpy(calibration).permute(0, 3, 1, 2).float() / 255
    threshold = calibrate_threshold(encoder, clean)
    rows = []
    for kind in args.streams:
        entries = stream(streamed, kind, args.resent, np.random.default_rng(args.seed))
        detectors: list[tuple[str, Any]] = [
            (f"blacklight, neighbours={n}", lambda n=n: BlacklightDetector(neighbours=n))
            for n in args.neighbours
        ]
        detectors.append(("knn", lambda: FeatureKnnDetector(encoder, threshold=threshold)))
        for name, make in detectors:
            row = {"stream": kind, "detector": name, **run(make(), entries)}
            print(json.dumps(row), flush=True)
            rows.append(row)
    report = {
        "date": dt.date.today().isoformat(),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": describe_machine(),
        "knn_threshold": threshold,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    report["task"] = args.task
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
