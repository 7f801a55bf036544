"""Check results and their aggregation into one verdict.

Precedence: Fail > Error > InsufficientData > Pass. A failing check is reported even when
another errored, because it is real evidence; but only a Fail may ever lead to an action, and
an evaluation whose verdict is Error or InsufficientData never acts (the DriftPolicy
controller keys actions on ``Verdict.FAIL`` alone). A policy with no checks passes vacuously.
"""

from __future__ import annotations

import math

from modelwarden.api.driftpolicy import CheckResult, Verdict

PRECEDENCE = (Verdict.FAIL, Verdict.ERROR, Verdict.INSUFFICIENT_DATA, Verdict.WARNING, Verdict.PASS)


def aggregate(results: list[CheckResult]) -> Verdict:
    """The policy verdict: the highest-precedence verdict among its checks."""
    present = {result.verdict for result in results}
    return next((verdict for verdict in PRECEDENCE if verdict in present), Verdict.PASS)


def finite(value: float | None) -> float | None:
    """A value safe for status JSON: NaN and infinities become None."""
    return float(value) if value is not None and math.isfinite(value) else None


def result(
    check: str,
    verdict: Verdict,
    message: str,
    value: float | None = None,
    threshold: float | None = None,
    samples: float | None = None,
    bounds: tuple[float, float] | None = None,
) -> CheckResult:
    return CheckResult(
        check=check,
        verdict=verdict,
        value=finite(value),
        threshold=finite(threshold),
        samples=int(samples) if samples is not None and math.isfinite(samples) else None,
        lower_bound=finite(bounds[0]) if bounds else None,
        upper_bound=finite(bounds[1]) if bounds else None,
        message=message,
    )


def bounded(
    check: str,
    value: float | None,
    minimum: float | None,
    maximum: float | None,
    samples: float | None,
    min_samples: int | None,
    what: str,
) -> CheckResult:
    """A value checked against optional min/max bounds, InsufficientData below ``min_samples``."""
    threshold = maximum if maximum is not None else minimum
    if min_samples is not None and (samples is None or samples < min_samples):
        seen = 0 if samples is None else int(samples)
        return result(check, Verdict.INSUFFICIENT_DATA, f"{what}: {seen} observations, need {min_samples}", value, threshold, samples)
    if value is None or not math.isfinite(value):
        return result(check, Verdict.INSUFFICIENT_DATA, f"{what}: no value", None, threshold, samples)
    if minimum is not None and value < minimum:
        return result(check, Verdict.FAIL, f"{what} {value:.4g} is below the minimum {minimum:g}", value, minimum, samples)
    if maximum is not None and value > maximum:
        return result(check, Verdict.FAIL, f"{what} {value:.4g} is above the maximum {maximum:g}", value, maximum, samples)
    return result(check, Verdict.PASS, f"{what} {value:.4g} is within bounds", value, threshold, samples)
