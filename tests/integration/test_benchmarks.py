"""The benchmark scripts run and print their numbers (a smoke test: tiny durations, no timing asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from tests.validation import ROOT

pytestmark = pytest.mark.timeout(300)

OVERHEAD = re.compile(r"instrumentation overhead per round: throughput median [+-]\d+\.\d%")


def _bench(script: str, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_serve_bench_side_by_side_prints_both_arms_overhead_and_fixed_rate():
    out = _bench("serve_bench.py", "--rounds", "1", "--duration", "0.5", "--batches", "1,4", "--rate", "50", "--rate-duration", "1")
    assert "side by side" in out
    for label in ("batch  1 metrics on ", "batch  1 metrics off", "batch  4 metrics on ", "batch  4 metrics off"):
        assert re.search(rf"{label}: +\d+ req/s +p50 +[\d.]+ ms +p99 +[\d.]+ ms +server CPU +\d+ us/req +\(\d+ ok, 0 errors\)", out), out
    assert len(OVERHEAD.findall(out)) == 2, out
    assert re.search(r"fixed 50/s metrics on : +\d+ req/s .*\(50 ok, 0 errors\)", out), out
    assert re.search(r"fixed 50/s metrics off: +\d+ req/s .*\(50 ok, 0 errors\)", out), out


def test_serve_bench_sequential_null_comparison():
    out = _bench("serve_bench.py", "--mode", "sequential", "--null", "--rounds", "2", "--duration", "0.5", "--batches", "1", "--rate-duration", "0")
    assert "one at a time, null comparison" in out
    assert "batch  1 metrics off (A)" in out and "batch  1 metrics off (B)" in out
    assert len(OVERHEAD.findall(out)) == 1, out
    assert "fixed" not in out


def test_record_bench_prints_in_loop_and_tight_loop_costs():
    out = _bench("record_bench.py", "--requests", "300", "--runs", "1")
    for batch in (" 1", "32"):
        assert re.search(
            rf"batch {batch}: record_prediction +[\d.]+ us per request between requests \(parse \+ predict +\d+ us: [\d.]+ %\), +[\d.]+ us in a tight loop",
            out,
        ), out


def test_breach_latency_prints_the_quiet_row():
    out = _bench("breach_latency.py", "--trials", "2", "--parallel", "2", "--mode", "quiet")
    assert "breach -> rollback latency: interval 2s, failureThreshold 2, 2 trials per mode, 2 in parallel" in out, out
    assert re.search(r"^mode +trials +p50 +p95 +max +p50 +p95 +max +median +max +reason +max$", out, re.M), out
    # quiet, trials ok/run, status latency p50/p95/max, observed p50/p95/max, extra evaluations median/max twice
    row = re.search(r"^quiet +2/2((?: +-?\d+\.\d{3}){6}) +(\d+\.\d) +(\d+) +(\d+\.\d) +(\d+)$", out, re.M)
    assert row, out
    latencies = [float(x) for x in row.group(1).split()]
    assert latencies[0] <= latencies[1] <= latencies[2] and latencies[3] <= latencies[4] <= latencies[5], out
    assert "contention" not in out and "trial failed" not in out, out


SCALE_FIELDS = ("converged_seconds", "stable_seconds", "evaluated_seconds", "operator_cores", "operator_rss_mb",
                "api_requests_per_idle_reconcile", "canary_patch_to_deployment_seconds", "queries_asked", "queries_shared",
                "prometheus_requests")


def test_operator_scale_prints_every_field_and_an_idle_reconcile_sends_nothing():
    out = _bench("operator_scale.py", "--n", "3", "--policies-per-model", "2", "--interval", "2s", "--steady", "12", "--json")
    result = json.loads(out.strip().splitlines()[-1])
    assert result["n"] == 3 and result["policies"] == 6 and set(SCALE_FIELDS) <= set(result), result
    # Two policies per model asking the same query at the same instants: Prometheus is asked once.
    assert result["queries_shared"] > 0 and result["prometheus_requests"] < result["queries_asked"], result
    assert result["reconciles_per_second"] > 0, result
    assert result["api_requests_per_idle_reconcile"] == 0, result  # watch-fed: nothing to change, nothing sent


def test_backtest_bench_prints_its_numbers():
    out = _bench("backtest_bench.py", "--days", "0.05", "--features", "5")
    assert re.search(r"evaluations: 73; range queries: 2; count queries: 4", out), out
    assert "'Error': 0" in out and re.search(r"peak memory \(max RSS of the backtest process\): \d+ MB", out), out


def test_calibration_prints_how_often_each_setting_acts():
    table = json.loads(_bench("calibration.py", "--runs", "2", "--hours", "0.5", "--scenarios", "null,shift", "--json"))
    assert [(row["setting"], row["scenario"]) for row in table] == [
        ("canary-gate example", "null"), ("canary-gate example", "shift"), ("defaults (drift only)", "null"), ("defaults (drift only)", "shift")]
    for row in table:
        assert row["runs"] == 2 and 0 <= row["actedWithin30m"] <= row["actedWithin0.5h"] <= 1
    # A 0.2σ shift of one feature among 20 at 5000 observations per window is found in every run.
    assert all(row["actedWithin30m"] == 1 for row in table if row["scenario"] == "shift")
