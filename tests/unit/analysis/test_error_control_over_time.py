"""A policy's false-action rate is a property it states and meets, over whole rollouts.

Rollouts simulated scrape by scrape and decided by the operator's own code
(benchmarks/calibration.py: analysis.judge at the level planning.budget gives each look,
planning.backtest.Replay over tick.decide_tick). Seeded, so every count below is exact; the
bounds are what the default alpha (1 % per rollout) allows with room for binomial spread.
"""

from __future__ import annotations

import datetime
import importlib.util
import math
import sys

import numpy as np
import pytest

from modelwarden.api.driftpolicy import DriftPolicySpec, DriftPolicyStatus
from modelwarden.planning.budget import ROLLOUT_SPENDING, evaluation_level
from tests.validation import ROOT

_spec = importlib.util.spec_from_file_location("calibration", ROOT / "benchmarks" / "calibration.py")
calibration = importlib.util.module_from_spec(_spec)
sys.modules["calibration"] = calibration  # its dataclasses look their module up
_spec.loader.exec_module(calibration)

EXAMPLE, DEFAULTS = calibration.settings(rows=5000, features=20)
HALF_HOUR = datetime.timedelta(minutes=30)


def acted(setting, scenario: str, runs: int, seed: int, hours: float = 2.0, rows: int | None = None) -> list:
    rng = np.random.default_rng(seed)
    setting = calibration.Setting(**{**setting.__dict__, "rows_per_window": rows or setting.rows_per_window})
    return [calibration.rollout(rng, setting, calibration.CHANGES[scenario], hours) for _ in range(runs)]


def test_the_levels_spend_at_most_alpha():
    canary = DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "track": "canary", "alpha": 0.02})
    status = DriftPolicyStatus(evaluated_version="3")
    day = 24 * 60  # looks a day at the default interval of 1m
    levels = [evaluation_level(canary, status.model_copy(update={"looks": k}), "3") for k in range(10 * day)]
    assert sum(levels[:day]) <= 0.02 and levels[0] == pytest.approx(0.02 * ROLLOUT_SPENDING)  # the rollout's first day
    for later in range(1, 10):  # a canary still serving after a day spends alpha per day, as a stable track does
        assert sum(levels[later * day:(later + 1) * day]) == pytest.approx(0.02)
    assert min(levels) == levels[day - 1] and levels[day] > 1000 * levels[day - 1]  # no endless shrinking
    assert evaluation_level(canary, status.model_copy(update={"looks": 9}), "4") == levels[0]  # a new version, a new budget
    # With a comparison the A/B winner is one answer per version: its looks keep the rollout spending, whose sum is alpha.
    ab = DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "track": "canary", "alpha": 0.02, "comparison": {}})
    ab_levels = [evaluation_level(ab, status.model_copy(update={"looks": k}), "3") for k in range(10 * day)]
    assert ab_levels[:day] == levels[:day] and sum(ab_levels) <= 0.02 and ab_levels[-1] < levels[day - 1]
    stable = DriftPolicySpec.model_validate({"targetRef": {"name": "m"}, "interval": "5m"})
    assert evaluation_level(stable, status, "3") * (24 * 12) == pytest.approx(stable.alpha)  # per day, evenly


@pytest.mark.parametrize("setting", [EXAMPLE, DEFAULTS], ids=["canary-gate example", "defaults"])
def test_with_no_change_a_two_hour_rollout_breaches_at_most_alpha_of_the_time(setting):
    runs = 150
    breaches = sum(moment is not None for moment in acted(setting, "null", runs, seed=41))
    # alpha 1 %: 1.5 expected at most; Binomial(150, 1 %) reaches 5 with probability 2 %.
    assert breaches <= 4, f"{breaches} of {runs} rollouts breached with nothing changed"


@pytest.mark.parametrize("scenario", ["shift", "scale", "bimodal"])
def test_a_real_change_of_one_feature_among_twenty_is_acted_on_within_30_minutes(scenario):
    runs = 40
    moments = acted(DEFAULTS, scenario, runs, seed=43, hours=0.5)
    assert sum(moment is not None and moment <= HALF_HOUR for moment in moments) >= math.ceil(0.9 * runs)


def test_an_irrelevant_change_at_a_million_observations_per_window_never_acts():
    moments = acted(DEFAULTS, "tiny", 20, seed=47, rows=1_000_000)
    assert moments == [None] * 20


def test_a_stable_policy_on_an_unchanged_model_spends_its_day_without_a_false_action():
    """One simulated day of the per-day budget (benchmarks/calibration.py --stable runs 100 of them:
    0 false actions, a 95 % bound of 0.9 per 30 days)."""
    defaults = calibration.stable_settings(rows=5000, features=20)[0]
    day = calibration.stable_days(np.random.default_rng(61), defaults, 1)
    assert day.evaluations == 24 * 60 and day.breaches == 0 and day.failing <= 2
    assert calibration.poisson_upper(0) * 30 / 100 == pytest.approx(0.899, abs=1e-3)
