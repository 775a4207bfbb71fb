"""Loopback load test of ``pixelguard serve``: stateful detection off against on.

For each ``--stateful`` mode the real command (``python -m pixelguard.cli serve``) serves
the cached MNIST small CNN of ``bench_pixel.py`` on 127.0.0.1 (a free port, 50 API keys,
``--on-detect log``, one torch thread). An asyncio + httpx client keeps ``--concurrency``
requests in flight, one distinct clean MNIST test image per request (PNG, base64,
pre-encoded; keys in rotation), first for a warm-up that is not counted, then for
``--duration`` seconds or until the images run out. Per mode: requests, throughput,
latency percentiles, non-200 answers, detections (``pixelguard_detections_total`` from
``/metrics``) and the server's CPU time. Then, in this process, the cost of the
detector's ``check`` alone on the same images, to attribute the difference.

Each mode gets a fresh server, so each starts with an empty detector state; every image
is sent at most once per mode (the 10,000 MNIST test images, so a run may end before
``--duration`` when they run out), so a detection is a false positive. ``knn`` gets
``--calibration-data`` of the shared MNIST folder unless ``--mode-args knn=...`` says
otherwise. A mode the CLI rejects is skipped and noted. ``--rounds`` repeats the modes
interleaved (the machine's load drifts). Only 127.0.0.1 is contacted.

Example:
    python benchmarks/bench_serve_load.py --quick
    python benchmarks/bench_serve_load.py --duration 30 --concurrency 8 \
        --modes off,blacklight,knn --rounds 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import io
import json
import os
import re
import secrets
import shlex
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    describe_machine,
    load_average,
    package_versions,
    set_threads,
    source_revision,
    write_results,
)
from bench_pixel import SHARED_DATASETS, build_task  # noqa: E402
from pixelguard.data import load_data  # noqa: E402

HOST = "127.0.0.1"
"""The only address this benchmark talks to."""
N_KEYS = 50
WARMUP_SECONDS = 3.0
STARTUP_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- data


def mnist_model_path(seed: int = 0) -> Path:
    """The cached ``bench_pixel`` MNIST checkpoint (trained first if it is not cached)."""
    return Path(build_task("mnist", 1, seed, quick=False).info["checkpoint"])


def mnist_images(limit: int | None) -> np.ndarray:
    """The MNIST test images as uint8 (N, 28, 28, 1), in file order."""
    data = load_data(str(SHARED_DATASETS / "mnist"), split="test")
    x = data.x if limit is None else data.x[:limit]
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def encode_png(images: np.ndarray) -> list[bytes]:
    """Each uint8 (H, W, C) image, grey or RGB, as a PNG file."""
    files = []
    for image in images:
        buf = io.BytesIO()
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(buf, format="PNG")
        files.append(buf.getvalue())
    return files


def request_body(png: bytes) -> bytes:
    """The ``{"image": "<base64 PNG>"}`` JSON body of one request."""
    return json.dumps({"image": base64.b64encode(png).decode("ascii")}).encode()


def write_keys(path: Path, n: int) -> list[str]:
    """A keys file with ``n`` random keys (``user00 = "..."``); the keys, in order."""
    keys = [secrets.token_hex(16) for _ in range(n)]
    lines = ["[keys]", *(f'user{i:02d} = "{k}"' for i, k in enumerate(keys))]
    path.write_text("\n".join(lines) + "\n")
    return keys


# --------------------------------------------------------------------------- server


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (``/proc/stat``, not idle/iowait)."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_count(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


@dataclass
class Server:
    """A ``pixelguard serve`` subprocess on 127.0.0.1 and the files it writes to."""

    command: list[str]
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> str | None:
        """Start and wait for ``/healthz``; the reason when the server did not come up."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                return f"exited with {self.proc.returncode}: " + " | ".join(tail)
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return None
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        return f"no answer on /healthz within {STARTUP_TIMEOUT:.0f} s"

    def stop(self) -> int | None:
        """Terminate (kill after ``STOP_TIMEOUT``); the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.terminate()
        try:
            return self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(STOP_TIMEOUT)


def scrape(url: str) -> dict[str, float]:
    """The ``pixelguard_*`` samples of ``/metrics`` (name with labels -> value), the
    latency histogram's buckets left out (its ``_sum`` and ``_count`` kept)."""
    text = httpx.get(f"{url}/metrics", timeout=10.0).text
    samples = {}
    for line in text.splitlines():
        if line.startswith("pixelguard_") and "_bucket{" not in line:
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def metric_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counters that moved between two scrapes (``_created`` samples left out)."""
    return {
        k: v - before.get(k, 0.0)
        for k, v in after.items()
        if "_created" not in k and v - before.get(k, 0.0) != 0
    }


# --------------------------------------------------------------------------- client


@dataclass
class Phase:
    """What the client saw in one timed phase."""

    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    client_cpu_seconds: float = 0.0
    stopped_by: str = "time"


class Feeder:
    """Hands out request bodies in order, each at most once."""

    def __init__(self, bodies: list[bytes], keys: list[str]) -> None:
        self.bodies = bodies
        self.keys = keys
        self.next = 0

    def take(self) -> tuple[bytes, str] | None:
        if self.next >= len(self.bodies):
            return None
        i = self.next
        self.next += 1
        return self.bodies[i], self.keys[i % len(self.keys)]


async def run_phase(url: str, feeder: Feeder, seconds: float, concurrency: int) -> Phase:
    """``concurrency`` workers send until ``seconds`` pass or the feeder is empty."""
    phase = Phase()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30.0) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                item = feeder.take()
                if item is None:
                    phase.stopped_by = "images"
                    return
                body, key = item
                start = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/classify",
                        content=body,
                        headers={"X-API-Key": key, "Content-Type": "application/json"},
                    )
                    status = str(response.status_code)
                except httpx.HTTPError as exc:
                    status = f"error:{type(exc).__name__}"
                phase.latencies_ms.append(1000.0 * (time.perf_counter() - start))
                phase.statuses[status] = phase.statuses.get(status, 0) + 1

        cpu0, t0 = time.process_time(), time.perf_counter()
        deadline = t0 + seconds
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        phase.seconds = time.perf_counter() - t0
        phase.client_cpu_seconds = time.process_time() - cpu0
    return phase


def summarize(phase: Phase) -> dict[str, Any]:
    lat = np.asarray(phase.latencies_ms)
    n = int(lat.size)

    def pct(q: float) -> float | None:
        return round(float(np.percentile(lat, q)), 2) if n else None

    return {
        "requests": n,
        "seconds": round(phase.seconds, 3),
        "throughput_rps": round(n / phase.seconds, 1) if phase.seconds else None,
        "latency_ms": {
            "mean": round(float(lat.mean()), 2) if n else None,
            "p50": pct(50),
            "p90": pct(90),
            "p99": pct(99),
            "max": round(float(lat.max()), 2) if n else None,
        },
        "statuses": dict(sorted(phase.statuses.items())),
        "non_200": sum(v for k, v in phase.statuses.items() if k != "200"),
        "client_cpu_seconds": round(phase.client_cpu_seconds, 2),
        "stopped_by": phase.stopped_by,
    }


# --------------------------------------------------------------------------- modes


def serve_command(
    model: Path, keys: Path, port: int, mode: str, threads: int, extra: list[str]
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "pixelguard.cli",
        "serve",
        "--model",
        str(model),
        "--device",
        "cpu",
        "--threads",
        str(threads),
        "--batch-size",
        "64",
        "--keys",
        str(keys),
        "--stateful",
        mode,
        "--on-detect",
        "log",
        "--host",
        HOST,
        "--port",
        str(port),
        *extra,
    ]


def run_mode(
    mode: str,
    round_: int,
    *,
    model: Path,
    keys_file: Path,
    keys: list[str],
    bodies: list[bytes],
    args: argparse.Namespace,
    extra: list[str],
) -> dict[str, Any]:
    """One fresh server in ``mode``: warm-up, the timed phase, metrics and CPU."""
    port = free_port()
    command = serve_command(model, keys_file, port, mode, args.server_threads, extra)
    server = Server(command, port, args.out / f"server-{mode}-{round_}.log")
    shown = shlex.join(["python", *command[1:]])
    print(f"[{mode}] {shown}", flush=True)
    result: dict[str, Any] = {"mode": mode, "round": round_, "server_command": shown}
    try:
        started = time.perf_counter()
        reason = server.start()
        if reason is not None:
            print(f"[{mode}] skipped: the server did not start ({reason})", flush=True)
            return {**result, "skipped": reason}
        assert server.proc is not None
        pid = server.proc.pid
        result["startup_seconds"] = round(time.perf_counter() - started, 2)
        printed = re.search(r"threshold ([0-9.eE+-]+)", server.log.read_text(errors="replace"))
        if printed:
            result["knn_threshold"] = float(printed.group(1))
        feeder = Feeder(bodies[: args.max_requests], keys)
        asyncio.run(run_phase(server.url, feeder, args.warmup, args.concurrency))
        warmup_requests = feeder.next
        before, cpu_before = scrape(server.url), cpu_seconds(pid)
        busy_before, load_before = machine_busy_seconds(), load_average()
        phase = asyncio.run(run_phase(server.url, feeder, args.duration, args.concurrency))
        cpu_after, busy_after = cpu_seconds(pid), machine_busy_seconds()
        after = scrape(server.url)
        summary = summarize(phase)
        measured = metric_delta(before, after)
        handled = measured.get("pixelguard_request_latency_seconds_count", 0.0)
        handler_ms = (
            round(1000 * measured["pixelguard_request_latency_seconds_sum"] / handled, 3)
            if handled
            else None
        )
        server_cpu = (
            cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
        )
        result.update(
            {
                "warmup_requests": warmup_requests,
                **summary,
                "detections": int(measured.get("pixelguard_detections_total", 0)),
                "detections_incl_warmup": int(after.get("pixelguard_detections_total", 0)),
                "server_handler_ms_mean": handler_ms,
                "metrics_delta": measured,
                "server_cpu_seconds": round(server_cpu, 2) if server_cpu is not None else None,
                "server_cpu_share_of_one_core": (
                    round(server_cpu / phase.seconds, 3) if server_cpu is not None else None
                ),
                "server_cpu_ms_per_request": (
                    round(1000 * server_cpu / summary["requests"], 3)
                    if server_cpu is not None and summary["requests"]
                    else None
                ),
                "server_threads_os": thread_count(pid),
                "load_average_before": load_before,
                "load_average_after": load_average(),
                # busy cores left after the server and this client: other processes
                "other_processes_cores": (
                    round(
                        (busy_after - busy_before - server_cpu - phase.client_cpu_seconds)
                        / phase.seconds,
                        2,
                    )
                    if busy_after is not None and busy_before is not None and server_cpu
                    else None
                ),
                "images_sent_incl_warmup": feeder.next,
            }
        )
        s = result
        print(
            f"[{mode}] {s['requests']} requests in {s['seconds']} s: {s['throughput_rps']} req/s, "
            f"p50 {s['latency_ms']['p50']} ms, non-200 {s['non_200']}, "
            f"detections {s['detections']}, server CPU {s['server_cpu_share_of_one_core']}",
            flush=True,
        )
    finally:
        result["server_exit"] = server.stop()
    return result


# --------------------------------------------------------------------------- in process


def _ms(times: list[float]) -> dict[str, float]:
    return {
        "mean": round(statistics.fmean(times), 3),
        "p50": round(float(np.percentile(times, 50)), 3),
        "p99": round(float(np.percentile(times, 99)), 3),
    }


def make_detector(mode: str, classifier: Any, knn_threshold: float | None) -> Any:
    """The detector ``pixelguard serve --stateful <mode>`` builds (None for ``off``).

    The k-NN detector gets the threshold its server printed (calibration is not timed
    here; the threshold does not change the cost of a check).
    """
    if mode == "off":
        return None
    if mode == "blacklight":
        from pixelguard.serve.blacklight import BlacklightDetector

        return BlacklightDetector()
    if mode == "knn":
        from pixelguard.serve.knn import FeatureKnnDetector, penultimate_encoder

        return FeatureKnnDetector(penultimate_encoder(classifier), threshold=knn_threshold or 0.5)
    raise ValueError(f"no in-process detector for mode {mode!r}")


def in_process_cost(
    model: Path, pngs: list[bytes], modes: list[str], knn_threshold: float | None
) -> dict[str, Any]:
    """The server's own per-request work without HTTP, one request at a time, in ms.

    ``model_forward``: the classifier on one decoded image. ``check:<mode>``: the
    detector's ``check`` alone (a fresh detector, the images in order, keys rotating).
    ``classify:<mode>``: the app's decode, check and forward step (what runs in the
    thread pool), through ``create_app`` with a fresh detector.
    """
    from types import SimpleNamespace

    from pixelguard.models.loader import load_model
    from pixelguard.serve.app import create_app
    from pixelguard.serve.images import decode_image

    classifier = load_model(str(model), device="cpu", batch_size=64, threads=1)
    images = [decode_image(png, classifier.input_shape, 2**24, "image") for png in pngs]
    out: dict[str, Any] = {"images": len(pngs)}
    times = []
    with torch.no_grad():
        for image in images:
            x = torch.from_numpy(np.stack([image])).permute(0, 3, 1, 2).float().div_(255.0)
            start = time.perf_counter()
            classifier.predict(x)
            times.append(1000.0 * (time.perf_counter() - start))
    out["model_forward"] = _ms(times)
    for mode in modes:
        try:
            detector = make_detector(mode, classifier, knn_threshold)
        except Exception as exc:  # a detector being changed under us: note it, go on
            out[f"error:{mode}"] = f"{type(exc).__name__}: {exc}"
            continue
        if detector is not None:
            times, flagged = [], 0
            for i, image in enumerate(images):
                start = time.perf_counter()
                flagged += bool(detector.check(f"user{i % N_KEYS:02d}", image))
                times.append(1000.0 * (time.perf_counter() - start))
            out[f"check:{mode}"] = {**_ms(times), "flagged": flagged}
        server = create_app(
            classifier,
            keys=None,
            no_auth=True,
            detector=make_detector(mode, classifier, knn_threshold),
        ).state.pixelguard
        times = []
        for i, png in enumerate(pngs):
            start = time.perf_counter()
            server.classify(f"user{i % N_KEYS:02d}", [png], SimpleNamespace(decision="ok"))
            times.append(1000.0 * (time.perf_counter() - start))
        out[f"classify:{mode}"] = _ms(times)
    return out


# --------------------------------------------------------------------------- report


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return ""


def table(rows: list[dict[str, Any]], concurrency: int) -> str:
    """One row per server run, as a Markdown table."""
    lines = [
        f"concurrency {concurrency}, one image per request; CPU in cores (1.0 = one core busy)",
        "",
        "| --stateful | round | requests (s) | req/s | p50 ms | p90 ms | p99 ms | max ms "
        "| non-200 | detections | server handler ms (mean) | server CPU: cores, ms/req "
        "| client CPU | other processes |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['mode']} | {r['round']} | skipped: {r['skipped']} |" + "|" * 10)
            continue
        lat = r["latency_ms"]
        client = round(r["client_cpu_seconds"] / r["seconds"], 2)
        lines.append(
            f"| {r['mode']} | {r['round']} | {r['requests']:,} ({r['seconds']:.1f}) "
            f"| {r['throughput_rps']} | {lat['p50']} | {lat['p90']} | {lat['p99']} "
            f"| {lat['max']} | {r['non_200']} | {r['detections']} "
            f"| {r['server_handler_ms_mean']} "
            f"| {r['server_cpu_share_of_one_core']}, {r['server_cpu_ms_per_request']} "
            f"| {client} | {r['other_processes_cores']} |"
        )
    return "\n".join(lines)


def in_process_table(in_process: dict[str, Any]) -> str:
    """The in-process costs, one request at a time, as a Markdown table."""
    lines = [
        f"in process, no HTTP, one at a time over {in_process['images']:,} images",
        "",
        "| step | mean ms | p50 ms | p99 ms | flagged |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {ms['mean']} | {ms['p50']} | {ms['p99']} | {ms.get('flagged', '')} |"
        for name, ms in in_process.items()
        if isinstance(ms, dict)
    ]
    lines += [
        f"| {name} | {text} |||" for name, text in in_process.items() if name.startswith("error:")
    ]
    return "\n".join(lines)


def parse_mode_args(items: list[str]) -> dict[str, list[str]]:
    """``MODE=--opt value ...`` items -> extra serve options per mode."""
    out: dict[str, list[str]] = {}
    for item in items:
        mode, sep, rest = item.partition("=")
        if not sep:
            raise SystemExit(f"--mode-args takes MODE=OPTIONS, got {item!r}")
        out.setdefault(mode, []).extend(shlex.split(rest))
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="timed seconds per mode")
    parser.add_argument("--warmup", type=float, default=WARMUP_SECONDS)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--modes", default="off,blacklight,knn", help="--stateful modes")
    parser.add_argument(
        "--mode-args",
        action="append",
        default=[],
        metavar="MODE=OPTIONS",
        help="extra serve options for one mode, e.g. 'knn=--knn-threshold 0.1'",
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=10_000,
        help="most requests per mode, warm-up included (each sends a distinct image)",
    )
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the modes this many times, interleaved"
    )
    parser.add_argument("--server-threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("bench-out/serve-load"))
    parser.add_argument("--quick", action="store_true", help="5 s per mode, 1 s warm-up")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 5.0, 1.0
    set_threads(1)
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    extra = parse_mode_args(args.mode_args)
    # knn calibrates its threshold on clean images of the model's size (digits otherwise)
    extra.setdefault("knn", ["--calibration-data", str(SHARED_DATASETS / "mnist")])

    load_before, uptime_before = load_average(), uptime()
    model = mnist_model_path().resolve()
    images = mnist_images(args.max_requests)
    pngs = encode_png(images)
    bodies = [request_body(png) for png in pngs]
    keys_file = args.out / "keys.toml"
    keys = write_keys(keys_file, N_KEYS)
    started = dt.datetime.now(dt.timezone.utc)
    rows: list[dict[str, Any]] = []
    rejected: set[str] = set()
    for round_ in range(1, args.rounds + 1):
        for mode in args.modes.split(","):
            if mode in rejected:
                continue
            row = run_mode(
                mode,
                round_,
                model=model,
                keys_file=keys_file,
                keys=keys,
                bodies=bodies,
                args=args,
                extra=extra.get(mode, []),
            )
            if "skipped" in row:
                rejected.add(mode)
            rows.append(row)
    sent = max((r.get("images_sent_incl_warmup", 0) for r in rows), default=0) or len(images)
    modes = list(dict.fromkeys(r["mode"] for r in rows if "skipped" not in r))
    threshold = next((r["knn_threshold"] for r in rows if r.get("knn_threshold")), None)
    in_process = in_process_cost(model, pngs[:sent], modes, threshold)
    results: dict[str, Any] = {
        "command": shlex.join(
            ["python", "benchmarks/bench_serve_load.py", *(argv or sys.argv[1:])]
        ),
        "date_utc": started.isoformat(timespec="seconds"),
        "machine": describe_machine(),
        "source": source_revision(REPO),
        "packages": package_versions(["torch", "fastapi", "uvicorn", "starlette", "httpx"]),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "uptime_before": uptime_before,
        "uptime_after": uptime(),
        "settings": {
            "duration_s": args.duration,
            "rounds": args.rounds,
            "warmup_s": args.warmup,
            "concurrency": args.concurrency,
            "max_requests": args.max_requests,
            "keys": N_KEYS,
            "server_torch_threads": args.server_threads,
            "on_detect": "log",
            "reveal": "label",
            "model": str(model.relative_to(REPO)) if model.is_relative_to(REPO) else str(model),
            "images": "MNIST test set in file order, one distinct image per request per mode",
        },
        "modes": rows,
        "in_process": in_process,
    }
    text = table(rows, args.concurrency)
    text += "\n\n" + in_process_table(in_process)
    write_results(args.out, results, text)
    return results


if __name__ == "__main__":
    main()
