"""How OpenMP's idle threads change an attack's time: spinning, a short spin, sleeping.

Runs the same ``pixelguard attack`` (the digits CNN of ``pixelguard train``, sparse-rs at
k = 3 on 100 test digits) in a fresh process under each setting, and times forward
passes of a 32x32 CNN at a small and a large batch the same way, so that a setting that
helps tiny models is checked against larger ones. Every setting runs in its own process
because OpenMP reads it once, when torch loads; each is measured on an idle machine and
with competing busy processes (``--busy``), as on a laptop or a CI runner doing other work.

Example:
    python benchmarks/bench_threads.py --out bench-out/threads
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import describe_machine, load_average, write_results  # noqa: E402

SETTINGS = {
    "OpenMP default (spin 300,000)": {"OMP_WAIT_POLICY": ""},
    "pixelguard's (GOMP_SPINCOUNT=1000)": {},
    "ACTIVE (spin always)": {"OMP_WAIT_POLICY": "ACTIVE"},
    "PASSIVE (sleep at once)": {"OMP_WAIT_POLICY": "PASSIVE"},
    "one thread": {"OMP_NUM_THREADS": "1"},
}
"""OpenMP settings; an empty OMP_WAIT_POLICY means none, with torch loaded before pixelguard."""

TORCH_FIRST = "import runpy, torch; runpy.run_module('pixelguard.cli', run_name='__main__')"
"""The CLI with torch loaded before pixelguard, which then leaves OpenMP's default alone."""

BUSY_LOOP = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
"""A competing process: one core busy, for a bounded time."""

FORWARD = """
import json, time, torch
from torch import nn
torch.manual_seed(0)
def net(c):
    return nn.Sequential(
        nn.Conv2d(3, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * c * 64, 10)).eval()
times = {}
for label, c, batch, reps in (("batch 48", 16, 48, 300), ("batch 256", 64, 256, 8)):
    model, x = net(c), torch.rand(batch, 3, 32, 32)
    with torch.no_grad():
        model(x)
        start = time.perf_counter()
        for _ in range(reps):
            model(x)
    times[label] = (time.perf_counter() - start) / reps * 1000
print(json.dumps(times))
"""


def environment(changes: dict[str, str]) -> dict[str, str]:
    """This process's environment with ``changes``; an empty value leaves a variable unset."""
    keys = ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")
    env = {k: v for k, v in os.environ.items() if k not in keys}
    env.update({k: v for k, v in changes.items() if v})
    return env


def timed(command: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of ``command`` and its stdout."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done.stdout


def measure(attack: list[str], changes: dict[str, str], repeats: int) -> dict[str, Any]:
    """Best of ``repeats``: the attack's wall time and the two forward timings."""
    env = environment(changes)
    command = attack
    if changes.get("OMP_WAIT_POLICY") == "":
        command = [sys.executable, "-c", TORCH_FIRST, *attack[3:]]
    best_attack, best_forward, summary = float("inf"), {}, {}
    for _ in range(repeats):
        seconds, out = timed(command, env)
        if seconds < best_attack:
            best_attack, summary = seconds, json.loads(out)
        forward = json.loads(timed([sys.executable, "-c", FORWARD], env)[1])
        if not best_forward or forward["batch 48"] < best_forward["batch 48"]:
            best_forward = forward
    return {
        "attack_s": best_attack,
        "success": summary.get("success_rate"),
        "forward_ms": best_forward,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-out/threads"))
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting (best kept)")
    parser.add_argument("--busy", default="0,1", help="competing busy processes per round")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pixelguard-threads-"))
    model = work / "model.pt"
    cli = [sys.executable, "-m", "pixelguard.cli"]
    train = [*cli, "train", "--data", "digits", "--out", str(model), "--quiet"]
    subprocess.run(train, check=True, capture_output=True)
    attack = [*cli, "attack", "--model", str(model), "--data", "digits", "--pixels", "3"]
    attack += ["--limit", "100", "--quiet", "--json", "--out", str(work / "run")]
    started, load_start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_average()
    rows = {}
    for busy in [int(b) for b in args.busy.split(",")]:
        hogs = [
            subprocess.Popen([sys.executable, "-c", BUSY_LOOP.format(seconds=900)])
            for _ in range(busy)
        ]
        try:
            for name, changes in SETTINGS.items():
                rows[f"{busy} busy, {name}"] = measure(attack, changes, args.repeats)
        finally:
            for hog in hogs:
                hog.kill()
    results = {
        "started": started,
        "load_average": [load_start, load_average()],
        "machine": describe_machine(),
        "command": " ".join(sys.argv),
        "rows": rows,
    }
    lines = [
        "| competing processes, setting | attack (whole process) | batch 48 | batch 256 |",
        "|---|---|---|---|",
    ]
    for name, row in rows.items():
        forward = row["forward_ms"]
        lines.append(
            f"| {name} | {row['attack_s']:.1f} s | {forward['batch 48']:.1f} ms | "
            f"{forward['batch 256']:.0f} ms |"
        )
    table = "\n".join(lines)
    write_results(args.out, results, table)
    print(table)


if __name__ == "__main__":
    main()
