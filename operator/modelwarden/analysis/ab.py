"""Which of two tracks is better on a proportion, and by how much (pure).

A fixed A/B split asks a two-sided question — is the candidate better, worse, or is it too early
to tell — and asks it at every look. The interval for the difference of the two proportions is
Newcombe's hybrid score interval (his method 10: Wilson intervals of each proportion, combined),
which keeps its level near 0 % and 100 % where the Wald interval does not (an error rate of 0 of
5000 on one side). Taken at the look's level from the policy's error budget (planning.budget),
whose levels sum to at most alpha over a rollout, the chance that any look of a rollout names a
winner falsely is at most alpha: the test is safe to repeat.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from scipy import stats


class Side(str, Enum):
    CANDIDATE = "candidate"
    BASELINE = "baseline"
    INCONCLUSIVE = "Inconclusive"


@dataclass(frozen=True)
class Difference:
    """Candidate minus baseline proportion, with its two-sided interval at ``level``."""

    effect: float
    lower: float
    upper: float
    level: float

    def better(self, higher_is_better: bool) -> Side:
        """Which side the interval shows better, if it excludes no difference."""
        if self.lower > 0:
            return Side.CANDIDATE if higher_is_better else Side.BASELINE
        if self.upper < 0:
            return Side.BASELINE if higher_is_better else Side.CANDIDATE
        return Side.INCONCLUSIVE


def wilson(successes: float, trials: float, level: float) -> tuple[float, float]:
    """The Wilson score interval, two-sided at ``level``."""
    k, n = int(round(min(max(successes, 0.0), trials))), int(round(trials))
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=1 - level, method="wilson")
    return float(interval.low), float(interval.high)


def difference(candidate_successes: float, candidate_trials: float, baseline_successes: float, baseline_trials: float,
               level: float) -> Difference:
    """Newcombe's hybrid score interval for p_candidate − p_baseline, two-sided at ``level``."""
    p1, p2 = candidate_successes / candidate_trials, baseline_successes / baseline_trials
    low1, high1 = wilson(candidate_successes, candidate_trials, level)
    low2, high2 = wilson(baseline_successes, baseline_trials, level)
    effect = p1 - p2
    lower = effect - math.sqrt((p1 - low1) ** 2 + (high2 - p2) ** 2)
    upper = effect + math.sqrt((high1 - p1) ** 2 + (p2 - low2) ** 2)
    return Difference(effect, lower, upper, level)
