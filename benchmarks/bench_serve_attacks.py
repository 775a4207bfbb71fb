"""pixelguard's attacks over HTTP against ``pixelguard serve``, with and without a
stateful detector, plain and adaptive.

The MNIST (or ``--task cifar10``) CNN of the other benchmarks is served by the real CLI (``pixelguard serve``,
a subprocess on 127.0.0.1) and attacked through pixelguard's HTTP adapter
(:class:`~pixelguard.models.http.HttpClassifier`, one image per request, no client
cache, so that every query of the attack is one request the server sees, in order).
Each image is attacked with its own API key. Successes are verified by a separate
forward pass of the local copy of the model on the attack's image, undisguised.

Scenarios (``--scenarios``; each starts its own server with fresh detector state):

- ``<attack>@<reveal>/<stateful>/log``: the server answers every query and logs its
  detections; from the audit log, the query at which each image's key was first
  flagged, and whether the attack had already succeeded by then (what it would have
  got out of a server set to ``--on-detect suspend``).
- ``disguise:<noise>[:<shift>[:<jpeg>]]`` before the attack name: the adaptive attacker
  (:class:`~pixelguard.defenses.query_disguise.DisguisedQueries`), each query
  translated and noised afresh.
- ``blacklight:N``: Blacklight with ``--blacklight-neighbours N`` (1 is the paper's rule;
  ``blacklight`` alone is the default, 4).
- ``/reject`` instead of ``/log``: the server answers a flagged query with 403; a
  plain attack stops there, a disguised one sends the query again with a stronger
  disguise (``--retries``, after OARS); success and queries against the same attack
  with ``--stateful off``.

Example:
    python benchmarks/bench_serve_attacks.py --n-images 20 --budget 1000
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, set_threads  # noqa: E402
from bench_pixel import (
    SHARED_DATASETS,  # noqa: E402
    build_task,  # noqa: E402
)
from bench_serve_load import (  # noqa: E402
    HOST,
    Server,
    encode_png,
    free_port,
    mnist_images,
    request_body,
    write_keys,
)
from pixelguard.attacks import create_attack  # noqa: E402
from pixelguard.data import load_data  # noqa: E402
from pixelguard.defenses.query_disguise import DisguisedQueries  # noqa: E402
from pixelguard.errors import QueryBudgetExceeded, QueryRejected  # noqa: E402
from pixelguard.models.http import HttpClassifier  # noqa: E402
from pixelguard.models.http_config import EndpointConfig  # noqa: E402
from pixelguard.models.torch import TorchClassifier  # noqa: E402

CIFAR10 = SHARED_DATASETS / "cifar10-jpg.tar.gz"
CALIBRATION = {"mnist": str(SHARED_DATASETS / "mnist"), "cifar10": str(CIFAR10)}
"""The clean images each task's k-NN threshold is calibrated on (their test split)."""

DEFAULT_SCENARIOS = [
    # what each --reveal level costs an attacker, with no detector
    "sparse-bayes@probabilities/off/log",
    "sparse-bayes@topk:2/off/log",
    "sparse-bayes@topk:1/off/log",
    "label-only@label/off/log",
    # when Blacklight notices each attack (4 neighbours, the default; 1, the paper's)
    "sparse-bayes@probabilities/blacklight/log",
    "sparse-bayes@probabilities/blacklight:1/log",
    "sparse-rs@probabilities/blacklight/log",
    "pixel-de@probabilities/blacklight/log",
    "min-pixels@probabilities/blacklight/log",
    "label-only@label/blacklight/log",
    # the adaptive attacker against Blacklight, and the same attacker with no detector
    "disguise:0.05+sparse-bayes@probabilities/off/log",
    "disguise:0.05+sparse-bayes@probabilities/blacklight/log",
    "disguise:0.05+sparse-bayes@probabilities/blacklight:1/log",
    "disguise:0.1+sparse-bayes@probabilities/off/log",
    "disguise:0.1+sparse-bayes@probabilities/blacklight/log",
    "sparse-bayes@probabilities/blacklight/reject",
    "disguise:0.05+sparse-bayes@probabilities/blacklight/reject",
    # the feature-space k-NN detector
    "sparse-bayes@probabilities/knn/log",
    "label-only@label/knn/log",
    "disguise:0.1+sparse-bayes@probabilities/knn/log",
    "disguise:0.05+sparse-bayes@probabilities/knn/reject",
]


def parse_scenario(text: str) -> dict[str, Any]:
    """``[disguise:NOISE[:SHIFT[:JPEG]]+]ATTACK@REVEAL/STATEFUL/ON_DETECT`` as a dict."""
    disguise = None
    if text.startswith("disguise:"):
        spec, text = text.split("+", 1)
        parts = spec.split(":")[1:]
        disguise = {
            "noise": float(parts[0]),
            "shift": int(parts[1]) if len(parts) > 1 else 0,
            "jpeg": int(parts[2]) if len(parts) > 2 else 0,
        }
    attack, rest = text.split("@", 1)
    reveal, stateful, on_detect = rest.split("/")
    return {
        "attack": attack,
        "reveal": reveal,
        "stateful": stateful,
        "on_detect": on_detect,
        "disguise": disguise,
    }


def make_attack(name: str, pixels: int, budget: int, seed: int) -> Any:
    """The attack as the CLI would build it, at ``pixels`` and ``budget``."""
    if name == "min-pixels":
        return create_attack(name, budget=budget, seed=seed)
    if name == "pixel-de":  # a population that fits the budget many times over
        return create_attack(name, pixels=pixels, budget=budget, seed=seed, population=50)
    if name == "label-only":
        return create_attack(name, budget=budget, max_pixels=pixels, seed=seed)
    if name == "sparse-rs":
        return create_attack(name, pixels=pixels, budget=budget, seed=seed, min_batch=1)
    return create_attack(name, pixels=pixels, budget=budget, seed=seed)


def endpoint(url: str, key: str, reveal: str, input_shape: tuple[int, int, int]) -> EndpointConfig:
    """``pixelguard serve``'s protocol at ``reveal``, one image per request, no client
    cache; rejected requests are charged (the server saw them)."""
    if reveal == "label":
        reply = {"response_path": "predictions[0].label", "output": "labels"}
    elif reveal.startswith("topk:"):
        reply = {
            "response_path": "predictions[0].top_k",
            "top_k_fields": ["class", "probability"],
            "output": "probabilities",
        }
    else:
        reply = {"response_path": "predictions[0].probabilities", "output": "probabilities"}
    return EndpointConfig.from_dict(
        {
            "url": f"{url}/v1/classify",
            "input_shape": list(input_shape),
            "batch": False,
            "encoding": "png",
            "request_field": "image",
            "headers": {"X-API-Key": key},
            "num_classes": 10,
            "concurrency": 1,
            "max_retries": 0,
            "failed_requests_count": True,
            "cache": False,
            **reply,
        }
    )


def background_images(task: str, n: int) -> np.ndarray:
    """Clean images none of which is attacked, as uint8 (N, H, W, C): MNIST's first test
    images (the model trained on them), CIFAR-10's first training images."""
    if task == "mnist":
        return mnist_images(n)
    data = load_data(str(CIFAR10), split="train", limit_per_class=-(-n // 10))
    return (data.x[:n] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def send_background(url: str, key: str, images: np.ndarray) -> list[int]:
    """Benign traffic before the attacks, each image sent once; their status codes."""
    with httpx.Client(timeout=30) as client:
        return [
            client.post(f"{url}/v1/classify", content=body, headers={"X-API-Key": key}).status_code
            for body in map(request_body, encode_png(images))
        ]


def audit_decisions(path: Path) -> dict[str, list[str]]:
    """Key id -> the decisions of its requests, in order, from the audit log."""
    decisions: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        entry = json.loads(line)
        decisions.setdefault(entry.get("key_id") or "", []).append(entry["decision"])
    return decisions


def run_scenario(
    text: str, args: argparse.Namespace, task: Any, model_path: Path, out: Path
) -> dict[str, Any]:
    """One scenario on every image: per-image records and a summary."""
    sc = parse_scenario(text)
    folder = out / text.replace("/", "_").replace("@", "_").replace(":", "").replace("+", "_")
    folder.mkdir(parents=True, exist_ok=True)
    keys = write_keys(folder / "keys.toml", len(task.y) + 1)  # the last: benign traffic
    audit = folder / "audit.jsonl"
    audit.unlink(missing_ok=True)
    port = free_port()
    command = [
        sys.executable, "-m", "pixelguard.cli", "serve",
        "--model", str(model_path), "--device", "cpu", "--threads", "1",
        "--batch-size", "64", "--keys", str(folder / "keys.toml"),
        "--stateful", sc["stateful"].split(":")[0], "--on-detect", sc["on_detect"],
        "--reveal", sc["reveal"], "--audit", str(audit),
        "--host", HOST, "--port", str(port),
    ]  # fmt: skip
    if sc["stateful"].startswith("blacklight:"):
        command += ["--blacklight-neighbours", sc["stateful"].split(":")[1]]
    if sc["stateful"] == "knn":  # threshold for 0.1% false positives on the test split
        command += ["--calibration-data", CALIBRATION[args.task]]
    server = Server(command, port, folder / "server.log")
    local = TorchClassifier(task.module.eval(), task.input_shape)
    records = []
    start = time.perf_counter()
    try:
        problem = server.start()
        if problem is not None:
            raise SystemExit(f"{text}: the server did not start: {problem}")
        background = send_background(
            server.url, keys[-1], background_images(args.task, args.background)
        )
        for i in range(len(task.y)):
            remote = HttpClassifier(
                endpoint(server.url, keys[i], sc["reveal"], task.input_shape),
                max_images=args.budget + 2,  # the budget, the clean query and the check
            )
            queried: Any = remote
            if sc["disguise"] is not None:
                retries = args.retries if sc["on_detect"] == "reject" else 0
                queried = DisguisedQueries(remote, retries=retries, seed=i, **sc["disguise"])
            attack = make_attack(sc["attack"], args.pixels, args.budget, args.seed + i)
            x, y = task.x[i : i + 1], task.y[i : i + 1]
            stopped = None
            try:
                result = attack.run(queried, x, y)
                x_adv, attack_queries = result.x_adv, int(result.queries[0])
            except QueryRejected:
                stopped, x_adv, attack_queries = "rejected", x, None
            except QueryBudgetExceeded:  # rejected queries spent the budget
                stopped, x_adv, attack_queries = "budget", x, None
            with torch.no_grad():
                fooled = bool(local.predict(x_adv).argmax(1).item() != y.item())
            pixels = int((x_adv != x).any(dim=1).sum().item())
            records.append(
                {
                    "image": i,
                    "key": f"user{i:02d}",
                    "fooled": fooled,
                    "pixels": pixels,
                    "attack_queries": attack_queries,
                    "requests": remote.stats["requests_sent"],
                    "rejections": getattr(queried, "rejections", 0),
                    "stopped": stopped,
                }
            )
    finally:
        server.stop()
    seconds = time.perf_counter() - start
    decisions = audit_decisions(audit)
    for rec in records:
        mine = decisions.get(rec["key"], [])
        flagged = [n for n, d in enumerate(mine, 1) if d in ("detected", "rejected:detected")]
        rec["first_detection"] = flagged[0] if flagged else None
        rec["detected_queries"] = len(flagged)
        # the request at which the attack had its adversarial image: after the one that
        # asks for the clean prediction, its queries to success (min-pixels and
        # label-only go on shrinking it: for them, the query at which they stopped)
        rec["success_request"] = rec["attack_queries"] + 1 if rec["fooled"] else None
        rec["fooled_before_detection"] = rec["fooled"] and (
            rec["first_detection"] is None or (rec["success_request"] or 0) < rec["first_detection"]
        )
    benign = decisions.get(f"user{len(task.y):02d}", [])
    summary = summarize(records)
    summary["background_flagged"] = sum(d in ("detected", "rejected:detected") for d in benign)
    summary["background"] = len(background)
    return {"scenario": text, **sc, "seconds": round(seconds, 1), "records": records,
            "summary": summary}  # fmt: skip


def _median(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Success, detection and query figures over a scenario's images."""
    firsts = [r["first_detection"] for r in records if r["first_detection"] is not None]
    fooled = [r for r in records if r["fooled"]]
    return {
        "images": len(records),
        "fooled": len(fooled),
        "fooled_before_detection": sum(r["fooled_before_detection"] for r in records),
        "detected_images": len(firsts),
        "first_detection_median": _median(firsts),
        "first_detection_worst": max(firsts) if firsts else None,
        "median_requests_fooled": _median([r["requests"] for r in fooled]),
        "median_pixels_fooled": _median([r["pixels"] for r in fooled]),
        "flagged_fraction": round(
            sum(r["detected_queries"] for r in records)
            / max(1, sum(r["requests"] for r in records)),
            3,
        ),
        "rejections": sum(r["rejections"] for r in records),
    }


def table(results: list[dict[str, Any]]) -> str:
    """A markdown table of the scenarios' summaries."""
    lines = [
        "| scenario | fooled | fooled before 1st detection | images detected | 1st detection "
        "(median / worst query) | queries flagged | median requests (fooled) |",
        "|---|---|---|---|---|---|---|",
    ]
    for res in results:
        s = res["summary"]
        first = (
            f"{s['first_detection_median']:g} / {s['first_detection_worst']}"
            if s["first_detection_median"] is not None
            else "-"
        )
        median = s["median_requests_fooled"]
        lines.append(
            f"| {res['scenario']} | {s['fooled']}/{s['images']} | "
            f"{s['fooled_before_detection']}/{s['images']} | {s['detected_images']} | {first} | "
            f"{s['flagged_fraction']:.0%} | {median if median is not None else '-'} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=sorted(CALIBRATION), default="mnist")
    parser.add_argument("--n-images", type=int, default=20)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--pixels", type=int, default=10)
    parser.add_argument("--retries", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--background", type=int, default=300, help="benign queries first")
    parser.add_argument("--scenarios", nargs="+", default=DEFAULT_SCENARIOS)
    parser.add_argument("--out", type=Path, default=Path("bench-out/serve-attacks"))
    args = parser.parse_args(argv)
    set_threads(1)
    task = build_task(args.task, args.n_images, args.seed, quick=False)
    model_path = Path(task.info["checkpoint"])
    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for text in args.scenarios:
        res = run_scenario(text, args, task, model_path, args.out)
        print(f"{text}: {json.dumps(res['summary'])} ({res['seconds']} s)", flush=True)
        results.append(res)
    report = {
        "date": dt.date.today().isoformat(),
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "machine": describe_machine(),
        "task": task.info,
        "budget": args.budget,
        "pixels": args.pixels,
        "retries": args.retries,
        "results": results,
    }
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    print(table(results))
    return report


if __name__ == "__main__":
    main()
