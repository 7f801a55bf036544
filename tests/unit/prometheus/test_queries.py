"""PromQL building: one grouped query per histogram, escaped labels, templates."""

from __future__ import annotations

from datetime import timedelta

import pytest

from modelwarden.analysis.judge import CustomPart, Kind, Side, WindowPart
from modelwarden.api.driftpolicy import DriftPolicySpec
from modelwarden.prometheus import queries
from modelwarden.prometheus.collect import Target, plan_queries

SELECTOR = queries.Selector("fraud", "canary", "8", "team-a")
CURRENT_FEATURES, REFERENCE_FEATURES = WindowPart(Side.CURRENT, Kind.FEATURES), WindowPart(Side.REFERENCE, Kind.FEATURES)
CURRENT_COUNTERS, CURRENT_CONFUSION = WindowPart(Side.CURRENT, Kind.COUNTERS), WindowPart(Side.CURRENT, Kind.CONFUSION)


def test_feature_query_is_one_grouped_query_of_counter_differences():
    promql = queries.feature_buckets(SELECTOR, timedelta(minutes=30))
    series = 'modelwarden_feature_value_bucket{model="fraud",track="canary",version="8"}'
    assert promql.startswith(f"sum by (feature, le) (((({series} - {series} offset 30m) >= 0 unless resets({series}[35m]) > 0)")
    assert f"min_over_time({series}[30m]) == 0" in promql  # a series born inside the window
    assert promql.endswith(f" or increase({series}[30m])))")  # resets and gaps: PromQL's estimate
    assert promql.count("sum by") == 1


def test_offset_reference_uses_the_offset_modifier_and_any_version():
    promql = queries.feature_buckets(queries.Selector("fraud", "stable"), timedelta(hours=1), timedelta(days=7))
    series = 'modelwarden_feature_value_bucket{model="fraud",track="stable"}'
    assert f"({series} offset 7d - {series} offset 7d1h)" in promql
    assert promql.endswith(f"increase({series}[1h] offset 7d)))")


def test_namespace_label_is_matched_only_when_configured():
    with_namespace = queries.Selector("fraud", "stable", None, "team-a", "namespace")
    assert 'namespace="team-a"' in with_namespace.matchers()
    assert "namespace" not in SELECTOR.matchers()


def test_label_injection_is_escaped():
    hostile = queries.Selector('x"} or vector(1) or {a="', "stable")
    assert hostile.matchers() == 'model="x\\"} or vector(1) or {a=\\"",track="stable"'
    rendered = queries.render_template('up{model="{{ model }}"}', hostile, timedelta(minutes=5))
    assert rendered == 'up{model="x\\"} or vector(1) or {a=\\""}'
    assert queries.escape_label_value("a\\b\nc") == "a\\\\b\\nc"


def test_template_variables():
    rendered = queries.render_template(
        'sum(rate(x{model="{{model}}",track="{{ track }}",version="{{ version }}",ns="{{ namespace }}"}[{{ window }}]))',
        SELECTOR,
        timedelta(minutes=90),
    )
    assert rendered == 'sum(rate(x{model="fraud",track="canary",version="8",ns="team-a"}[1h30m]))'
    with pytest.raises(ValueError, match="unknown template variable"):
        queries.render_template("{{ secret }}", SELECTOR, timedelta(minutes=1))


def test_counters_are_fetched_in_one_round_trip():
    promql = queries.counters(SELECTOR, timedelta(minutes=5), ["predictions", "errors"])
    assert promql.count("label_replace") == 2 and " or " in promql


def test_errors_are_server_errors_with_the_5xx_reasons_of_older_servers_as_fallback():
    """Client errors (4xx) never count against a model; servers without the server-error
    counter still have their 5xx reasons in the all-errors counter."""
    promql = queries.counters(SELECTOR, timedelta(minutes=5), ["errors"])
    errors = promql.removeprefix("label_replace(").rsplit(', "modelwarden_quantity"', 1)[0]
    current, fallback = errors.split(") or sum(")
    assert "modelwarden_server_errors_total{" in current and "reason" not in current
    assert 'modelwarden_prediction_errors_total{model="fraud",track="canary",version="8"' in fallback
    assert 'reason=~"model_error|internal_error"}' in fallback


def test_plan_queries_asks_only_what_the_policy_needs():
    spec = DriftPolicySpec.model_validate(
        {"targetRef": {"name": "fraud"}, "track": "canary", "reference": {"track": "stable"}, "drift": {"predictions": False}}
    )
    planned = plan_queries(spec, Target("fraud", versions={"canary": "8", "stable": "7"}))
    assert set(planned) == {CURRENT_COUNTERS, CURRENT_FEATURES, REFERENCE_FEATURES}
    assert 'track="stable",version="7"' in planned[REFERENCE_FEATURES]
    assert 'track="canary",version="8"' in planned[CURRENT_FEATURES]


def test_every_planned_query_matches_the_namespace_label_and_feedback_looks_back_feedback_window():
    spec = DriftPolicySpec.model_validate({
        "targetRef": {"name": "fraud"}, "track": "canary", "window": "30m", "feedbackWindow": "7d",
        "reference": {"track": "stable"}, "drift": {"method": "ks"},
        "performance": [{"metric": "accuracy", "min": 0.8}, {"metric": "mse", "max": 1}],
        "comparison": {"metrics": ["accuracy"]},
        "checks": [{"name": "mine", "query": "sum(rate(my_metric{ {{ selector }} }[5m]))", "max": 1}],
    })
    planned = plan_queries(spec, Target("fraud", "prod", {"canary": "8"}, namespace_label="kubernetes_namespace"))
    assert planned and all('kubernetes_namespace="prod"' in promql for promql in planned.values()), planned
    assert planned[CustomPart("mine")] == 'sum(rate(my_metric{ model="fraud",track="canary",version="8",kubernetes_namespace="prod" }[5m]))'
    # Ground truth over the feedback window, everything else over the window.
    assert "[7d]" in planned[CURRENT_CONFUSION] and "[7d]" in planned[WindowPart(Side.BASELINE, Kind.CONFUSION)]
    counters = planned[CURRENT_COUNTERS]
    assert "modelwarden_feedback_squared_error_sum{" in counters
    for part in counters.split("label_replace(")[1:]:
        span, other = ("[7d]", "[30m]") if "feedback" in part else ("[30m]", "[7d]")
        assert span in part and other not in part, part
    assert "[30m]" in planned[CURRENT_FEATURES] and "[30m]" in planned[REFERENCE_FEATURES]
    # Without feedbackWindow, feedback looks back the window.
    plain = plan_queries(spec.model_copy(update={"feedback_window": None}), Target("fraud", "prod", {"canary": "8"}))
    assert "[30m]" in plain[CURRENT_CONFUSION] and "[7d]" not in plain[CURRENT_COUNTERS]
