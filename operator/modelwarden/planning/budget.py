"""How a DriftPolicy spends its error budget ``spec.alpha`` over its evaluations (pure).

Evaluations over overlapping windows are nearly the same test repeated: at a fixed level per
evaluation, the chance that some streak of them fails with nothing changed grows with every
look. A breach needs at least one failing evaluation, so if evaluation k of a budget period runs
at level a_k with Σ a_k ≤ alpha, the chance of any false breach in that period is at most alpha
(a union bound: no independence between the windows is assumed).

* a rollout (the canary or shadow track), per version: a_k = alpha · 6 / (π² k²) over its first
  day of looks, whose sum is below alpha — the early looks, where a bad canary should be caught,
  get the most; a canary or shadow still serving the same version after a day (a long A/B split)
  is then judged as the stable track is, else its level would shrink without end — except with a
  ``comparison``: its A/B winner is one answer per version, bounded over every look, so its
  levels keep the rollout spending (planning.winner);
* the stable track, per day: a_k = alpha · interval / 1 day, spread evenly.

Only evaluations that judged something (a Pass, Warning or Fail among the checks) spend budget:
a canary's first minutes of InsufficientData do not use up its best looks.
"""

from __future__ import annotations

import datetime
import math

from modelwarden.api.common import Track
from modelwarden.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus, Evaluation
from modelwarden.api.policystatus import PASSING, Verdict

ROLLOUT_SPENDING = 6 / math.pi**2  # Σ 1/k² = π²/6
DAY = datetime.timedelta(days=1)


def evaluation_level(spec: DriftPolicySpec, previous: DriftPolicyStatus, version: str | None) -> float:
    """The level of the next evaluation of ``version``, shared by the policy's statistical checks."""
    per_day = spec.alpha * min(1.0, spec.interval / DAY)
    if spec.track is Track.STABLE:
        return per_day
    looks = previous.looks if previous.evaluated_version == version else 0
    if looks >= looks_per_day(spec) and spec.comparison is None:
        return per_day
    return spec.alpha * ROLLOUT_SPENDING / (looks + 1) ** 2


def looks_per_day(spec: DriftPolicySpec) -> int:
    """How many looks a day of evaluations every spec.interval makes (at least 1)."""
    return max(1, int(DAY / spec.interval))


def spent(evaluation: Evaluation) -> bool:
    """Whether the evaluation used its level: some check judged (Pass, Warning or Fail)."""
    return any(result.verdict in PASSING or result.verdict is Verdict.FAIL for result in evaluation.results)
