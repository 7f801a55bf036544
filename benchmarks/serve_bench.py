"""Benchmark `modelwarden serve`: throughput and latency with metrics on and off, and a fixed-rate run.

Starts real server processes (unless --url is given) with the example classifier and drives them
from this process over loopback with an aiohttp client:

* closed loop: ``--concurrency`` workers send back-to-back requests for ``--duration`` seconds
  (or ``--requests``), batch size 1 and 32 -> requests/s, p50, p99;
* open loop: requests start on a fixed schedule of ``--rate`` per second; latency is measured
  from the scheduled start, so a server that falls behind is charged for the queueing.

Each round runs a metrics-on and a metrics-off server and gives one paired overhead (server CPU
per request and throughput); the median and spread over ``--rounds`` rounds are reported.

* ``--mode side-by-side`` (default): both servers run at the same time, pinned to the same core
  (the client on the other), and are driven over the same time window, so whatever slows this
  VM down (it stalls now and then) slows both arms alike. Requests/s
  are per server while sharing the core: about half of what one server alone does.
* ``--mode sequential``: one server at a time, in ABBA order (on/off, then off/on); absolute
  throughput, but on this 2-core VM its per-round overhead scatters by ±10-20 %.

``--null`` runs both arms with ``--no-metrics``: the overhead it prints is the method's own noise.
``--paired`` compares a shadow scoring every request with a paired model too (``--paired-model``, the
example classifier trained on other rows: what a candidate's shadow pod runs) against the same
server unpaired, both with metrics: the cost of the agreement check to the shadow's own serving.

    .venv/bin/python benchmarks/serve_bench.py                # overhead, batch 1 and 32, and 500 req/s (~2 minutes)
    .venv/bin/python benchmarks/serve_bench.py --mode sequential --rounds 10
    .venv/bin/python benchmarks/serve_bench.py --paired --rate 300
    .venv/bin/python benchmarks/serve_bench.py --url http://127.0.0.1:8080 --model-name fraud
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from modelwarden.sandbox import datagen  # noqa: E402
from modelwarden.sandbox.examples import train_example  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (Linux /proc); 0 when unknown."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def server(model_dir: Path, name: str, metrics: bool, extra: list[str], cpu: int | None = None) -> Iterator[tuple[str, int]]:
    port = free_port()
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    command = [
        *pin,
        sys.executable,
        "-m",
        "modelwarden",
        "serve",
        "--model",
        str(model_dir),
        "--name",
        name,
        "--version",
        "1",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--prediction-log",
        "off",
        *extra,
    ]
    if not metrics:
        command.append("--no-metrics")
    python_path = os.pathsep.join(filter(None, (str(ROOT / "operator"), os.environ.get("PYTHONPATH"))))
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": python_path})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("server did not start") from None
                time.sleep(0.1)
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(10)


def bodies(batch: int, count: int = 256) -> list[bytes]:
    x, _ = datagen.classification(batch * count, seed=99)
    return [json.dumps({"instances": x[i * batch : (i + 1) * batch].tolist()}).encode() for i in range(count)]


async def post(session: aiohttp.ClientSession, endpoint: str, body: bytes) -> bool:
    """One prediction request, read to the end; True when it succeeded."""
    async with session.post(endpoint, data=body, headers={"Content-Type": "application/json"}) as response:
        await response.read()
        return response.status == 200


async def closed_loop(
    url: str,
    name: str,
    batch: int,
    concurrency: int,
    duration: float,
    max_requests: int,
    pid: int | None = None,
    barrier: asyncio.Barrier | None = None,
) -> dict:
    """Back-to-back requests from ``concurrency`` workers; with a barrier, the timed window starts
    when every loop sharing it has warmed up (side-by-side servers are measured over the same time)."""
    payloads = bodies(batch)
    latencies: list[float] = []
    errors = 0
    endpoint = f"{url}/v1/models/{name}:predict"

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        for i in range(50):  # warm-up: connections, model caches
            await post(session, endpoint, payloads[i % len(payloads)])
        if barrier is not None:
            await barrier.wait()
        stop_at = time.perf_counter() + duration

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while time.perf_counter() < stop_at and len(latencies) + errors < max_requests:
                started = time.perf_counter()
                if await post(session, endpoint, payloads[i % len(payloads)]):
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1
                i += concurrency

        started, cpu = time.perf_counter(), cpu_seconds(pid)
        behind_before = await unpaired_behind(session, url)
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu
        behind = await unpaired_behind(session, url) - behind_before
    return {**summary(latencies, errors, elapsed, cpu), "unpaired": behind}


async def unpaired_behind(session: aiohttp.ClientSession, url: str) -> float:
    """Requests a paired server left unpaired because its paired model was behind (0 unpaired)."""
    async with session.get(f"{url}/metrics") as response:
        text = await response.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("modelwarden_paired_prediction_errors_total{") and 'reason="behind"' in line)


async def open_loop(url: str, name: str, rate: float, duration: float) -> dict:
    payloads = bodies(1)
    latencies: list[float] = []
    errors = 0
    endpoint = f"{url}/v1/models/{name}:predict"
    total = int(rate * duration)

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        for i in range(50):  # warm-up
            await post(session, endpoint, payloads[i])

        async def one(i: int, scheduled: float) -> None:
            nonlocal errors
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if await post(session, endpoint, payloads[i % len(payloads)]):
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors += 1

        start = time.perf_counter() + 0.05
        started = time.perf_counter()
        await asyncio.gather(*(one(i, start + i / rate) for i in range(total)))
        elapsed = time.perf_counter() - started
    return summary(latencies, errors, elapsed)


def summary(latencies: list[float], errors: int, elapsed: float, server_cpu: float = 0.0) -> dict:
    lat = np.array(latencies) * 1000
    return {
        "server_cpu_us": 1e6 * server_cpu / max(len(latencies), 1),
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
    }


def median_of(runs: list[dict]) -> dict:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="benchmark a running server instead of starting one")
    parser.add_argument("--model-name", default="bench")
    parser.add_argument("--model-dir", type=Path, help="model directory (default: train the example classifier)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per closed-loop run")
    parser.add_argument("--requests", type=int, default=200_000, help="cap per closed-loop run")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batches", default="1,32", help="comma-separated batch sizes for the closed-loop runs")
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rate-duration", type=float, default=10.0)
    parser.add_argument(
        "--server-arg", action="append", default=[], help="extra `modelwarden serve` argument (repeatable)"
    )
    parser.add_argument(
        "--mode", choices=("side-by-side", "sequential"), default="side-by-side",
        help="run the metrics-on and -off servers at the same time on one core, or one after the other",
    )
    parser.add_argument(
        "--null", action="store_true", help="both arms without metrics: measures the method's own noise"
    )
    parser.add_argument(
        "--paired", action="store_true", help="arm A also scores with a paired model (--paired-model), arm B does not"
    )
    parser.add_argument(
        "--pin", action=argparse.BooleanOptionalAction, default=len(os.sched_getaffinity(0)) >= 2,
        help="pin servers to CPU 0 and this client to CPU 1 (default on a machine with 2 or more CPUs)",
    )
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {1})
    batches = [int(b) for b in args.batches.split(",")]

    if args.url:
        for batch in batches:
            print_row(
                f"batch {batch}",
                asyncio.run(
                    closed_loop(args.url, args.model_name, batch, args.concurrency, args.duration, args.requests)
                ),
            )
        if args.rate_duration > 0:
            print_row(
                f"fixed {args.rate:.0f}/s",
                asyncio.run(open_loop(args.url, args.model_name, args.rate, args.rate_duration)),
            )
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="mw-bench-"))
    model_dir = args.model_dir or train_example("classifier", scratch / "classifier").directory
    if args.paired:  # arm A ("on") pairs; both arms record metrics (pairing needs them)
        stable = train_example("classifier", scratch / "stable", seed=11).directory
        args.arm_args = {True: [*args.server_arg, "--paired-model", str(stable), "--paired-version", "0"], False: args.server_arg}
    else:
        args.arm_args = {True: args.server_arg, False: args.server_arg}
    results: dict[tuple[bool, int], list[dict]] = {}
    for round_ in range(args.rounds):
        order = (True, False) if round_ % 2 == 0 else (False, True)
        if args.mode == "side-by-side":
            for arm, batch, run in side_by_side(model_dir, order, batches, args):
                results.setdefault((arm, batch), []).append(run)
            continue
        for arm in order:
            metrics = (arm or args.paired) and not args.null
            with server(model_dir, args.model_name, metrics, args.arm_args[arm], 0 if args.pin else None) as (url, pid):
                for batch in batches:
                    run = asyncio.run(
                        closed_loop(url, args.model_name, batch, args.concurrency, args.duration, args.requests, pid)
                    )
                    results.setdefault((arm, batch), []).append(run)
    arms = ("off (A)", "off (B)") if args.null else ("on, paired", "on, unpaired") if args.paired else ("on ", "off")
    print_overheads(results, batches, arms, args)
    for arm in (True, False) if args.rate_duration > 0 else ():
        with server(model_dir, args.model_name, arm or args.paired, args.arm_args[arm], 0 if args.pin else None) as (url, _):
            label = f"fixed {args.rate:.0f}/s metrics {arms[0] if arm else arms[1]}"
            print_row(label, asyncio.run(open_loop(url, args.model_name, args.rate, args.rate_duration)))
    return 0


def print_overheads(results: dict, batches: list[int], arms: tuple[str, str], args: argparse.Namespace) -> None:
    if not results:
        return
    print(
        f"closed loop, concurrency {args.concurrency}, {args.duration:.0f} s per run, {args.rounds} rounds"
        f"{', pinned' if args.pin else ''}{', side by side' if args.mode == 'side-by-side' else ', one at a time'}"
        f"{', null comparison' if args.null else ''}"
    )
    for batch in batches:
        on_runs, off_runs = results[(True, batch)], results[(False, batch)]
        print_row(f"batch {batch:>2} metrics {arms[0]}", median_of(on_runs))
        print_row(f"batch {batch:>2} metrics {arms[1]}", median_of(off_runs))
        throughput = [100 * (1 - on["rps"] / off["rps"]) for on, off in zip(on_runs, off_runs)]
        cpu = [100 * (on["server_cpu_us"] / off["server_cpu_us"] - 1) for on, off in zip(on_runs, off_runs)]
        what = "pairing" if args.paired else "instrumentation"
        print(f"  {what} overhead per round: throughput {spread(throughput)}; server CPU per request {spread(cpu)}")


def side_by_side(model_dir: Path, order: tuple[bool, bool], batches: list[int], args: argparse.Namespace) -> Iterator[tuple[bool, int, dict]]:
    """Both arms served at once (on one core when pinned) and driven over the same time window."""
    cpu = 0 if args.pin else None
    first, second = ((arm, (arm or args.paired) and not args.null) for arm in order)
    with server(model_dir, args.model_name, first[1], args.arm_args[first[0]], cpu) as (url_a, pid_a), server(
        model_dir, args.model_name, second[1], args.arm_args[second[0]], cpu
    ) as (url_b, pid_b):
        for batch in batches:

            async def both() -> list[dict]:
                barrier = asyncio.Barrier(2)
                loops = (
                    closed_loop(url, args.model_name, batch, args.concurrency, args.duration, args.requests, pid, barrier)
                    for url, pid in ((url_a, pid_a), (url_b, pid_b))
                )
                return list(await asyncio.gather(*loops))

            run_a, run_b = asyncio.run(both())
            yield first[0], batch, run_a
            yield second[0], batch, run_b


def spread(values: list[float]) -> str:
    """Median, interquartile range and extremes of per-round overheads (in %)."""
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    return f"median {median:+.1f}% (IQR {q1:+.1f} .. {q3:+.1f}, range {min(values):+.1f} .. {max(values):+.1f})"


def print_row(label: str, result: dict) -> None:
    cpu = f"  server CPU {result['server_cpu_us']:4.0f} us/req" if result["server_cpu_us"] else ""
    unpaired = f", {result['unpaired']:.0f} left unpaired (paired model behind)" if result.get("unpaired") else ""
    print(
        f"{label}: {result['rps']:6.0f} req/s  p50 {result['p50_ms']:5.2f} ms  p99 {result['p99_ms']:5.2f} ms{cpu}"
        f"  ({result['requests']:.0f} ok, {result['errors']:.0f} errors{unpaired})",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
