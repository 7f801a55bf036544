"""Benchmark `ModelMonitor.record_prediction` where it runs: between requests that do real work.

Each iteration does what the server does for one request (decode a JSON body, validate it, run the
example classifier's ``predict_proba``) and then records it; only the recording is timed, flushes
included, so numpy starts cache-cold as it does in the server. A tight loop recording the same
batch over and over is printed for comparison: it is several times too optimistic.

    .venv/bin/python benchmarks/record_bench.py            # batch 1 and 32, ~20 s
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from prometheus_client import CollectorRegistry  # noqa: E402

from modelwarden.sandbox import datagen  # noqa: E402
from modelwarden.sandbox.examples import train_example  # noqa: E402
from modelwarden.serving.model import load_runner  # noqa: E402
from modelwarden.serving.monitor import ModelMonitor  # noqa: E402
from modelwarden.serving.payload import FeatureSchema, parse_v1  # noqa: E402
from modelwarden.contract.profile import Profile  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--requests", type=int, default=6000, help="requests per run")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if len(os.sched_getaffinity(0)) >= 2:
        os.sched_setaffinity(0, {0})
    model_dir = train_example("classifier", Path(tempfile.mkdtemp(prefix="mw-record-")) / "classifier").directory
    profile = Profile.from_json((model_dir / "profile.json").read_text())
    runner, _ = load_runner(str(model_dir))
    schema = FeatureSchema.from_profile(profile)
    gc.freeze()  # as `modelwarden serve` does after loading the model
    clock = time.perf_counter
    for batch in (int(b) for b in args.batches.split(",")):
        x, _ = datagen.classification(batch * 256, seed=1)
        bodies = [json.dumps({"instances": x[i * batch : (i + 1) * batch].tolist()}) for i in range(256)]
        in_loop = []
        for _ in range(args.runs):
            monitor = ModelMonitor("bench", "1", "stable", profile, registry=CollectorRegistry())
            recording = serving = 0.0
            for i in range(args.requests):
                started = clock()
                rows = parse_v1(json.loads(bodies[i % len(bodies)]), schema)
                outputs = runner.predict(rows)
                predicted = clock()
                monitor.record_prediction(rows, outputs.predicted, latency=predicted - started, scores=outputs.scores)
                recording += clock() - predicted
                serving += predicted - started
            in_loop.append((1e6 * recording / args.requests, 1e6 * serving / args.requests))
        rows = parse_v1(json.loads(bodies[0]), schema)
        outputs = runner.predict(rows)
        monitor = ModelMonitor("bench", "1", "stable", profile, registry=CollectorRegistry())
        started = clock()
        for _ in range(args.requests):
            monitor.record_prediction(rows, outputs.predicted, latency=0.001, scores=outputs.scores)
        tight = 1e6 * (clock() - started) / args.requests
        recording, serving = sorted(in_loop)[len(in_loop) // 2]
        print(
            f"batch {batch:>2}: record_prediction {recording:5.1f} us per request between requests "
            f"(parse + predict {serving:4.0f} us: {100 * recording / serving:.1f} %), "
            f"{tight:4.1f} us in a tight loop on one batch; median of {args.runs} runs",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
